"""Spec fidelity points of issue 11, each on the fake clock: what was sent, to whom, and nothing else."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import (
    DeliveryState,
    EscalationEvent,
    EscalationLevel,
    EscalationPolicy,
    EscalationPolicyConfig,
    EscalationRecord,
    EscalationState,
    EscalationTarget,
    TargetType,
)
from core_support import at, ladder

DAY = timedelta(hours=24)


def spec_policy() -> EscalationPolicy:
    """The spec's ``critical_alerts`` policy (its EscalationPolicy example)."""
    return EscalationPolicy(
        name="critical_alerts",
        levels=[
            EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.user("lead", "Team Lead")]),
            EscalationLevel(level=2, delay_minutes=15, targets=[EscalationTarget.user("manager", "Manager")]),
            EscalationLevel(level=3, delay_minutes=30, targets=[EscalationTarget.user("director", "Director")]),
        ],
        severity_filter=["critical", "high"],
        max_escalations=5,
        cooldown_minutes=60,
        timezone="Asia/Seoul",
    )


async def test_the_spec_flow_trigger_then_acknowledge_pages_level_one_and_says_so(make_engine, recorder):
    engine = await make_engine(spec_policy())
    result = await engine.trigger(
        incident_id="incident-123",
        context={"severity": "critical", "checkpoint_name": "production_validation"},
        policy_name="critical_alerts",
    )
    assert result.success and result.record.current_level == 1
    assert [t.key for t in result.targets_queued] == ["user:lead"]
    assert [t.key for t in result.targets_notified] == ["user:lead"]  # sent, not merely queued
    acked = await engine.acknowledge(record_id=result.record.id, acknowledged_by="user-123")
    assert acked.success and acked.record.state == EscalationState.ACKNOWLEDGED

    await engine.advance(DAY)
    assert recorder.timeline() == at(0, ["user:lead"])  # level 1, and nothing after the acknowledgement
    [delivery] = engine.get_deliveries(result.record.id)
    assert delivery.state is DeliveryState.SENT
    record = engine.get_record(result.record.id)
    assert record.notification_count == 1
    assert [e["event"] for e in record.history] == ["triggered", "start", "notified", "acknowledge"]


async def test_a_failed_first_page_is_queued_not_notified(make_engine, clock):
    from airflow_escalation.testing import RecordingHandler

    failing = RecordingHandler(clock, fail_targets={"user:l1"})
    engine = await make_engine(ladder(delays=(0, 15)), handler=failing)
    result = await engine.trigger("inc", {}, "ladder")
    assert [t.key for t in result.targets_queued] == ["user:l1"] and result.targets_notified == []


async def test_without_send_before_return_the_result_lists_what_was_queued_only(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 15)), send_before_return=False)
    result = await engine.trigger("inc", {}, "ladder")
    assert [t.key for t in result.targets_queued] == ["user:l1"] and result.targets_notified == []
    assert recorder.timeline() == []
    await engine.acknowledge(result.record.id)  # before the outbox ran: the page is cancelled
    await engine.advance(DAY)
    assert recorder.timeline() == []
    [delivery] = engine.get_deliveries(result.record.id)
    assert delivery.state is DeliveryState.CANCELLED


async def test_a_notify_only_level_whose_next_level_falls_due_first_closes_instead_of_climbing(make_engine, recorder):
    # level 1: notify-only, 3 repeats every 10 minutes (last at 30); level 2 would be due at 15
    policy = ladder(
        delays=(0, 15),
        level_kwargs={1: dict(require_ack=False, repeat_count=3, repeat_interval_minutes=10)},
    )
    engine = await make_engine(policy)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, ["user:l1"]) + at(10, ["user:l1"]) + at(20, ["user:l1"]) + at(30, ["user:l1"])
    record = engine.get_record(record_id)
    assert record.state == EscalationState.RESOLVED and record.current_level == 1
    assert record.escalation_count == 0
    assert record.history[-1]["details"]["reason"] == "level requires no acknowledgement"


async def test_duration_of_an_open_record_counts_to_now(make_engine, clock):
    engine = await make_engine(ladder(delays=(0, 15)))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=20))  # its last update was the climb at 15
    record = engine.get_record(record_id)
    assert record.updated_at == record.created_at + timedelta(minutes=15)
    assert record.duration_at(clock.now()) == timedelta(minutes=20)
    assert record.duration > timedelta(minutes=20)  # the system clock is far past the fake one
    await engine.resolve(record_id)
    await engine.advance(timedelta(hours=1))
    closed = engine.get_record(record_id)
    assert closed.duration == closed.duration_at(clock.now()) == timedelta(minutes=20)


async def test_acknowledged_count_leaves_out_records_later_resolved(make_engine):
    engine = await make_engine(ladder(delays=(0, 15)))
    ids = [(await engine.trigger(f"inc-{n}", {}, "ladder")).record.id for n in range(3)]
    for record_id in ids:
        await engine.acknowledge(record_id)
    await engine.resolve(ids[0])
    await engine.resolve(ids[1])
    stats = engine.get_stats()
    assert (stats.total_escalations, stats.acknowledged_count, stats.resolved_count) == (3, 1, 2)
    assert stats.acknowledged_count + stats.resolved_count + stats.active_escalations <= stats.total_escalations
    assert stats.acknowledgment_rate + stats.resolution_rate <= 1


def test_escalation_target_is_frozen_and_hashable():
    lead = EscalationTarget.user("lead", "Team Lead")
    same = EscalationTarget(TargetType.USER, "lead", "Team Lead")
    assert {lead, same} == {lead} and {lead: 1}[same] == 1
    assert hash(EscalationTarget.user("lead", metadata={"a": 1})) == hash(EscalationTarget.user("lead"))
    with pytest.raises(AttributeError):
        lead.identifier = "other"  # type: ignore[misc]


def test_record_state_is_the_enum_and_still_compares_as_text():
    record = EscalationRecord.create("inc", "p", state="acknowledged")
    assert record.state is EscalationState.ACKNOWLEDGED
    assert (
        record.state == "acknowledged" and f"{record.state}" == "acknowledged" and str(record.state) == "acknowledged"
    )
    assert record.to_dict()["state"] == "acknowledged" and type(record.to_dict()["state"]) is str


async def test_a_policy_timeout_after_the_top_level_ends_the_record_timed_out(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 15), timeout_minutes=60))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=74))
    assert engine.get_record(record_id).state == EscalationState.ACTIVE  # top level fired at 15
    await engine.advance(timedelta(minutes=1))  # 15 + 60
    record = engine.get_record(record_id)
    assert record.state == EscalationState.TIMED_OUT and record.closed_at is not None
    assert record.history[-1]["event"] == EscalationEvent.TIMEOUT.value
    assert record.history[-1]["details"] == {"timeout_minutes": 60}
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, ["user:l1"]) + at(15, ["user:l2"])  # and nothing else
    assert engine.get_stats().timed_out_count == 1


async def test_an_acknowledged_record_does_not_time_out(make_engine):
    engine = await make_engine(ladder(delays=(0, 15), timeout_minutes=60))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=20))
    await engine.acknowledge(record_id)
    await engine.advance(DAY)
    assert engine.get_record(record_id).state == EscalationState.ACKNOWLEDGED


def test_timeout_minutes_is_read_from_yaml_validated_and_kept_out_of_old_fingerprints():
    config = EscalationPolicyConfig.from_yaml(
        "escalation:\n  policies:\n    - name: p\n      timeout_minutes: 90\n"
        "      levels:\n        - level: 1\n          targets: [lead]\n"
    )
    assert config.policies["p"].timeout_minutes == 90
    assert config.policies["p"].timeout == timedelta(minutes=90)
    with pytest.raises(ValueError, match="timeout_minutes"):
        ladder(timeout_minutes=-1)
    assert "timeout_minutes" not in ladder().to_dict()  # unset: fingerprints of stored snapshots hold
    assert ladder(timeout_minutes=5).fingerprint != ladder().fingerprint
