"""``EscalationStateTrigger`` and the shared poller against the real service app: events, shared
polls (requests counted at the server), failures, idempotency; and the service's ``ids`` filter."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation.triggers.escalation import EscalationStateTrigger
from airflow_escalation.triggers.poller import SharedEscalationPoller, shared_poller


def create(service, n: int, prefix: str) -> list[str]:
    with service.client() as client:
        return [client.trigger(f"{prefix}-{i}", {"severity": "high"})["record"]["id"] for i in range(n)]


async def first_event(trigger: EscalationStateTrigger):
    return await anext(trigger.run())


def test_serialize_round_trip():
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    trigger = EscalationStateTrigger("abc", "acknowledged", poll_interval=3, escalation_conn_id="c", timeout_at=at)
    path, kwargs = trigger.serialize()
    assert path == "airflow_escalation.triggers.escalation.EscalationStateTrigger"
    assert kwargs == {
        "record_id": "abc",
        "states": ["acknowledged"],
        "failed_states": ["resolved", "cancelled", "timed_out", "failed"],
        "poll_interval": 3.0,
        "escalation_conn_id": "c",
        "timeout_at": "2030-01-01T00:00:00+00:00",
        "end_from_trigger": False,
        "success_xcom": "record",
        "deferred_at": None,
    }
    again = EscalationStateTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (path, kwargs)
    with pytest.raises(ValueError, match="unknown escalation state 'acked'"):
        EscalationStateTrigger("abc", ["acked"])


def test_thousand_waiting_triggers_share_a_few_requests_per_interval(service):
    """300 here (1,000 in the benchmark): each interval costs ceil(n / 200) list requests."""
    ids = create(service, 300, "shared")
    interval = 0.5

    async def scenario():
        triggers = [EscalationStateTrigger(rid, "acknowledged", poll_interval=interval) for rid in ids]
        tasks = [asyncio.create_task(first_event(t)) for t in triggers]
        await asyncio.sleep(0.5)
        poller = shared_poller("escalation_default")
        assert poller.waiting == 300 and poller.subscribers == 300
        service.reset_counts()
        await asyncio.sleep(interval * 4 + 0.1)
        counted = dict(service.requests)
        assert not any(t.done() for t in tasks)

        def ack_all():
            with service.client() as client:
                for rid in ids:
                    client.acknowledge(rid)

        await asyncio.to_thread(ack_all)
        events = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        return counted, events

    counted, events = asyncio.run(scenario())
    lists = counted.get("GET /api/v1/escalations", 0)
    assert 2 * 4 <= lists <= 2 * 6, counted  # 2 requests (200 + 100 ids) per interval
    assert counted.get("GET /api/v1/escalations/{id}", 0) == 0
    assert {e.payload["status"] for e in events} == {"success"}
    assert {e.payload["state"] for e in events} == {"acknowledged"}
    assert sorted(e.payload["record_id"] for e in events) == sorted(ids)
    assert events[0].payload["record"]["acknowledged_by"] == "tester"


def test_newcomers_are_fetched_at_once_and_already_done_records_fire_immediately(service):
    (rid,) = create(service, 1, "already")
    with service.client() as client:
        client.resolve(rid)

    async def scenario():
        started = asyncio.get_running_loop().time()
        event = await first_event(EscalationStateTrigger(rid, ["acknowledged", "resolved"], poll_interval=60))
        return event, asyncio.get_running_loop().time() - started

    event, took = asyncio.run(scenario())
    assert event.payload["status"] == "success" and event.payload["state"] == "resolved" and took < 2


def test_end_from_trigger_pushes_the_xcom_then_ends_the_task(service, monkeypatch):
    from types import SimpleNamespace

    from airflow.sdk.execution_time import xcom as sdk_xcom
    from airflow.triggers.base import TaskSuccessEvent

    (rid,) = create(service, 1, "endfromtrigger")
    with service.client() as client:
        client.acknowledge(rid)
    pushed: list[tuple] = []

    async def aset(key, value, **where):
        if where["task_id"] == "broken":
            raise RuntimeError("no supervisor")
        pushed.append((key, value, where))

    monkeypatch.setattr(sdk_xcom.XCom, "aset", aset)

    def trigger(task_id: str | None, **kwargs):
        kwargs.setdefault("deferred_at", datetime.now(timezone.utc))
        t = EscalationStateTrigger(rid, end_from_trigger=True, poll_interval=0.2, **kwargs)
        if task_id:  # what the triggerer sets before run()
            t.task_instance = SimpleNamespace(dag_id="d", task_id=task_id, run_id="r", map_index=-1)
        return t

    async def scenario():
        return [
            await first_event(trigger("wait")),
            await first_event(trigger("op", success_xcom="record_id")),
            await first_event(trigger(None)),  # dag.test(): no task instance
            await first_event(trigger("broken")),  # the push fails
            await first_event(trigger("pushed_before", success_xcom=None)),
            # deferred long ago: the executor's event of the deferral is processed, resume
            await first_event(trigger("later", deferred_at=datetime.now(timezone.utc) - timedelta(minutes=5))),
        ]

    record, only_id, inline, broken, pushed_before, later = asyncio.run(scenario())
    assert isinstance(pushed_before, TaskSuccessEvent)
    assert not isinstance(later, TaskSuccessEvent) and later.payload["status"] == "success"
    assert isinstance(record, TaskSuccessEvent) and isinstance(only_id, TaskSuccessEvent)
    assert record.xcoms is None  # Airflow 3.3.2 would store them JSON-encoded twice
    (key, value, where), (key2, value2, _) = pushed
    assert key == key2 == "return_value" and where == {"dag_id": "d", "task_id": "wait", "run_id": "r", "map_index": -1}
    assert value["id"] == rid and value["state"] == "acknowledged" and value2 == rid
    # no task instance, or a failed push: resume the task, which pushes the XCom itself
    assert not isinstance(inline, TaskSuccessEvent) and inline.payload["status"] == "success"
    assert not isinstance(broken, TaskSuccessEvent) and broken.payload["status"] == "success"


def test_terminal_state_without_the_wanted_one_fails_the_wait(service):
    (rid,) = create(service, 1, "cancelled")

    async def scenario():
        task = asyncio.create_task(first_event(EscalationStateTrigger(rid, "acknowledged", poll_interval=0.2)))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(lambda: service.client().cancel(rid, "false alarm"))
        return await asyncio.wait_for(task, 5)

    event = asyncio.run(scenario())
    assert event.payload["status"] == "failed_state" and event.payload["state"] == "cancelled"
    assert "ended cancelled without becoming acknowledged" in event.payload["message"]


def test_not_found_and_timeout_events(service):
    async def scenario():
        missing = await first_event(EscalationStateTrigger("0" * 32, poll_interval=0.2))
        (rid,) = await asyncio.to_thread(create, service, 1, "timeout")
        at = datetime.now(timezone.utc) + timedelta(seconds=0.6)
        timed_out = await first_event(EscalationStateTrigger(rid, poll_interval=0.2, timeout_at=at))
        return missing, timed_out

    missing, timed_out = asyncio.run(scenario())
    assert missing.payload["status"] == "not_found"
    assert (
        timed_out.payload["status"] == "timeout"
        and "did not reach acknowledged or resolved" in timed_out.payload["message"]
    )


def test_waits_through_an_outage(service):
    (rid,) = create(service, 1, "outage")

    async def scenario():
        service.fail_next(3)  # the first polls (and their logins at /auth/token) get 503
        task = asyncio.create_task(first_event(EscalationStateTrigger(rid, poll_interval=0.2)))

        async def outage_over() -> None:
            while service.failures_left():
                await asyncio.sleep(0.05)

        # acknowledge only once the poller has had every 503: the acknowledgement must not get one
        await asyncio.wait_for(outage_over(), 30)
        assert not task.done()
        await asyncio.to_thread(lambda: service.client().acknowledge(rid))
        return await asyncio.wait_for(task, 10)

    try:
        event = asyncio.run(scenario())
    finally:
        service.fail_next(0)  # a failed run must not leave 503s for the next tests
    assert event.payload["status"] == "success"


def test_a_missing_connection_ends_the_wait_with_an_error(service):
    async def scenario():
        return await asyncio.wait_for(
            first_event(EscalationStateTrigger("abc", poll_interval=0.2, escalation_conn_id="no_such_escalation_conn")),
            30,
        )

    event = asyncio.run(scenario())
    assert event.payload["status"] == "error" and "no_such_escalation_conn" in event.payload["message"]


def test_two_copies_of_a_trigger_yield_the_same_event(service):
    """Triggerer HA may run a trigger twice; each copy only reads and yields the same event."""
    (rid,) = create(service, 1, "twice")

    async def scenario():
        copies = [EscalationStateTrigger(rid, poll_interval=0.2) for _ in range(2)]
        tasks = [asyncio.create_task(first_event(c)) for c in copies]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(lambda: service.client().acknowledge(rid))
        return await asyncio.wait_for(asyncio.gather(*tasks), 5)

    a, b = asyncio.run(scenario())
    assert a.payload == b.payload and a.payload["status"] == "success"


class OldServiceHook:
    """A service that ignores ``ids`` (answers its newest records) and has GET /escalations/{id}."""

    def __init__(self, records: dict[str, dict]) -> None:
        self.records = records
        self.calls: list[str] = []

    async def aget_conn(self):
        return self

    async def alist_escalations(self, *args, **kwargs):
        self.calls.append("list")
        return {"escalations": [{"id": "someone-else", "state": "active"}]}

    async def aget_escalation(self, rid):
        self.calls.append(f"get {rid}")
        from airflow_escalation.client.errors import EscalationNotFound

        if rid not in self.records:
            raise EscalationNotFound(404, "not found")
        return self.records[rid]


def test_a_service_without_ids_support_is_polled_per_record():
    hook = OldServiceHook({"a": {"id": "a", "state": "acknowledged"}})
    poller = SharedEscalationPoller("old", hook_factory=lambda conn_id: hook, drain_spool=False)

    async def scenario():
        async with poller.subscribe("a", 0.2) as sub_a, poller.subscribe("b", 0.2) as sub_b:
            return await asyncio.wait_for(sub_a.next(), 5), await asyncio.wait_for(sub_b.next(), 5)

    a, b = asyncio.run(scenario())
    assert a.record["state"] == "acknowledged" and b.record is None and b.error is None
    assert hook.calls[0] == "list" and "get a" in hook.calls and "get b" in hook.calls
    assert poller._supports_ids is False


# ---------------------------------------------------------------------------------- the ids filter


def test_the_service_lists_by_ids(service):
    ids = create(service, 3, "byids")
    with service.client() as client:
        client.acknowledge(ids[1])
        page = client.list_escalations(ids=[ids[0], ids[1], "f" * 32], limit=10)
        assert sorted(r["id"] for r in page["escalations"]) == sorted(ids[:2]) and page["total"] == 2
        assert [r["id"] for r in client.list_escalations("acknowledged", ids=ids)["escalations"]] == [ids[1]]
        assert client.list_escalations(ids=ids, limit=1)["total"] == 3
        from airflow_escalation.client.errors import EscalationAPIError

        with pytest.raises(EscalationAPIError, match="at most 200 ids"):
            client.list_escalations(ids=[f"{i:032x}" for i in range(201)])
    # repeated parameters work too
    import httpx

    token = service.client()._token_provider()
    r = httpx.get(
        f"{service.base_url}/api/v1/escalations",
        params=[("ids", ids[0]), ("ids", ids[2])],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200 and sorted(e["id"] for e in r.json()["escalations"]) == sorted([ids[0], ids[2]])
