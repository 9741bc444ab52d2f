"""``EscalationOperator`` and ``EscalationSensor`` step by step against the service on 127.0.0.1:
``execute`` (and the ``TaskDeferred`` it raises), the trigger, ``execute_complete``; the paths a
``dag.test()`` of the examples does not take (timeouts, refusals, failed states, poke mode)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred

from airflow_escalation.operators.escalation import EscalationOperator
from airflow_escalation.sensors.escalation import EscalationSensor
from airflow_escalation.triggers.escalation import EscalationStateTrigger


class FakeTI:
    def __init__(self, dag_id: str, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.try_number, self.map_index = dag_id, task_id, "manual__1", 1, -1
        self.log_url = f"http://localhost:8080/dags/{dag_id}/runs/manual__1/tasks/{task_id}"
        self.xcoms: dict = {}

    def xcom_push(self, key: str, value) -> None:
        self.xcoms[key] = value


def ctx(dag_id: str, task_id: str) -> dict:
    ti = FakeTI(dag_id, task_id)
    return {"ti": ti, "task_instance": ti, "dag": SimpleNamespace(dag_id=dag_id), "run_id": ti.run_id}


def first_event(trigger: EscalationStateTrigger, then=None):
    """The trigger's event: the payload of a TriggerEvent, or the TaskSuccessEvent itself."""
    from airflow.triggers.base import TaskSuccessEvent

    async def run():
        task = asyncio.create_task(anext(trigger.run()))
        if then is not None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(then)
        event = await asyncio.wait_for(task, 15)
        return event if isinstance(event, TaskSuccessEvent) else event.payload

    return asyncio.run(run())


def deferred(operator, context) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        operator.execute(context)
    return info.value


# ---------------------------------------------------------------------------------- operator


def test_operator_triggers_and_returns_the_record_id(service):
    op = EscalationOperator(
        task_id="check",
        policy_name="production_critical",
        severity="critical",
        escalation_context={"failed_checks": ["nulls"]},
    )
    record_id = op.execute(ctx("op_etl", "check"))
    with service.client() as client:
        record = client.get_escalation(record_id)
    assert record["incident_id"] == "op_etl.check" and record["context"]["source"] == "operator"
    assert record["context"]["failed_checks"] == ["nulls"] and record["context"]["severity"] == "critical"
    # a retry of the task joins the same open escalation
    assert op.execute(ctx("op_etl", "check")) == record_id


def test_operator_waits_for_the_acknowledgement(service):
    op = EscalationOperator(
        deferrable=True, task_id="wait", wait_for="acknowledged", timeout=timedelta(minutes=5), poll_interval=0.2
    )
    context = ctx("opwait_etl", "wait")
    defer = deferred(op, context)
    trigger = defer.trigger
    assert isinstance(trigger, EscalationStateTrigger) and trigger.states == ("acknowledged", "resolved")
    assert defer.method_name == "execute_complete" and defer.timeout == timedelta(minutes=7)
    record_id = defer.kwargs["record_id"]
    # the XCom is pushed before deferring: a trigger that ends the task has nothing to push
    assert context["ti"].xcoms == {"return_value": record_id}
    assert trigger.end_from_trigger and trigger.success_xcom is None and trigger.deferred_at
    # no task instance here (as in dag.test()): the trigger resumes the task with a success event
    event = first_event(trigger, then=lambda: service.client().acknowledge(record_id, "mine"))
    assert event["status"] == "success" and event["state"] == "acknowledged"
    assert op.execute_complete(context, event=event, **defer.kwargs) == record_id
    # a task ended by a TaskSuccessEvent that is resumed anyway gets event="success"
    assert op.execute_complete(context, event="success", **defer.kwargs) == record_id
    assert op.execute_complete(context, event="success") == record_id  # found by its incident
    # without end_from_trigger the task resumes with the event
    resumed = EscalationOperator(
        deferrable=True, task_id="wait2", wait_for="acknowledged", end_from_trigger=False, poll_interval=0.2
    )
    context2 = ctx("opwait_etl", "wait2")
    defer2 = deferred(resumed, context2)
    rid2 = defer2.kwargs["record_id"]
    payload = first_event(defer2.trigger, then=lambda: service.client().acknowledge(rid2))
    assert payload["status"] == "success" and payload["record"]["acknowledged_by"] == "tester"
    assert resumed.execute_complete(context2, event=payload, **defer2.kwargs) == rid2


def test_operator_fails_on_timeout_and_on_a_dead_end(service):
    op = EscalationOperator(deferrable=True, task_id="late", wait_for="resolved", timeout=0.5, poll_interval=0.2)
    context = ctx("optimeout_etl", "late")
    defer = deferred(op, context)
    event = first_event(defer.trigger)
    with pytest.raises(AirflowException, match=r"was not resolved within 0:00:00.5"):
        op.execute_complete(context, event=event, **defer.kwargs)

    op = EscalationOperator(deferrable=True, task_id="dead", wait_for="resolved", poll_interval=0.2)
    context = ctx("opdead_etl", "dead")
    defer = deferred(op, context)
    rid = defer.kwargs["record_id"]

    def acknowledge_then_cancel():
        with service.client() as client:
            client.acknowledge(rid)  # not resolved: the wait goes on
            time.sleep(0.6)
            client.cancel(rid, "not ours")  # a dead end: the wait fails

    event = first_event(defer.trigger, then=acknowledge_then_cancel)
    with pytest.raises(AirflowException, match="ended cancelled without becoming resolved"):
        op.execute_complete(context, event=event, **defer.kwargs)


def test_operator_already_handled_returns_without_deferring(service):
    op = EscalationOperator(deferrable=True, task_id="done", wait_for="acknowledged")
    with service.client() as client:
        rid = client.trigger("opdone_etl.done", {"severity": "high", "dag_id": "opdone_etl"})["record"]["id"]
        client.acknowledge(rid)
    assert op.execute(ctx("opdone_etl", "done")) == rid  # joins the acknowledged escalation


def test_operator_refused_by_a_policy_gate(service):
    low = EscalationOperator(task_id="low", severity="low", policy_name="production_critical")
    assert low.execute(ctx("opgate_etl", "low")) is None
    strict = EscalationOperator(task_id="low", severity="low", policy_name="production_critical", fail_on_refused=True)
    with pytest.raises(AirflowException, match=r"refused to escalate incident 'opgate_etl.low' \(filtered\)"):
        strict.execute(ctx("opgate_etl", "low"))


def test_operator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="wait_for"):
        EscalationOperator(task_id="x", wait_for="acked")
    with pytest.raises(ValueError, match="timeout"):
        EscalationOperator(task_id="x", wait_for="resolved", timeout=0)


# ---------------------------------------------------------------------------------- sensor


def make_record(service, incident: str, dag_id: str | None = None) -> str:
    """A record of ``incident``, of the Dag its id starts with (``sensor_etl.load``: ``sensor_etl``)."""
    with service.client() as client:
        context = {"severity": "high", "dag_id": dag_id or incident.split(".")[0]}
        return client.trigger(incident, context)["record"]["id"]


def test_sensor_defers_on_the_incident_and_returns_the_record(service):
    rid = make_record(service, "sensor_etl.load")
    sensor = EscalationSensor(
        deferrable=True, task_id="wait", incident_id="{dag_id}.load", poke_interval=0.2, timeout=60
    )
    context = ctx("sensor_etl", "wait")
    defer = deferred(sensor, context)
    assert defer.trigger.record_id == rid and defer.trigger.failed_states == ("cancelled", "timed_out", "failed")
    event = first_event(defer.trigger, then=lambda: service.client().resolve(rid))
    record = sensor.execute_complete(context, event=event, **defer.kwargs)
    assert record["id"] == rid and record["state"] == "resolved" and record["resolved_by"] == "tester"
    assert record == event["record"]
    assert (
        EscalationSensor(task_id="wait", incident_id="{dag_id}.load").execute_complete(context, event="success")["id"]
        == rid
    )


def test_sensor_waits_on_its_own_dags_incident_never_another_dags(service):
    # another Dag's record of the same incident id, newer and open: not the one to wait for
    own = make_record(service, "sensor_mine.load")
    decoy = make_record(service, "sensor_mine.load", dag_id="someone_else")
    assert decoy != own
    sensor = EscalationSensor(
        deferrable=True, task_id="wait", incident_id="{dag_id}.load", poke_interval=0.2, timeout=60
    )
    assert deferred(sensor, ctx("sensor_mine", "wait")).trigger.record_id == own


def test_sensor_already_there_and_not_found(service):
    rid = make_record(service, "sensor_done.load")
    with service.client() as client:
        client.acknowledge(rid)
    sensor = EscalationSensor(deferrable=True, task_id="wait", record_id=rid)
    assert sensor.execute(ctx("sensor_done", "wait"))["state"] == "acknowledged"
    missing = EscalationSensor(task_id="wait", incident_id="nobody.nothing")
    with pytest.raises(AirflowException, match="no escalation of incident 'nobody.nothing'"):
        missing.execute(ctx("sensor_none", "wait"))


def test_sensor_failed_state_timeout_and_soft_fail(service):
    rid = make_record(service, "sensor_fail.load")
    sensor = EscalationSensor(
        deferrable=True, task_id="wait", record_id=rid, target_states=["resolved"], poke_interval=0.2
    )
    context = ctx("sensor_fail", "wait")
    defer = deferred(sensor, context)
    event = first_event(defer.trigger, then=lambda: service.client().cancel(rid, "noise"))
    with pytest.raises(AirflowException, match="ended cancelled"):
        sensor.execute_complete(context, event=event)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(context, event={"status": "timeout", "message": "too late"})
    soft = EscalationSensor(deferrable=True, task_id="wait", record_id=rid, soft_fail=True)
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException):
        soft.resume_execution("execute_complete", {"event": {"status": "timeout", "message": "late"}}, context)


def test_sensor_poke_mode(service):
    rid = make_record(service, "sensor_poke.load")
    sensor = EscalationSensor(task_id="wait", record_id=rid, deferrable=False, poke_interval=0.1, timeout=30)
    context = ctx("sensor_poke", "wait")
    assert sensor.poke(context) is False
    with service.client() as client:
        client.acknowledge(rid)
    result = sensor.poke(context)
    assert result.is_done and result.xcom_value["state"] == "acknowledged"


def test_sensor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of record_id= or incident_id="):
        EscalationSensor(task_id="x")
    with pytest.raises(ValueError, match="exactly one"):
        EscalationSensor(task_id="x", record_id="a", incident_id="b")
    with pytest.raises(ValueError, match="unknown escalation state 'done'"):
        EscalationSensor(task_id="x", record_id="a", target_states=["done"])
