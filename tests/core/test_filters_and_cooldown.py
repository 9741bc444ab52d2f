"""severity_filter, enabled, triggers, policy selection, re-triggers and cooldown (semantics 3)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import EscalationTrigger
from core_support import CRIT, SEED, SEED_L1, SEED_TIMELINE, T0, at, ladder, seed_policy

DAY = timedelta(hours=24)
BY_NAME = [SEED, None]


async def _assert_nothing_happened(engine, recorder, incident="inc"):
    await engine.advance(DAY)
    assert recorder.timeline() == []
    assert engine.get_records_for_incident(incident) == []
    assert engine.get_stats().total_escalations == 0


@pytest.mark.parametrize("policy_name", BY_NAME)
@pytest.mark.parametrize("context", [{"severity": "low"}, {"severity": "warning"}, {}, {"severity": None}])
async def test_severity_filter_applies_with_or_without_policy_name(make_engine, recorder, policy_name, context):
    engine = await make_engine(seed_policy())
    result = await engine.trigger("inc", context, policy_name)
    assert not result.success and result.code == "filtered" and result.record is None
    assert "severity" in result.error
    await _assert_nothing_happened(engine, recorder)


@pytest.mark.parametrize("severity", ["critical", "high", "CRITICAL", "High"])
async def test_severity_filter_accepts_listed_severities_case_insensitively(make_engine, recorder, severity):
    engine = await make_engine(seed_policy())
    result = await engine.trigger("inc", {"severity": severity}, SEED)
    assert result.success
    await engine.advance(timedelta(minutes=1))
    assert recorder.timeline() == at(0, SEED_L1)


async def test_empty_severity_filter_matches_everything(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0,)))
    assert (await engine.trigger("a", {}, "ladder")).success
    assert (await engine.trigger("b", {"severity": "info"}, "ladder")).success
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (0, "user:l1")]


@pytest.mark.parametrize("policy_name", BY_NAME)
async def test_disabled_policy_never_triggers(make_engine, recorder, policy_name):
    engine = await make_engine(seed_policy(enabled=False))
    result = await engine.trigger("inc", CRIT, policy_name)
    assert not result.success and result.code == "filtered"
    assert "disabled" in result.error
    await _assert_nothing_happened(engine, recorder)


@pytest.mark.parametrize("policy_name", BY_NAME)
@pytest.mark.parametrize("trigger_type", ["repeated_failure", EscalationTrigger.MANUAL, "unresolved"])
async def test_trigger_type_not_in_policy_triggers_is_filtered(make_engine, recorder, policy_name, trigger_type):
    engine = await make_engine(seed_policy())  # triggers: [unacknowledged]
    result = await engine.trigger("inc", CRIT, policy_name, trigger_type=trigger_type)
    assert not result.success and result.code == "filtered"
    await _assert_nothing_happened(engine, recorder)


async def test_trigger_type_listed_in_policy_triggers_is_accepted(make_engine, recorder):
    engine = await make_engine(seed_policy(triggers=["unacknowledged", "repeated_failure"]))
    result = await engine.trigger("inc", CRIT, SEED, trigger_type="repeated_failure")
    assert result.success and result.record.trigger_type == "repeated_failure"


async def test_unknown_trigger_type_is_a_failed_result(make_engine):
    engine = await make_engine(seed_policy())
    result = await engine.trigger("inc", CRIT, SEED, trigger_type="bogus")
    assert not result.success and result.code == "invalid"


async def test_unknown_policy_name_is_not_found(make_engine, recorder):
    engine = await make_engine(seed_policy())
    result = await engine.trigger("inc", CRIT, "nope")
    assert not result.success and result.code == "not_found"
    await _assert_nothing_happened(engine, recorder)


async def test_no_policy_registered_is_not_found(make_engine):
    engine = await make_engine()
    result = await engine.trigger("inc", CRIT)
    assert not result.success and result.code == "not_found"


@pytest.mark.parametrize("incident_id", ["", None, 42])
async def test_bad_incident_id_is_a_failed_result(make_engine, incident_id):
    engine = await make_engine(seed_policy())
    result = await engine.trigger(incident_id, CRIT, SEED)
    assert not result.success and result.code == "invalid"


async def test_without_policy_name_the_first_matching_enabled_policy_is_used(make_engine, recorder):
    engine = await make_engine(
        ladder("a-disabled", delays=(0,), enabled=False),
        ladder("b-low-only", delays=(0,), severity_filter=["low"]),
        ladder("c-manual-only", delays=(0,), triggers=["manual"]),
        ladder("d-critical", delays=(0, 7)),
        ladder("e-also-matches", delays=(0, 1)),
    )
    result = await engine.trigger("inc", CRIT)
    assert result.success and result.record.policy_name == "d-critical"
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (7, "user:l2")]
    # a low severity goes to the first policy that accepts it
    result = await engine.trigger("inc-low", {"severity": "low"})
    assert result.record.policy_name == "b-low-only"


async def test_without_policy_name_nothing_matching_is_filtered_with_every_reason(make_engine, recorder):
    engine = await make_engine(
        ladder("a", delays=(0,), enabled=False), ladder("b", delays=(0,), severity_filter=["low"])
    )
    result = await engine.trigger("inc", CRIT)
    assert not result.success and result.code == "filtered"
    assert "'a'" in result.error and "'b'" in result.error
    await _assert_nothing_happened(engine, recorder)


# ------------------------------------------------------------------ re-triggers


@pytest.mark.parametrize("policy_name", BY_NAME)
async def test_second_trigger_joins_the_open_record_and_pages_nobody(make_engine, recorder, policy_name):
    engine = await make_engine(seed_policy())
    first = await engine.trigger("inc", CRIT, SEED)
    await engine.advance(timedelta(minutes=7))
    second = await engine.trigger("inc", CRIT, policy_name)
    assert second.success and second.code == "ok"
    assert second.action == "trigger_existing"
    assert second.record.id == first.record.id
    assert second.targets_notified == []
    await engine.advance(DAY)

    assert recorder.timeline() == SEED_TIMELINE  # exactly the one ladder, nothing extra
    record = engine.get_record(first.record.id)
    retriggers = [h for h in record.history if h["event"] == "retriggered"]
    assert len(retriggers) == 1
    assert retriggers[0]["at"] == (T0 + timedelta(minutes=7)).isoformat()
    assert record.metadata["trigger_count"] == 2
    assert len(engine.get_records_for_incident("inc")) == 1


async def test_retrigger_of_an_acknowledged_record_joins_it(make_engine, recorder):
    engine = await make_engine(seed_policy())
    first = await engine.trigger("inc", CRIT, SEED)
    await engine.advance(timedelta(minutes=1))
    await engine.acknowledge(first.record.id, "alice")
    second = await engine.trigger("inc", CRIT, SEED)
    assert second.success and second.action == "trigger_existing" and second.record.id == first.record.id
    assert second.record.state == "acknowledged"
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1)


async def test_same_incident_under_two_policies_gets_two_records(make_engine, recorder):
    engine = await make_engine(ladder("a", delays=(0,)), ladder("b", delays=(0, 5)))
    ra = await engine.trigger("inc", {}, "a")
    rb = await engine.trigger("inc", {}, "b")
    assert ra.action == rb.action == "trigger" and ra.record.id != rb.record.id
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (0, "user:l1"), (5, "user:l2")]


# ------------------------------------------------------------------ cooldown


@pytest.mark.parametrize("close", ["resolve", "cancel", "acknowledge+resolve"])
async def test_cooldown_suppresses_a_new_escalation_after_the_last_one_ended(make_engine, recorder, close):
    engine = await make_engine(seed_policy())  # cooldown_minutes=60
    first = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=2))
    if close == "cancel":
        assert (await engine.cancel(first, "bob")).success
    else:
        if close.startswith("acknowledge"):
            assert (await engine.acknowledge(first, "bob")).success
        assert (await engine.resolve(first, "bob")).success

    await engine.advance(timedelta(minutes=59, seconds=59))  # t = 61:59, 59:59 after closing
    suppressed = await engine.trigger("inc", CRIT, SEED)
    assert not suppressed.success and suppressed.code == "suppressed"
    assert suppressed.record.id == first  # the record that is cooling down
    assert "cooldown" in suppressed.error
    # without policy_name it is suppressed too
    assert (await engine.trigger("inc", CRIT)).code == "suppressed"
    # another incident is not affected
    other = await engine.trigger("other", CRIT, SEED)
    assert other.success and other.action == "trigger"

    await engine.advance(timedelta(seconds=1))  # exactly 60 min after closing: allowed again
    again = await engine.trigger("inc", CRIT, SEED)
    assert again.success and again.action == "trigger" and again.record.id != first
    await engine.advance(timedelta(minutes=1))

    cooldown_end = 62.0
    other_start = 61 + 59 / 60
    assert recorder.timeline("inc") == at(0, SEED_L1) + at(cooldown_end, SEED_L1)
    assert recorder.timeline("other") == at(other_start, SEED_L1)
    records = engine.get_records_for_incident("inc")
    assert [r.id for r in records] == [first, again.record.id]


async def test_no_cooldown_allows_an_immediate_new_escalation(make_engine, recorder):
    engine = await make_engine(seed_policy(cooldown_minutes=0))
    first = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.resolve(first)
    again = await engine.trigger("inc", CRIT, SEED)
    assert again.success and again.action == "trigger" and again.record.id != first


async def test_cooldown_counts_from_a_system_close_too(make_engine, recorder):
    # level 1 notify-only: closed (resolved) by the engine at t=0
    engine = await make_engine(ladder(delays=(0, 5), level_kwargs={1: dict(require_ack=False)}, cooldown_minutes=30))
    first = (await engine.trigger("inc", {}, "ladder")).record
    assert first.state == "resolved"
    await engine.advance(timedelta(minutes=29))
    assert (await engine.trigger("inc", {}, "ladder")).code == "suppressed"
    await engine.advance(timedelta(minutes=1))
    assert (await engine.trigger("inc", {}, "ladder")).action == "trigger"


# ------------------------------------------------------------------ inline policies, queries


async def test_inline_policy_is_used_and_snapshotted(make_engine, recorder):
    engine = await make_engine()
    inline = ladder("inline", delays=(0, 4)).to_dict()
    result = await engine.trigger("inc", {}, policy=inline)
    assert result.success and result.record.policy_name == "inline"
    assert result.record.policy_snapshot == inline
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (4, "user:l2")]


async def test_invalid_inline_policy_is_a_failed_result(make_engine):
    engine = await make_engine()
    result = await engine.trigger("inc", {}, policy={"name": "bad", "levels": []})
    assert not result.success and result.code == "invalid" and "levels" in result.error


async def test_retrigger_with_a_filtered_severity_does_not_join(make_engine, recorder):
    engine = await make_engine(seed_policy())
    first = await engine.trigger("inc", CRIT, SEED)
    again = await engine.trigger("inc", {"severity": "low"}, SEED)
    assert not again.success and again.code == "filtered"
    record = engine.get_record(first.record.id)
    assert not any(h["event"] == "retriggered" for h in record.history)


async def test_active_escalations_by_policy(make_engine):
    engine = await make_engine(ladder("a", delays=(0, 5)), ladder("b", delays=(0, 5)))
    a1 = (await engine.trigger("1", {}, "a")).record.id
    a2 = (await engine.trigger("2", {}, "a")).record.id
    b1 = (await engine.trigger("3", {}, "b")).record.id
    await engine.acknowledge(a2)
    assert [r.id for r in engine.get_active_escalations("a")] == [a1]
    assert {r.id for r in engine.get_active_escalations()} == {a1, b1}


async def test_an_incident_of_another_dag_never_joins_nor_waits_out_its_cooldown(make_engine, recorder):
    # DAG A's user opens incident "B.load" and acknowledges it; DAG B's real failure of the same
    # incident id must page on its own, and A's cooldown must not suppress it either
    engine = await make_engine(ladder(delays=(0,), cooldown_minutes=60))
    decoy = await engine.trigger("B.load", {"dag_id": "A"}, "ladder")
    assert decoy.success
    await engine.acknowledge(decoy.record.id, "mallory")
    real = await engine.trigger("B.load", {"dag_id": "B"}, "ladder")
    assert real.success and real.action == "trigger" and real.record.id != decoy.record.id
    assert real.record.context["dag_id"] == "B"
    # the same DAG still joins its open record
    again = await engine.trigger("B.load", {"dag_id": "B"}, "ladder")
    assert again.action == "trigger_existing" and again.record.id == real.record.id
    await engine.resolve(decoy.record.id, "mallory")
    await engine.resolve(real.record.id, "bob")
    # each DAG's cooldown is its own: A's is running, and B's too; a third DAG is free
    assert (await engine.trigger("B.load", {"dag_id": "A"}, "ladder")).code == "suppressed"
    assert (await engine.trigger("B.load", {"dag_id": "B"}, "ladder")).code == "suppressed"
    assert (await engine.trigger("B.load", {"dag_id": "C"}, "ladder")).success
    records = engine.get_records_for_incident("B.load")
    assert sorted(r.context["dag_id"] for r in records) == ["A", "B", "C"]
