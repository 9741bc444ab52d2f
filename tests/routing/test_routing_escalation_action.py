from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import EscalationEngine, EscalationEngineConfig, EscalationResult, EscalationTrigger
from airflow_escalation.routing import EscalationAction
from airflow_escalation.testing import FakeClock, RecordingHandler

from .conftest import START, ladder


async def test_execute_triggers_the_policy_with_the_formatted_incident_id(engine, sent):
    action = EscalationAction(engine, "critical_alerts", incident_id_template="cp-{checkpoint_name}-{run_id}")
    result = await action.execute({"severity": "critical", "checkpoint_name": "orders", "run_id": 7})
    assert isinstance(result, EscalationResult) and result.success, result.error
    assert result.record.incident_id == "cp-orders-7"
    assert result.record.policy_name == "critical_alerts"
    assert result.record.context["checkpoint_name"] == "orders"
    assert [r.id for r in engine.get_records_for_incident("cp-orders-7")] == [result.record.id]
    # level 1 was notified at once, through the engine's handler
    await engine.drain()  # deliveries run as tasks after the trigger's write
    assert sent.timeline() == [(0, "channel:#alerts"), (0, "user:lead")]
    assert {(n.incident_id, n.level) for n in sent.sent} == {("cp-orders-7", 1)}
    await engine.advance(timedelta(minutes=15))
    assert sent.timeline()[-2:] == [(15, "schedule:oncall"), (15, "user:manager")]


async def test_default_template_is_the_checkpoint_name(engine, sent):
    result = await EscalationAction(engine, "critical_alerts").execute({"checkpoint_name": "users"})
    assert result.success and result.record.incident_id == "users"


async def test_missing_context_key_is_a_failed_result_not_an_exception(engine, sent):
    action = EscalationAction(engine, "critical_alerts", incident_id_template="{dag_id}/{run_id}")
    result = await action.execute({"dag_id": "etl"})
    assert not result.success and result.code == "invalid"
    assert "needs context key 'run_id'" in result.error and "keys: ['dag_id']" in result.error
    assert engine.get_active_escalations() == [] and sent.sent == []


async def test_engine_refusals_come_back_as_results(engine):
    manual = EscalationAction(engine, "critical_alerts", trigger_type="manual")
    result = await manual.execute({"checkpoint_name": "orders"})
    assert not result.success and result.code == "filtered" and "'manual'" in result.error
    missing = await EscalationAction(engine, "no_such_policy").execute({"checkpoint_name": "orders"})
    assert not missing.success and missing.code == "not_found"


def test_properties_and_validation(engine):
    action = EscalationAction(engine, "critical_alerts")
    assert action.name == "escalate:critical_alerts" and action.action_type == "escalation"
    assert action.trigger_type is EscalationTrigger.UNACKNOWLEDGED
    assert not callable(action)  # execute() is the API
    assert EscalationAction(engine, "p", name="page-sre").name == "page-sre"
    with pytest.raises(ValueError, match="trigger_type: unknown value 'sometimes'"):
        EscalationAction(engine, "p", trigger_type="sometimes")
    with pytest.raises(ValueError, match="incident_id_template: use named fields"):
        EscalationAction(engine, "p", incident_id_template="cp-{}")
    with pytest.raises(ValueError, match="incident_id_template"):
        EscalationAction(engine, "p", incident_id_template="cp-{oops")
    with pytest.raises(ValueError, match="policy_name"):
        EscalationAction(engine, "")
    with pytest.raises(TypeError, match="engine: expected an EscalationEngine"):
        EscalationAction(object(), "p")


def test_execute_sync_without_an_event_loop():
    clock = FakeClock(START)
    sent = RecordingHandler(clock)
    engine = EscalationEngine(EscalationEngineConfig(clock=clock, default_notification_handler=sent))
    engine.register_policy(ladder())
    result = EscalationAction(engine, "critical_alerts").execute_sync({"checkpoint_name": "orders"})
    assert result.success and result.record.incident_id == "orders"
    assert sent.timeline() == [(0, "channel:#alerts"), (0, "user:lead")]


async def test_execute_sync_refuses_inside_a_running_loop(engine):
    with pytest.raises(RuntimeError, match="await action.execute"):
        EscalationAction(engine, "critical_alerts").execute_sync({"checkpoint_name": "orders"})
