"""Manual escalation and illegal transitions (semantics 8, 9)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import EscalationState, EscalationStateMachine, EscalationEvent, InvalidTransition
from core_support import CRIT, SEED, SEED_L1, SEED_L2, SEED_L3, T0, at, ladder, seed_policy

DAY = timedelta(hours=24)


async def test_escalate_from_level_one_jumps_to_level_two_now(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=2))
    result = await engine.escalate(record_id, escalated_by="carol")
    assert result.success and result.action == "escalate"
    assert result.level == 2 and result.record.current_level == 2
    assert result.record.state == "active"
    assert sorted(t.key for t in result.targets_notified) == SEED_L2
    assert result.record.next_escalation_at == T0 + timedelta(minutes=32)
    await engine.advance(DAY)

    # L1's pending repeats are gone: it is no longer the current level
    assert recorder.timeline() == at(0, SEED_L1) + at(2, SEED_L2) + at(32, SEED_L3)
    record = engine.get_record(record_id)
    manual = [h for h in record.history if h["event"] == "escalate"]
    assert manual[0]["actor"] == "carol" and manual[0]["details"]["manual"] is True


async def test_escalate_at_the_top_level_without_force_is_a_conflict(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=50))
    result = await engine.escalate(record_id)
    assert not result.success and result.code == "conflict"
    assert result.record.current_level == 3
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(45, SEED_L3)


async def test_forced_escalate_at_the_top_level_pages_it_again(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=50))
    result = await engine.escalate(record_id, force=True)
    assert result.success and result.record.current_level == 3 and result.record.state == "active"
    await engine.advance(DAY)
    assert recorder.timeline() == (
        at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(45, SEED_L3) + at(50, SEED_L3)
    )


async def test_escalate_an_acknowledged_record_needs_force(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=3))
    await engine.acknowledge(record_id, "alice")
    await engine.advance(timedelta(minutes=4))  # t = 7
    refused = await engine.escalate(record_id)
    assert not refused.success and refused.code == "conflict"
    assert engine.get_record(record_id).state == "acknowledged"

    forced = await engine.escalate(record_id, force=True)
    assert forced.success and forced.record.state == "active" and forced.record.current_level == 2
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(7, SEED_L2) + at(37, SEED_L3)
    assert engine.get_record(record_id).state == "active"


async def test_acknowledge_again_after_a_forced_reactivation(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=3))
    await engine.acknowledge(record_id, "alice")
    await engine.escalate(record_id, force=True)
    await engine.advance(timedelta(minutes=5))
    result = await engine.acknowledge(record_id, "bob")
    assert result.success and result.record.state == "acknowledged"
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(3, SEED_L2)


async def test_escalate_a_pending_record_starts_it(make_engine, recorder):
    engine = await make_engine(ladder(delays=(10, 15)))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=1))
    result = await engine.escalate(record_id)
    assert result.success and result.record.state == "active" and result.record.current_level == 1
    await engine.advance(DAY)
    assert recorder.timeline() == [(1, "user:l1"), (16, "user:l2")]


# ------------------------------------------------------------------ illegal transitions, unknown ids


async def test_acknowledge_twice_is_a_conflict(make_engine, recorder):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=1))
    assert (await engine.acknowledge(record_id, "alice")).success
    await engine.advance(timedelta(minutes=1))
    second = await engine.acknowledge(record_id, "bob")
    assert not second.success and second.code == "conflict"
    assert "alice" in second.error
    record = engine.get_record(record_id)
    assert record.acknowledged_by == "alice" and record.acknowledged_at == T0 + timedelta(minutes=1)


@pytest.mark.parametrize("first", ["resolve", "cancel"])
@pytest.mark.parametrize("then", ["acknowledge", "resolve", "cancel", "escalate", "escalate_force"])
async def test_nothing_changes_a_closed_record(make_engine, recorder, first, then):
    engine = await make_engine(seed_policy())
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=1))
    assert (await getattr(engine, first)(record_id)).success
    before = engine.get_record(record_id)
    if then == "escalate_force":
        result = await engine.escalate(record_id, force=True)
    else:
        result = await getattr(engine, then)(record_id)
    assert not result.success and result.code == "conflict"
    assert result.record.state == before.state
    after = engine.get_record(record_id)
    assert (after.state, after.version, len(after.history)) == (before.state, before.version, len(before.history))
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1)


@pytest.mark.parametrize("action", ["acknowledge", "resolve", "cancel", "escalate"])
async def test_unknown_record_id_is_not_found(make_engine, action):
    engine = await make_engine(seed_policy())
    result = await getattr(engine, action)("no-such-record")
    assert not result.success and result.code == "not_found" and result.record is None
    assert result.message and result.error


async def test_timed_out_record_is_closed_for_every_action(make_engine):
    engine = await make_engine(ladder(delays=(0, 1, 1), max_escalations=1))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=5))
    assert engine.get_record(record_id).state == "timed_out"
    for call in (engine.acknowledge, engine.resolve, engine.cancel, engine.escalate):
        result = await call(record_id)
        assert not result.success and result.code == "conflict"


async def test_acknowledge_a_pending_record(make_engine, recorder):
    engine = await make_engine(ladder(delays=(10, 15)))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    result = await engine.acknowledge(record_id, "alice")
    assert result.success and result.record.state == "acknowledged"
    await engine.advance(DAY)
    assert recorder.timeline() == []


def test_state_machine_has_no_exit_from_terminal_states():
    sm = EscalationStateMachine()
    for state in EscalationState:
        if state.is_terminal:
            assert sm.get_valid_events(state) == []
            assert sm.get_reachable_states(state) == set()
            with pytest.raises(InvalidTransition):
                sm.transition(state, EscalationEvent.ACKNOWLEDGE)
    assert sm.get_next_state("active", "acknowledge") is EscalationState.ACKNOWLEDGED
    assert not sm.can_transition("acknowledged", "acknowledge")


# ------------------------------------------------------------------ escalation continues until resolved


async def test_unresolved_trigger_keeps_escalating_after_acknowledgement(make_engine, recorder):
    engine = await make_engine(seed_policy(triggers=["unacknowledged", "unresolved"]))
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=3))
    assert (await engine.acknowledge(record_id, "alice")).success
    await engine.advance(timedelta(minutes=47))  # t = 50
    assert recorder.timeline() == (
        at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(45, SEED_L3)
    )
    assert (await engine.resolve(record_id)).success
    await engine.advance(DAY)
    assert len(recorder.sent) == 10


# ------------------------------------------------------------------ errors while deciding


async def test_due_level_that_cannot_be_processed_fails_the_record(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 5), level_kwargs={2: dict(conditions={"impact": "high"})}))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    record = engine.get_record(record_id)
    assert record.state == "failed" and record.closed_at == T0 + timedelta(minutes=5)
    assert "no evaluator" in record.history[-1]["details"]["error"]
    assert recorder.timeline() == [(0, "user:l1")]
    assert engine.get_stats().failed_count == 1


async def test_level_condition_with_a_registered_evaluator(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 5, 5), level_kwargs={2: dict(conditions={"impact": "high"})}))
    engine.register_condition_evaluator("impact", lambda record, expected: record.context.get("impact") == expected)
    await engine.trigger("hi", {"impact": "high"}, "ladder")
    await engine.trigger("lo", {"impact": "low"}, "ladder")
    await engine.advance(DAY)
    assert recorder.timeline("hi") == [(0, "user:l1"), (5, "user:l2"), (10, "user:l3")]
    assert recorder.timeline("lo") == [(0, "user:l1"), (10, "user:l3")]  # level 2 skipped


def _missing_evaluator(delays):
    return ladder(delays=delays, level_kwargs={2: dict(conditions={"impact": "high"})})


async def _trigger(engine, policy):
    return await engine.trigger("inc", {}, policy.name)


async def _trigger_then_escalate(engine, policy):
    result = await engine.trigger("inc", {}, policy.name)
    return await engine.escalate(result.record.id)


@pytest.mark.parametrize(
    "policy, call",
    [
        (_missing_evaluator((0, 0)), _trigger),
        (_missing_evaluator((0, 5)), _trigger_then_escalate),
        (ladder(delays=(0,) * 70), _trigger),
    ],
    ids=["trigger-missing-evaluator", "escalate-missing-evaluator", "trigger-70-zero-delay-levels"],
)
async def test_engine_calls_never_raise_when_a_level_cannot_be_processed(make_engine, policy, call):
    engine = await make_engine(policy)
    result = await call(engine, policy)
    assert result.success is False or result.record.state == "failed"


def test_a_delay_beyond_a_year_is_rejected_when_the_policy_is_built():
    with pytest.raises(ValueError, match="delay_minutes"):
        ladder(delays=(0, 1e10))


async def test_listeners_hear_every_committed_change_in_order(make_engine):
    policy = ladder(delays=(0, 15))
    engine = await make_engine(policy)
    heard: list[tuple[str, str]] = []
    async_heard: list[str] = []

    async def slow_listener(record, action):
        async_heard.append(action)

    def failing_listener(record, action):
        raise RuntimeError("listener bug")

    engine.add_listener(lambda record, action: heard.append((action, record.state)))
    engine.add_listener(failing_listener)
    engine.add_listener(slow_listener)
    result = await engine.trigger("inc", {}, policy.name)
    await engine.trigger("inc", {}, policy.name)
    await engine.advance(timedelta(minutes=15))
    await engine.acknowledge(result.record.id, "alice")
    await engine.resolve(result.record.id, "alice")
    await engine.drain()
    assert heard == [
        ("trigger", "active"),
        ("trigger_existing", "active"),
        ("due", "active"),
        ("acknowledge", "acknowledged"),
        ("resolve", "resolved"),
    ]
    assert async_heard == [action for action, _ in heard]
    assert engine.get_record(result.record.id).state == "resolved"  # a failing listener changes nothing
