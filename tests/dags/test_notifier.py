"""``EscalationNotifier`` against the real service app on 127.0.0.1: the incident it builds, its
key, resolving, the spool when the service cannot take the hand-off, the time it takes, and that
it never raises."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from airflow_escalation.notifications.escalation import EscalationNotifier
from airflow_escalation.spool import EscalationSpool
from escalation_service_thread import SERVICE_ACCOUNT, SERVICE_PASSWORD


class FakeTI:
    """What a callback context's ``ti`` offers the notifier (RuntimeTaskInstance's attributes)."""

    def __init__(
        self, dag_id: str, task_id: str, run_id: str = "manual__2024-06-01", try_number: int = 1, map_index: int = -1
    ) -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.try_number, self.map_index = try_number, map_index

    @property
    def log_url(self) -> str:
        return f"http://localhost:8080/dags/{self.dag_id}/runs/{self.run_id}/tasks/{self.task_id}"


def task_context(dag_id: str, task_id: str = "load", exc: BaseException | None = None, **ti_kwargs) -> dict:
    from airflow.sdk import DAG

    ti = FakeTI(dag_id, task_id, **ti_kwargs)
    return {
        "dag": DAG(dag_id, schedule=None),
        "ti": ti,
        "task_instance": ti,
        "task": SimpleNamespace(task_id=task_id),
        "run_id": ti.run_id,
        "logical_date": datetime(2024, 6, 1, tzinfo=timezone.utc),
        "exception": exc if exc is not None else ValueError("orders feed is empty"),
    }


def records(service, incident: str) -> list[dict]:
    with service.client() as client:
        return client.list_escalations(incident=incident)["escalations"]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def logs(capsys, caplog):
    """Everything logged so far (Airflow's structlog writes to stdout, stdlib logging to caplog)."""
    caplog.set_level(logging.INFO)

    def read() -> str:
        captured = capsys.readouterr()
        return captured.out + captured.err + caplog.text

    return read


@pytest.fixture
def conn_to(monkeypatch):
    """Point ``escalation_default`` at another URL for one test."""

    def point(url: str, **extra):
        conn = {
            "conn_type": "escalation",
            "host": url,
            "login": SERVICE_ACCOUNT,
            "password": SERVICE_PASSWORD,
            "extra": {"api_path": "/api/v1", **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_ESCALATION_DEFAULT", json.dumps(conn))

    return point


# ---------------------------------------------------------------------------------- the incident


def test_failure_builds_the_incident_from_the_context(service, clean_spool):
    notifier = EscalationNotifier(
        policy_name="production_critical",
        severity="critical",
        message="{{ ti.task_id }} failed in {{ run_id }}",
        extra_context={"team": "data"},
    )
    long_error = ValueError("x" * 5000)
    notifier(task_context("orders_etl", "load", exc=long_error, try_number=2))
    assert notifier.last_handoff.outcome == "sent", notifier.last_handoff
    (record,) = records(service, "orders_etl.load")
    ctx = record["context"]
    assert record["policy_name"] == "production_critical" and record["state"] == "active"
    assert ctx["dag_id"] == "orders_etl" and ctx["task_id"] == "load" and ctx["run_id"] == "manual__2024-06-01"
    assert ctx["map_index"] == -1 and ctx["try_number"] == 2 and ctx["source"] == "task"
    assert ctx["severity"] == "critical" and ctx["team"] == "data"
    assert ctx["message"] == "load failed in manual__2024-06-01"
    assert ctx["log_url"].endswith("/dags/orders_etl/runs/manual__2024-06-01/tasks/load")
    assert ctx["logical_date"] == "2024-06-01T00:00:00+00:00"
    assert ctx["exception_type"] == "ValueError" and len(ctx["exception"]) <= 2000
    assert ctx["exception"].endswith("[truncated]")
    assert notifier.last_handoff.record_id == record["id"]


def test_repeated_failures_join_the_open_escalation(service, clean_spool):
    notifier = EscalationNotifier(policy_name="production_critical")
    for try_number in (1, 2, 3):
        notifier(task_context("join_etl", "load", try_number=try_number))
    (record,) = records(service, "join_etl.load")
    assert "joined the open escalation" in notifier.last_handoff.message
    assert record["id"] == notifier.last_handoff.record_id


def test_a_shared_notifier_renders_each_tasks_own_values(service, clean_spool):
    """BaseNotifier renders templates in place; ours must not freeze the first task's values."""
    notifier = EscalationNotifier(incident_key="{{ dag.dag_id }}/{task_id}", message="{{ ti.task_id }} broke")
    notifier(task_context("shared_etl", "extract"))
    notifier(task_context("shared_etl", "transform"))
    assert [r["context"]["message"] for r in records(service, "shared_etl/extract")] == ["extract broke"]
    assert [r["context"]["message"] for r in records(service, "shared_etl/transform")] == ["transform broke"]
    assert notifier.incident_key == "{{ dag.dag_id }}/{task_id}"


def test_mapped_instances_share_the_task_incident_by_default(service, clean_spool):
    notifier = EscalationNotifier()
    for map_index in (0, 1, 2):
        notifier(task_context("mapped_etl", "fan", map_index=map_index))
    (record,) = records(service, "mapped_etl.fan")
    per_instance = EscalationNotifier(incident_key="{dag_id}.{task_id}.{map_index}")
    per_instance(task_context("mapped_etl", "fan", map_index=1))
    assert len(records(service, "mapped_etl.fan.1")) == 1


def test_a_bad_key_template_falls_back_to_the_default_and_does_not_raise(service, clean_spool, logs):
    notifier = EscalationNotifier(incident_key="{dag_id}.{no_such_field}")
    notifier(task_context("badkey_etl", "load"))
    assert notifier.last_handoff.outcome == "sent"
    assert len(records(service, "badkey_etl.load")) == 1
    assert "unknown field {no_such_field}" in logs()


def test_a_broken_template_is_logged_and_used_as_written(service, clean_spool, logs):
    notifier = EscalationNotifier(message="{{ no_such_function() }}")
    notifier(task_context("badtpl_etl", "load"))
    assert notifier.last_handoff.outcome == "sent"
    assert records(service, "badtpl_etl.load")[0]["context"]["message"] == "{{ no_such_function() }}"
    assert "cannot render message" in logs()


def test_dag_level_and_deadline_contexts_get_their_own_default_keys(service, clean_spool):
    dag_ctx = task_context("dagcb_etl", "transform")
    dag_ctx["reason"] = "task_failure"
    EscalationNotifier()(dag_ctx)
    (record,) = records(service, "dagcb_etl")
    assert record["context"]["source"] == "dag" and record["context"]["reason"] == "task_failure"
    assert record["context"]["task_id"] == "transform"  # the run's last task instance

    deadline_ctx = {
        "dag_run": {"dag_id": "deadline_etl", "dag_run_id": "scheduled__2024", "logical_date": "2024-06-01T00:00:00Z"},
        "deadline": {"id": "0191-dead", "deadline_time": datetime(2024, 6, 1, 1, tzinfo=timezone.utc)},
    }
    notifier = EscalationNotifier(context=deadline_ctx)
    asyncio.run(_await(notifier))
    (record,) = records(service, "deadline_etl.deadline")
    assert record["context"]["deadline_id"] == "0191-dead" and record["context"]["run_id"] == "scheduled__2024"
    assert record["context"]["deadline_time"] == "2024-06-01T01:00:00+00:00"


async def _await(notifier):
    await notifier


def test_deadline_async_callback_through_airflows_callback_trigger(service, clean_spool):
    """What the triggerer does with a Deadline Alert's AsyncCallback(EscalationNotifier, kwargs)."""
    from airflow.models.callback import CallbackState
    from airflow.sdk import AsyncCallback
    from airflow.triggers.callback import CallbackTrigger

    callback = AsyncCallback(
        EscalationNotifier, kwargs={"policy_name": "production_critical", "severity": "high", "message": "late"}
    )
    context = {
        "dag_run": {"dag_id": "cbtrigger_etl", "dag_run_id": "r1"},
        "deadline": {"id": "d1", "deadline_time": "2024-06-01T01:00:00+00:00"},
    }
    trigger = CallbackTrigger(callback.path, {**callback.kwargs, "context": context})

    async def events():
        return [e.payload async for e in trigger.run()]

    payloads = asyncio.run(events())
    assert [p["state"] for p in payloads] == [CallbackState.RUNNING, CallbackState.SUCCESS], payloads
    (record,) = records(service, "cbtrigger_etl.deadline")
    assert record["context"]["message"] == "late" and record["context"]["severity"] == "high"


# ---------------------------------------------------------------------------------- resolving


def test_resolver_resolves_the_tasks_open_escalation(service, clean_spool):
    page = EscalationNotifier(policy_name="production_critical")
    page(task_context("resolve_etl", "load"))
    page.resolver()(task_context("resolve_etl", "load", try_number=2, exc=None))
    (record,) = records(service, "resolve_etl.load")
    assert record["state"] == "resolved" and record["resolved_by"] == "airflow-escalation"  # the JWT's subject
    assert "resolved by the success of resolve_etl.load" in json.dumps(record["history"][-1])
    # nothing open any more: a second success is a no-op, not an error
    resolver = page.resolver()
    resolver(task_context("resolve_etl", "load", try_number=3, exc=None))
    assert resolver.last_handoff.outcome == "sent" and "no open escalation" in resolver.last_handoff.message


def test_resolver_on_a_mapped_instance_leaves_the_task_incident_open(service, clean_spool):
    page = EscalationNotifier()
    page(task_context("mapres_etl", "fan", map_index=3))
    resolver = page.resolver()
    resolver(task_context("mapres_etl", "fan", map_index=0, exc=None))
    assert resolver.last_handoff.outcome == "skipped"
    assert records(service, "mapres_etl.fan")[0]["state"] == "active"
    per_instance = EscalationNotifier(incident_key="{dag_id}.{task_id}.{map_index}")
    per_instance(task_context("mapres_etl", "fan", map_index=3))
    per_instance.resolver()(task_context("mapres_etl", "fan", map_index=3, exc=None))
    assert records(service, "mapres_etl.fan.3")[0]["state"] == "resolved"


# ---------------------------------------------------------------------------------- the spool


def test_service_down_spools_fast_and_the_next_callback_drains(service, clean_spool, conn_to):
    conn_to(f"http://127.0.0.1:{dead_port()}")
    notifier = EscalationNotifier()
    notifier(task_context("down_etl", "load"))
    assert notifier.last_handoff.outcome == "spooled", notifier.last_handoff
    assert (
        "spooled to" in notifier.last_handoff.message
        and "airflow escalation spool drain" in notifier.last_handoff.message
    )
    notifier.resolver()(task_context("down_etl", "load", exc=None))  # the resolve waits behind it
    spool = EscalationSpool()
    assert [e.kind for e in spool.entries()] == ["trigger", "resolve"]
    assert records(service, "down_etl.load") == []

    conn_to(service.base_url, retries=0)  # the service is back
    other = EscalationNotifier()
    other(task_context("down_etl", "other_task"))
    assert other.last_handoff.outcome == "sent"
    assert spool.pending() == []
    # the spooled trigger went first, then its resolve: the escalation exists and is resolved
    (record,) = records(service, "down_etl.load")
    assert record["state"] == "resolved"
    assert len(records(service, "down_etl.other_task")) == 1


def test_a_hanging_service_costs_one_timeout_at_most(clean_spool, conn_to):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepts connections, never answers
    try:
        conn_to(f"http://127.0.0.1:{server.getsockname()[1]}")
        notifier = EscalationNotifier(timeout=0.5)
        notifier(task_context("hang_etl", "load"))
        assert notifier.last_handoff.outcome == "spooled"
        # a second callback: the drain of the first entry times out and it spools without trying again
        notifier(task_context("hang_etl", "load2"))
        assert "an earlier spooled request failed just now" in notifier.last_handoff.message
        assert len(EscalationSpool()) == 2
    finally:
        server.close()


def test_a_503_is_spooled_and_an_unknown_policy_is_dead_lettered(service, clean_spool):
    service.fail_next(1)
    notifier = EscalationNotifier()
    notifier(task_context("svc503_etl", "load"))
    assert notifier.last_handoff.outcome == "spooled" and "503" in notifier.last_handoff.message
    bad = EscalationNotifier(policy_name="no_such_policy")
    bad(task_context("nopolicy_etl", "load"))
    assert bad.last_handoff.outcome == "dead" and "no_such_policy" in bad.last_handoff.message
    spool = EscalationSpool()
    assert len(spool.dead_entries()) == 1
    # the next callback drains the 503'd trigger
    notifier(task_context("svc503_etl", "other"))
    assert spool.pending() == [] and len(records(service, "svc503_etl.load")) == 1


def test_the_resolve_waits_behind_a_spooled_trigger_of_the_same_incident(service, clean_spool):
    spool = EscalationSpool()
    spool.put("trigger", {"incident_id": "fifo_a", "context": {}}, conn_id="escalation_default")
    spool.put("trigger", {"incident_id": "fifo_b", "context": {"severity": "high"}}, conn_id="escalation_default")
    # a drain budget so small that only the first entry goes out
    resolver = EscalationNotifier(incident_key="fifo_b", action="resolve", drain_budget=1e-6)
    resolver(task_context("fifo_etl", "load", exc=None))
    assert resolver.last_handoff.outcome == "spooled" and "queued behind" in resolver.last_handoff.message
    sender = EscalationNotifier(incident_key="fifo_c", drain_budget=1e-6)
    sender(task_context("fifo_etl", "load"))
    assert sender.last_handoff.outcome == "sent"  # another incident is not held back
    EscalationNotifier(incident_key="fifo_d")(task_context("fifo_etl", "load"))  # drains the rest
    assert spool.pending() == []
    assert records(service, "fifo_b")[0]["state"] == "resolved"


def test_bad_credentials_and_a_missing_connection_spool_with_a_clear_message(
    clean_spool, service, conn_to, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_ESCALATION_DEFAULT", json.dumps({**service.connection(), "password": "wrong"}))
    notifier = EscalationNotifier()
    notifier(task_context("auth_etl", "load"))
    assert notifier.last_handoff.outcome == "spooled"
    assert "login and password" in notifier.last_handoff.message
    missing = EscalationNotifier(escalation_conn_id="no_such_connection")
    missing(task_context("auth_etl", "other"))  # another incident, another connection: not held back
    assert missing.last_handoff.outcome == "spooled" and "no_such_connection" in missing.last_handoff.message


def test_never_raises_even_on_an_unexpected_error(clean_spool, monkeypatch):
    notifier = EscalationNotifier()
    monkeypatch.setattr(notifier, "build_request", lambda context: 1 / 0)
    notifier(task_context("never_etl", "load"))  # BaseNotifier.__call__ would re-raise
    assert notifier.last_handoff.outcome == "error" and "ZeroDivisionError" in notifier.last_handoff.message


def test_concurrent_callbacks_and_drainers_lose_nothing(service, clean_spool, conn_to):
    conn_to(f"http://127.0.0.1:{dead_port()}")
    for n in range(20):
        EscalationNotifier(drain_budget=0)(task_context("burst_etl", f"t{n}"))
    assert len(EscalationSpool()) == 20
    conn_to(service.base_url, retries=0)
    threads = [
        threading.Thread(target=lambda i=i: EscalationNotifier(drain_budget=5)(task_context("burst_etl", f"new{i}")))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert EscalationSpool().pending() == []
    with service.client() as client:
        got = [r["incident_id"] for r in client.list_escalations(dag_id="burst_etl", limit=100)["escalations"]]
    assert sorted(got) == sorted([f"burst_etl.t{n}" for n in range(20)] + [f"burst_etl.new{i}" for i in range(4)])
