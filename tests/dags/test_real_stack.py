"""The example DAGs on a real Airflow stack: api-server, scheduler, dag-processor and triggerer as
separate processes on 127.0.0.1 (SQLite, LocalExecutor), the escalation service in the API
server, a local HTTP sink (webhook target) and a local SMTP server (e-mail target).

- ``escalation_sensor``'s ``load_orders`` fails in a real task process (ORM blocked): its
  ``on_failure_callback`` (``EscalationNotifier``) starts the escalation; level 1 reaches the
  webhook sink and the SMTP server through the targets' ``conn_id``\\ s; level 2 follows after its
  3 s delay; the sensor defers to the triggerer; an acknowledgement through the REST API makes
  it succeed within seconds and stops level 3 (due 45 s after level 2: it never fires).
- ``it_deadline`` (a copy of the deadline example with a 5 s interval) misses its deadline: the
  triggerer runs the ``AsyncCallback(EscalationNotifier)`` and the escalation appears.
- ``escalation_dag_callback`` fails: its DAG-level ``on_failure_callback`` runs in the
  dag-processor and the escalation of incident ``escalation_dag_callback`` appears.
- ``escalation_operator`` escalates bad data with ``wait_for="acknowledged"``: the task waits in
  the triggerer; an acknowledgement lets ``publish`` run with the record id from its XCom.

Bounded to about three minutes; every process is killed in teardown. Under ``CI=true`` nothing
here is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from airflow_escalation.demo.sinks import HttpSink, SmtpSink
from dag_helpers import EXAMPLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from airflow_stack import AirflowStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

API = "/escalation/api/v1"
L2_DELAY_S = 3.0  # delay_minutes 0.05
L3_DELAY_S = 45.0  # delay_minutes 0.75, counted from level 2
SENSOR_RESUME_BUDGET_S = 20.0

POLICIES_YAML = """\
escalation:
  default_policy: production_critical
  policies:
    - name: production_critical
      description: the example policy on a fast clock, delivering through connections
      severity_filter: [critical, high]
      triggers: [unacknowledged]
      levels:
        - level: 1
          targets:
            - {type: webhook, identifier: /hooks/escalation, conn_id: escalation_sink}
            - {type: email, identifier: oncall@example.com, conn_id: escalation_smtp}
        - level: 2
          delay_minutes: 0.05
          targets: [{type: user, identifier: eng-manager}]
        - level: 3
          delay_minutes: 0.75
          targets: [{type: user, identifier: director}]
"""

DEADLINE_DAG = '''
"""The deadline example with a 5 s interval (real-stack test only)."""
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, task

from airflow_escalation.notifications.escalation import EscalationNotifier

with DAG(
    dag_id="it_deadline",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=5),
        callback=AsyncCallback(EscalationNotifier, kwargs={"policy_name": "production_critical",
                                                           "severity": "high", "message": "late"}),
    ),
) as dag:

    @task
    def slow() -> None:
        time.sleep(25)

    slow()
'''


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def _wait(fetch, done, timeout: float, what: str, stack: AirflowStack, interval: float = 0.25):
    return stack.wait(fetch, done, timeout, what, interval)


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory):
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        _require(False, "aiosmtpd is not installed (pip install -e '.[test]')")
    home = tmp_path_factory.mktemp("real-stack-home")
    dags = home / "dags-examples"
    dags.mkdir()
    for path in EXAMPLES.glob("escalation_*.py"):
        shutil.copy(path, dags / path.name)
    (dags / "it_deadline.py").write_text(DEADLINE_DAG)
    http_sink, smtp_sink = HttpSink(), SmtpSink()
    stack = AirflowStack(home, policies_yaml=POLICIES_YAML, dags_folder=dags, extra_env={})
    stack.env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__ESCALATION__SPOOL_DIR": str(home / "spool"),
            "AIRFLOW__API__BASE_URL": stack.base,
            # every component reaches the service through this connection: the service account's
            # login (role USER), as LocalAirflow sets it (no jwt_secret needed by DAG code)
            "AIRFLOW_CONN_ESCALATION_DEFAULT": json.dumps(stack.escalation_connection()),
            "AIRFLOW_CONN_ESCALATION_SINK": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": http_sink.port, "schema": "http"}
            ),
            "AIRFLOW_CONN_ESCALATION_SMTP": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp_sink.port,
                    "extra": {
                        "from_email": "airflow@example.com",
                        "disable_ssl": True,
                        "disable_tls": True,
                        "timeout": 5,
                        "retry_limit": 0,
                    },
                }
            ),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    started = time.monotonic()
    try:
        migrated = stack.cli("db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        stack.start()
        stack.start_components("dag-processor", "scheduler", "triggerer")
        stack.http_sink, stack.smtp_sink, stack.started = http_sink, smtp_sink, started
        yield stack
    finally:
        stack.stop_all()
        http_sink.stop()
        smtp_sink.stop()


def _dag_ready(stack: AirflowStack, dag_id: str) -> None:
    _wait(
        lambda: stack.get(f"/api/v2/dags/{dag_id}").status_code,
        lambda s: s == 200,
        120,
        f"DAG {dag_id} parsed by the dag-processor",
        stack,
        interval=0.5,
    )


def _trigger(stack: AirflowStack, dag_id: str, conf: dict | None = None) -> str:
    r = stack.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
    assert r.status_code in (200, 201), r.text
    return r.json()["dag_run_id"]


def _ti_state(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> str | None:
    r = stack.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    return r.json().get("state") if r.status_code == 200 else None


def _record(stack: AirflowStack, incident: str) -> dict | None:
    found = stack.get(f"{API}/escalations", params={"incident": incident}).json()["escalations"]
    return stack.get(f"{API}/escalations/{found[0]['id']}").json() if found else None


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def test_failure_escalates_and_a_waiting_sensor_resumes_on_acknowledge(real_stack):
    stack = real_stack
    for dag_id in ("escalation_sensor", "it_deadline", "escalation_dag_callback", "escalation_operator"):
        _dag_ready(stack, dag_id)
    phases = {"stack up": time.monotonic() - stack.started}
    t0 = time.monotonic()
    run_id = _trigger(stack, "escalation_sensor")
    # checked by the next tests, meanwhile
    stack.deadline_run = _trigger(stack, "it_deadline")
    stack.dag_callback_run = _trigger(stack, "escalation_dag_callback")
    stack.operator_run = _trigger(stack, "escalation_operator", {"null_rate": 0.2})

    # the failed task's on_failure_callback hands the trigger to the service
    record = _wait(
        lambda: _record(stack, "escalation_sensor.load_orders"), bool, 120, "the escalation of the failed task", stack
    )
    ctx = record["context"]
    assert ctx["run_id"] == run_id and ctx["exception"] == "orders feed is empty" and ctx["try_number"] == 1
    assert ctx["log_url"].startswith(stack.base) and record["policy_name"] == "production_critical"
    assert record["history"][0]["actor"] == "airflow-escalation"  # the component JWT's subject
    rid = record["id"]
    phases["trigger -> escalation"] = time.monotonic() - t0

    # level 1: both targets delivered (through their connections when the channels are installed)
    level1 = _wait(
        lambda: stack.get(f"{API}/escalations/{rid}").json(),
        lambda r: len([d for d in r["deliveries"] if d["level"] == 1 and d["state"] == "sent"]) == 2,
        30,
        "level 1 delivered",
        stack,
    )
    channels = _channels_installed()
    if channels:
        # (the it_deadline run escalates under the same policy: pick this record's messages)
        hooks = _wait(
            lambda: [(p, b) for p, b in stack.http_sink.requests if rid in json.dumps(b)],
            bool,
            30,
            "the webhook at the HTTP sink",
            stack,
        )
        path, payload = hooks[0]
        assert path == "/hooks/escalation" and payload["incident_id"] == "escalation_sensor.load_orders"
        mails = _wait(
            lambda: [(r, m) for r, m in stack.smtp_sink.messages if "escalation_sensor.load_orders" in m.as_string()],
            bool,
            30,
            "the e-mail at the SMTP sink",
            stack,
        )
        rcpts, mail = mails[0]
        assert rcpts == ["oncall@example.com"]
    else:
        _require(
            False,
            "airflow_escalation.service.delivery is not installed: the sink assertions are "
            "left out (the deliveries above were recorded by the log handler)",
        )

    # level 2 after its delay
    level2 = _wait(
        lambda: stack.get(f"{API}/escalations/{rid}").json(),
        lambda r: r["current_level"] == 2 and any(d["level"] == 2 for d in r["deliveries"]),
        L2_DELAY_S + 30,
        "level 2",
        stack,
    )
    climb = [h for h in level2["history"] if h["event"] == "escalate"][0]
    late = (_at(climb["at"]) - _at(level2["created_at"])).total_seconds() - L2_DELAY_S
    assert -0.1 <= late < 5.0, f"level 2 fired {late:+.2f}s from its due time"
    l3_due = _at(level2["next_escalation_at"])

    # the sensor waits in the triggerer
    _wait(
        lambda: _ti_state(stack, "escalation_sensor", run_id, "wait_for_acknowledgement"),
        lambda s: s == "deferred",
        90,
        "the sensor deferred",
        stack,
    )
    phases["trigger -> sensor deferred"] = time.monotonic() - t0
    assert datetime.now(l3_due.tzinfo) < l3_due, "too slow to acknowledge before level 3 was due"

    acked = stack.post(f"{API}/escalations/{rid}/acknowledge", json={"note": "on it"})
    assert acked.status_code == 200, acked.text
    acked_at = time.monotonic()
    _wait(
        lambda: _ti_state(stack, "escalation_sensor", run_id, "wait_for_acknowledgement"),
        lambda s: s == "success",
        SENSOR_RESUME_BUDGET_S,
        "the sensor succeeded after the acknowledgement",
        stack,
    )
    resumed_in = time.monotonic() - acked_at
    _wait(
        lambda: _ti_state(stack, "escalation_sensor", run_id, "report"), lambda s: s == "success", 60, "report", stack
    )
    xcom = stack.get(
        f"/api/v2/dags/escalation_sensor/dagRuns/{run_id}/taskInstances/report/xcomEntries/return_value"
    ).json()
    assert f"escalation {rid} was acknowledged by admin" in json.dumps(xcom), xcom

    # level 3 was due 45 s after level 2: wait past it, it must not fire
    while datetime.now(l3_due.tzinfo) < l3_due:
        time.sleep(0.5)
    time.sleep(3)
    final = stack.get(f"{API}/escalations/{rid}").json()
    assert final["state"] == "acknowledged" and final["current_level"] == 2, final
    assert final["next_escalation_at"] is None
    assert not [d for d in final["deliveries"] if d["level"] == 3]
    assert len([h for h in final["history"] if h["event"] == "escalate"]) == 1  # 1 -> 2, never 2 -> 3
    phases["ack -> sensor success"] = resumed_in
    # the callback's own measure of its hand-off, from the failed task's log
    handoff_ms = stack.handoff_ms("escalation_sensor", "load_orders", run_id)
    assert handoff_ms is not None, "no hand-off line in load_orders' log"
    phases["callback hand-off (task log)"] = handoff_ms / 1000
    print(
        f"\nlevel 1 -> 2 {L2_DELAY_S + late:.2f}s; channels={'on' if channels else 'off'}; "
        + "; ".join(f"{k} {v:.2f}s" for k, v in phases.items())
    )
    assert not list((stack.home / "spool").glob("*.json")), "a hand-off was spooled"
    assert level1["deliveries"]


def test_deadline_alert_escalates_from_the_triggerer(real_stack):
    stack = real_stack
    run_id = getattr(stack, "deadline_run", None) or _trigger(stack, "it_deadline")
    record = _wait(lambda: _record(stack, "it_deadline.deadline"), bool, 90, "the Deadline Alert's escalation", stack)
    ctx = record["context"]
    assert ctx["source"] == "deadline" and ctx["run_id"] == run_id and ctx["message"] == "late"
    assert ctx["deadline_id"] and ctx["severity"] == "high"
    assert stack.post(f"{API}/escalations/{record['id']}/resolve").status_code == 200


def test_dag_level_callback_escalates_from_the_dag_processor(real_stack):
    stack = real_stack
    run_id = getattr(stack, "dag_callback_run", None) or _trigger(stack, "escalation_dag_callback")
    record = _wait(
        lambda: _record(stack, "escalation_dag_callback"),
        bool,
        90,
        "the DAG-level failure callback's escalation",
        stack,
    )
    ctx = record["context"]
    assert ctx["source"] == "dag" and ctx["run_id"] == run_id and ctx["task_id"] == "transform"
    assert ctx["team"] == "data-platform" and ctx["reason"]
    assert stack.post(f"{API}/escalations/{record['id']}/resolve").status_code == 200


def test_operator_waits_in_the_triggerer_until_acknowledged(real_stack):
    stack = real_stack
    run_id = getattr(stack, "operator_run", None) or _trigger(stack, "escalation_operator", {"null_rate": 0.2})
    record = _wait(
        lambda: _record(stack, "escalation_operator.orders_quality"), bool, 90, "the operator's escalation", stack
    )
    assert record["context"]["failed_checks"] == "['null_rate 20.0% > 1%']"
    _wait(
        lambda: _ti_state(stack, "escalation_operator", run_id, "escalate_bad_data"),
        lambda s: s == "deferred",
        60,
        "the operator deferred",
        stack,
    )
    assert stack.post(f"{API}/escalations/{record['id']}/acknowledge").status_code == 200
    _wait(
        lambda: _ti_state(stack, "escalation_operator", run_id, "publish"),
        lambda s: s == "success",
        60,
        "publish after the acknowledgement",
        stack,
    )
    xcom = stack.get(
        f"/api/v2/dags/escalation_operator/dagRuns/{run_id}/taskInstances/publish/xcomEntries/return_value"
    ).json()
    assert f"published after escalation {record['id']} was acknowledged" in json.dumps(xcom), xcom


def _channels_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("airflow_escalation.service.delivery") is not None
