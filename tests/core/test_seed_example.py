"""The spec's complete example policy, driven on a fake clock (semantics 1, 2, 13, 16, 17)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import (
    DelayBasis,
    DeliveryState,
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationState,
    EscalationTarget,
)
from core_support import (
    CRIT,
    SEED,
    SEED_L1,
    SEED_L2,
    SEED_L3,
    SEED_TIMELINE,
    T0,
    at,
    ladder,
    seed_policy,
)

DAY = timedelta(hours=24)


async def test_never_acknowledged_pages_l1_thrice_then_l2_then_l3_and_nothing_else(make_engine, recorder):
    engine = await make_engine(seed_policy())
    result = await engine.trigger("inc-1", CRIT, SEED)
    assert result.success and result.code == "ok" and result.action == "trigger"
    assert result.record.state == EscalationState.ACTIVE.value
    assert result.record.current_level == 1
    assert sorted(t.key for t in result.targets_notified) == SEED_L1

    await engine.advance(DAY)

    assert recorder.timeline() == SEED_TIMELINE
    record = engine.get_record(result.record.id)
    assert record.state == "active" and record.current_level == 3
    assert record.next_escalation_at is None  # nothing left to do at the top level
    assert record.escalation_count == 2
    assert record.notification_count == len(SEED_TIMELINE) == 10
    assert all(d.state is DeliveryState.SENT for d in engine.get_deliveries(record.id))


async def test_timeline_is_exact_at_intermediate_moments(make_engine, recorder):
    engine = await make_engine(seed_policy())
    await engine.trigger("inc-1", CRIT, SEED)
    assert recorder.timeline() == at(0, SEED_L1)  # level 1 went out before trigger returned
    await engine.advance(timedelta(minutes=4, seconds=59))
    assert recorder.timeline() == at(0, SEED_L1)
    await engine.advance(timedelta(seconds=1))
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1)
    await engine.advance(timedelta(minutes=10))  # t = 15
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2)
    await engine.advance(timedelta(minutes=29, seconds=59))
    assert recorder.timeline() == SEED_TIMELINE[:-2]
    await engine.advance(timedelta(seconds=1))
    assert recorder.timeline() == SEED_TIMELINE


@pytest.mark.parametrize("ack_minute", [0.5, 3, 7, 12, 14.9, 20, 44, 50])
async def test_acknowledge_stops_every_later_notification(make_engine, recorder, clock, ack_minute):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc-1", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=ack_minute))
    result = await engine.acknowledge(record_id, acknowledged_by="alice", note="on it")
    assert result.success and result.record.state == "acknowledged"
    await engine.advance(DAY)

    assert recorder.timeline() == [e for e in SEED_TIMELINE if e[0] < ack_minute]
    record = engine.get_record(record_id)
    assert record.state == EscalationState.ACKNOWLEDGED.value
    assert record.acknowledged_by == "alice"
    assert record.acknowledged_at == T0 + timedelta(minutes=ack_minute)
    assert record.next_escalation_at is None
    assert record.is_acknowledged and record.is_open and not record.is_active


@pytest.mark.parametrize("close", ["resolve", "cancel"])
@pytest.mark.parametrize("minute", [2, 12, 20, 30])
async def test_resolve_or_cancel_ends_the_escalation(make_engine, recorder, close, minute):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc-1", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=minute))
    if close == "resolve":
        result = await engine.resolve(record_id, resolved_by="bob", note="fixed")
    else:
        result = await engine.cancel(record_id, cancelled_by="bob", reason="false alarm")
    assert result.success
    await engine.advance(DAY)

    assert recorder.timeline() == [e for e in SEED_TIMELINE if e[0] < minute]
    record = engine.get_record(record_id)
    closed_at = T0 + timedelta(minutes=minute)
    if close == "resolve":
        assert record.state == "resolved" and record.is_resolved
        assert record.resolved_by == "bob" and record.resolved_at == closed_at
    else:
        assert record.state == "cancelled"
        assert record.metadata["cancelled_by"] == "bob"
        assert record.metadata["cancel_reason"] == "false alarm"
    assert record.closed_at == closed_at and record.duration == timedelta(minutes=minute)
    assert record.next_escalation_at is None
    assert engine.get_active_escalations() == []


async def test_resolve_after_acknowledge(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc-1", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=6))
    assert (await engine.acknowledge(record_id, "alice")).success
    await engine.advance(timedelta(minutes=10))
    result = await engine.resolve(record_id, "alice")
    assert result.success and result.record.state == "resolved"
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1)
    record = engine.get_record(record_id)
    assert record.resolved_at == T0 + timedelta(minutes=16)
    events = [h["event"] for h in record.history]
    assert events == ["triggered", "start", "notified", "notify", "notified", "acknowledge", "resolve"]


async def test_delay_basis_trigger_counts_every_delay_from_the_trigger(make_engine, recorder):
    engine = await make_engine(seed_policy(delay_basis=DelayBasis.TRIGGER))
    await engine.trigger("inc-1", CRIT, SEED)
    await engine.advance(DAY)
    assert recorder.timeline() == (
        at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(30, SEED_L3)
    )


async def test_delay_basis_trigger_accepts_the_string_form(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 10, 25), delay_basis="trigger"))
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (10, "user:l2"), (25, "user:l3")]


async def test_a_repeat_due_with_the_next_level_is_not_sent(make_engine, recorder):
    policy = ladder(delays=(0, 10), level_kwargs={1: dict(repeat_count=3, repeat_interval_minutes=5)})
    engine = await make_engine(policy)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (5, "user:l1"), (10, "user:l2")]


async def test_level_one_delay_defers_the_start(make_engine, recorder):
    engine = await make_engine(ladder(delays=(3, 15, 30)))
    result = await engine.trigger("inc", {}, "ladder")
    assert result.record.state == "pending" and result.targets_notified == []
    await engine.advance(DAY)
    assert recorder.timeline() == [(3, "user:l1"), (18, "user:l2"), (48, "user:l3")]


async def test_zero_delay_ladder_pages_every_level_at_once(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 0, 0)))
    result = await engine.trigger("inc", {}, "ladder")
    assert result.record.current_level == 3
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (0, "user:l2"), (0, "user:l3")]


async def test_fractional_minutes(make_engine, recorder):
    policy = ladder(delays=(0, 0.5, 0.25), level_kwargs={1: dict(repeat_count=1, repeat_interval_minutes=0.2)})
    engine = await make_engine(policy)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(timedelta(hours=1))
    assert recorder.timeline() == [(0, "user:l1"), (0.2, "user:l1"), (0.5, "user:l2"), (0.75, "user:l3")]
    times = sorted((n.at - T0).total_seconds() for n in recorder.sent)
    assert times == [0, 12, 30, 45]


# ------------------------------------------------------------------ policy snapshot (13)


async def test_reregistering_a_policy_does_not_change_a_running_ladder(make_engine, recorder):
    engine = await make_engine(seed_policy())
    old_id = (await engine.trigger("inc-old", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=1))
    engine.register_policy(
        seed_policy(
            levels=[
                EscalationLevel(1, 0, [EscalationTarget.user("new-l1")]),
                EscalationLevel(2, 2, [EscalationTarget.user("new-l2")]),
            ]
        )
    )
    new_id = (await engine.trigger("inc-new", CRIT, SEED)).record.id
    await engine.advance(DAY)

    assert recorder.timeline("inc-old") == SEED_TIMELINE
    assert recorder.timeline("inc-new") == [(1, "user:new-l1"), (3, "user:new-l2")]
    assert engine.get_record(old_id).current_level == 3
    assert engine.get_record(new_id).current_level == 2


async def test_unregistering_a_policy_does_not_stop_a_running_ladder(make_engine, recorder):
    engine = await make_engine(seed_policy())
    await engine.trigger("inc", CRIT, SEED)
    assert engine.unregister_policy(SEED)
    await engine.advance(DAY)
    assert recorder.timeline() == SEED_TIMELINE
    result = await engine.trigger("inc-2", CRIT, SEED)
    assert not result.success and result.code == "not_found"


async def test_editing_the_policy_object_in_place_does_not_change_a_running_ladder(make_engine, recorder):
    policy = seed_policy()
    engine = await make_engine(policy)
    await engine.trigger("inc", CRIT, SEED)
    await engine.advance(timedelta(minutes=1))
    policy.levels[1].targets = [EscalationTarget.user("someone-else")]
    policy.levels[2].delay_minutes = 1
    engine.register_policy(policy)
    await engine.advance(DAY)
    assert recorder.timeline() == SEED_TIMELINE


# ------------------------------------------------------------------ advance() guard (17)


async def test_advance_refuses_the_real_clock():
    engine = EscalationEngine(EscalationEngineConfig())
    with pytest.raises(RuntimeError, match="FakeClock"):
        await engine.advance(timedelta(minutes=1))
