"""max_escalations, auto_resolve_minutes, require_ack (semantics 4, 5, 6)."""

from __future__ import annotations

from datetime import timedelta


from core_support import CRIT, SEED, SEED_L1, SEED_L2, SEED_L3, T0, at, ladder, seed_levels, seed_policy

DAY = timedelta(hours=24)


# ------------------------------------------------------------------ max_escalations


async def test_max_escalations_one_times_out_instead_of_paging_level_three(make_engine, recorder):
    engine = await make_engine(seed_policy(max_escalations=1))
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=44))
    assert engine.get_record(record_id).state == "active"
    await engine.advance(DAY)

    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2)
    record = engine.get_record(record_id)
    assert record.state == "timed_out" and not record.is_open
    assert record.current_level == 2 and record.escalation_count == 1
    assert record.closed_at == T0 + timedelta(minutes=45)
    assert record.next_escalation_at is None
    assert record.history[-1]["event"] == "max_level_reached"
    stats = engine.get_stats()
    assert stats.timed_out_count == 1 and stats.active_escalations == 0
    # a closed record takes no more actions
    assert (await engine.acknowledge(record_id)).code == "conflict"


async def test_max_escalations_equal_to_the_climbs_lets_the_ladder_finish(make_engine, recorder):
    engine = await make_engine(seed_policy(max_escalations=2))
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(45, SEED_L3)
    assert engine.get_record(record_id).state == "active"
    assert engine.get_stats().timed_out_count == 0


async def test_max_escalations_bounds_manual_escalation_too(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 15, 30), max_escalations=1))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    assert (await engine.escalate(record_id)).record.current_level == 2
    await engine.advance(timedelta(minutes=1))
    result = await engine.escalate(record_id)
    assert result.record.state == "timed_out"
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (0, "user:l2")]


# ------------------------------------------------------------------ auto_resolve_minutes


async def test_auto_resolve_on_level_one(make_engine, recorder):
    engine = await make_engine(seed_policy(levels=seed_levels(auto_resolve_minutes=8)))
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1)
    record = engine.get_record(record_id)
    assert record.state == "resolved" and record.resolved_by == "system"
    assert record.resolved_at == T0 + timedelta(minutes=8)
    assert engine.get_stats().resolved_count == 1


async def test_auto_resolve_counts_from_when_its_level_fired(make_engine, recorder):
    policy = ladder(delays=(0, 15, 30), level_kwargs={2: dict(auto_resolve_minutes=20)})
    engine = await make_engine(policy)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (15, "user:l2")]
    record = engine.get_record(record_id)
    assert record.state == "resolved" and record.resolved_by == "system"
    assert record.resolved_at == T0 + timedelta(minutes=35)


async def test_auto_resolve_of_a_lower_level_does_not_apply_after_climbing(make_engine, recorder):
    policy = ladder(delays=(0, 15, 30), level_kwargs={1: dict(auto_resolve_minutes=20)})
    engine = await make_engine(policy)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (15, "user:l2"), (45, "user:l3")]
    assert engine.get_record(record_id).state == "active"


async def test_auto_resolve_also_closes_an_acknowledged_record(make_engine, recorder):
    policy = ladder(delays=(0, 15), level_kwargs={1: dict(auto_resolve_minutes=10)})
    engine = await make_engine(policy)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=2))
    await engine.acknowledge(record_id, "alice")
    await engine.advance(DAY)
    record = engine.get_record(record_id)
    assert record.state == "resolved" and record.resolved_by == "system"
    assert record.resolved_at == T0 + timedelta(minutes=10)
    assert recorder.timeline() == [(0, "user:l1")]


async def test_auto_resolve_tied_with_a_repeat_wins(make_engine, recorder):
    policy = ladder(
        delays=(0, 30), level_kwargs={1: dict(repeat_count=3, repeat_interval_minutes=5, auto_resolve_minutes=10)}
    )
    engine = await make_engine(policy)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (5, "user:l1")]


# ------------------------------------------------------------------ require_ack=False


async def test_notify_only_level_one_resolves_immediately_and_level_two_never_fires(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 15), level_kwargs={1: dict(require_ack=False)}))
    result = await engine.trigger("inc", {}, "ladder")
    assert result.success and result.record.state == "resolved"
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1")]
    record = engine.get_record(result.record.id)
    assert record.resolved_by == "system" and record.resolved_at == T0
    assert record.notification_count == 1


async def test_notify_only_level_with_repeats_resolves_after_its_last_round(make_engine, recorder):
    engine = await make_engine(seed_policy(levels=seed_levels(require_ack=False)))
    record_id = (await engine.trigger("inc", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=9))
    assert engine.get_record(record_id).state == "active"
    await engine.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1)
    record = engine.get_record(record_id)
    assert record.state == "resolved" and record.resolved_at == T0 + timedelta(minutes=10)


async def test_notify_only_top_level(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 15, 30), level_kwargs={2: dict(require_ack=False)}))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (15, "user:l2")]
    assert engine.get_record(record_id).state == "resolved"
    assert engine.get_record(record_id).resolved_at == T0 + timedelta(minutes=15)


async def test_notify_only_level_reached_by_manual_escalation_resolves(make_engine, recorder):
    engine = await make_engine(ladder(delays=(0, 15, 30), level_kwargs={2: dict(require_ack=False)}))
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=1))
    result = await engine.escalate(record_id, escalated_by="carol")
    assert result.success and result.record.state == "resolved"
    await engine.advance(DAY)
    assert recorder.timeline() == [(0, "user:l1"), (1, "user:l2")]
