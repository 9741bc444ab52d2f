"""The detector's decisions on events (the metadata-database reading is in the real-stack test):
page through the first matching route, stay quiet for a failure already paged (by the notifier,
another replica, or before a restart), resolve on success, one record when two detectors race."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation import EscalationEngine, EscalationEngineConfig, EscalationPolicyConfig
from airflow_escalation.detection.routes import FailureEvent, config_routes
from airflow_escalation.detection.watcher import DETECTOR_ACTOR, DetectorSettings, FailureDetector
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.stores.memory import InMemoryEscalationStore

CONFIG = {
    "policies": [{"name": "oncall", "levels": [{"level": 1, "targets": [{"type": "user", "identifier": "lead"}]}]}],
    "routes": [
        {"name": "etl", "dag_id": "etl", "kind": ["task_failed", "task_up_for_retry"], "policy": "oncall"},
        {"name": "slow", "dag_id": "etl", "kind": "dag_run_over_duration", "over_minutes": 10, "policy": "oncall"},
    ],
}


class Service:
    def __init__(self, engine: EscalationEngine, config: EscalationPolicyConfig) -> None:
        self.engine = engine
        self.policy_config = config


def _engine(store) -> EscalationEngine:
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=store, scheduler_config=SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600)
        )
    )
    sent = []

    async def deliver(record, level, target, *args):
        sent.append((record.incident_id, target.identifier))
        return True

    engine.set_notification_handler(deliver)
    return engine


def _detector(store) -> FailureDetector:
    config = EscalationPolicyConfig.from_dict(CONFIG)
    engine = _engine(store)
    for policy in config.policies.values():
        engine.register_policy(policy)
    return FailureDetector(Service(engine, config), config_routes(config), DetectorSettings())


def _failure(try_number=1, began=None, at=None, kind="task_failed"):
    # times relative to when the test runs: the engine here is on the real clock
    now = datetime.now(timezone.utc)
    began = began or now - timedelta(seconds=30)
    at = at or now - timedelta(seconds=1)
    fields = {"dag_id": "etl", "task_id": "load", "run_id": "r1", "try_number": try_number, "source": "task"}
    return FailureEvent(
        kind=kind, dag_id="etl", task_id="load", run_id="r1", try_number=try_number, at=at, began=began, fields=fields
    )


def _success(at):
    fields = {"dag_id": "etl", "task_id": "load", "run_id": "r1", "try_number": 2, "source": "task"}
    return FailureEvent(
        kind="task_failed", dag_id="etl", task_id="load", run_id="r1", try_number=2, at=at, fields=fields
    )


@pytest.fixture
def store():
    return InMemoryEscalationStore()


def _state(record) -> str:
    return getattr(record.state, "value", record.state)


def _run(coro):
    return asyncio.run(coro)


def test_a_failure_pages_once_with_the_route_context(store):
    detector = _detector(store)

    async def go():
        await detector.service.engine.start()
        try:
            assert await detector._page(detector.service.engine, _failure()) is True
            await detector._page(detector.service.engine, _failure())  # read again (overlap, restart)
        finally:
            await detector.service.engine.stop()

    _run(go())
    records = store.get_by_incident("etl.load")
    assert len(records) == 1
    record = records[0]
    assert record.policy_name == "oncall" and record.history[0]["actor"] == DETECTOR_ACTOR
    assert record.context["route"] == "etl" and record.context["kind"] == "task_failed"
    assert record.context["detected_by"] == "escalation-service" and record.context["run_id"] == "r1"
    assert [h["event"] for h in record.history].count("retriggered") == 0
    assert detector.triggered == 1


def test_a_failure_the_notifier_paged_during_the_try_is_left_alone(store):
    detector = _detector(store)

    async def go():
        engine = detector.service.engine
        await engine.start()
        try:
            # the notifier's callback ran inside the try, before its end was written
            now = datetime.now(timezone.utc)
            await engine.trigger("etl.load", {"dag_id": "etl", "message": "from the notifier"}, "oncall")
            await detector._page(engine, _failure(began=now - timedelta(seconds=30), at=now + timedelta(seconds=5)))
            # the next try fails too: that is a new failure, it joins the open escalation
            later = now + timedelta(minutes=5)
            await detector._page(engine, _failure(try_number=2, began=later, at=later + timedelta(seconds=3)))
        finally:
            await engine.stop()

    _run(go())
    (record,) = store.get_by_incident("etl.load")
    assert record.context["message"] == "from the notifier"
    assert [h["event"] for h in record.history].count("retriggered") == 1


def test_a_success_after_the_page_resolves_it_and_one_before_does_not(store):
    detector = _detector(store)

    async def go():
        engine = detector.service.engine
        await engine.start()
        try:
            await detector._page(engine, _failure())
            (record,) = store.get_by_incident("etl.load")
            await detector._resolve(engine, _success(at=record.created_at - timedelta(seconds=1)))
            assert _state(store.get(record.id)) == "active"
            await detector._resolve(engine, _success(at=datetime.now(timezone.utc) + timedelta(seconds=1)))
            return store.get(record.id)
        finally:
            await engine.stop()

    record = _run(go())
    assert _state(record) == "resolved" and record.history[-1]["actor"] == DETECTOR_ACTOR
    assert detector.resolved == 1


def test_two_detectors_racing_on_one_store_make_one_record(store):
    first, second = _detector(store), _detector(store)

    async def go():
        engines = (first.service.engine, second.service.engine)
        for engine in engines:
            await engine.start()
        try:
            await asyncio.gather(first._page(engines[0], _failure()), second._page(engines[1], _failure()))
        finally:
            for engine in engines:
                await engine.stop()

    _run(go())
    assert len(store.get_by_incident("etl.load")) == 1


def test_a_run_over_a_duration_pages_only_once_past_its_route_limit(store):
    detector = _detector(store)
    fields = {"dag_id": "etl", "run_id": "r1", "source": "dag"}

    def long_run(minutes):
        started = datetime.now(timezone.utc) - timedelta(minutes=minutes)
        return FailureEvent(
            kind="dag_run_over_duration", dag_id="etl", run_id="r1", at=started, began=started, fields=fields
        )

    async def go():
        engine = detector.service.engine
        await engine.start()
        try:
            assert await detector._page(engine, long_run(5)) is False  # not yet over 10 minutes
            assert await detector._page(engine, long_run(11)) is True
        finally:
            await engine.stop()

    _run(go())
    (record,) = store.get_by_incident("etl")
    assert record.context["kind"] == "dag_run_over_duration" and record.context["route"] == "slow"


@pytest.mark.parametrize(
    ("state", "try_number", "max_tries", "kind"),
    [
        ("failed", 1, 2, "task_up_for_retry"),  # Airflow's history writes a retried try as failed
        ("failed", 2, 2, "task_up_for_retry"),
        ("failed", 3, 2, "task_failed"),  # no retry left: the final failure (cleared since)
        ("up_for_retry", 1, 2, "task_up_for_retry"),
        ("failed", 1, None, "task_failed"),
    ],
)
def test_a_retried_try_read_from_the_history_is_up_for_retry(state, try_number, max_tries, kind):
    from airflow_escalation.detection.scan import _history_kind

    assert _history_kind(state, try_number, max_tries) == kind
