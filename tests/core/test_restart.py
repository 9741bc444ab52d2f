"""The store is the truth: a restarted engine sweeps what came due, once (semantics 12)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from airflow_escalation import DeliveryState, InMemoryEscalationStore
from core_support import CRIT, SEED, SEED_L1, SEED_L2, SEED_L3, T0, at, ladder, seed_policy

DAY = timedelta(hours=24)


async def test_restart_after_level_two_was_due_delivers_it_exactly_once(make_engine, recorder, clock):
    store = InMemoryEscalationStore()
    a = await make_engine(seed_policy(), store=store)
    record_id = (await a.trigger("inc", CRIT, SEED)).record.id
    await a.stop()
    assert recorder.timeline() == at(0, SEED_L1)  # stop() drained the first round

    clock.set(T0 + timedelta(minutes=16))  # nobody ran at 5, 10 (repeats) or 15 (L2)
    b = await make_engine(seed_policy(), store=store)  # start() sweeps
    await b.drain()  # start() queued the deliveries; wait for them to go out
    assert b.get_record(record_id).current_level == 2
    assert recorder.timeline() == at(0, SEED_L1) + at(16, SEED_L2)
    await b.advance(DAY)

    # missed repeats are not sent in a burst; L3 counts from when L2 really fired
    assert recorder.timeline() == at(0, SEED_L1) + at(16, SEED_L2) + at(46, SEED_L3)
    record = b.get_record(record_id)
    assert record.current_level == 3 and record.notification_count == 6
    assert all(d.state is DeliveryState.SENT for d in b.get_deliveries(record_id))


async def test_restart_between_repeats_resumes_the_schedule(make_engine, recorder, clock):
    store = InMemoryEscalationStore()
    a = await make_engine(seed_policy(), store=store)
    await a.trigger("inc", CRIT, SEED)
    await a.advance(timedelta(minutes=6))
    await a.stop()
    clock.advance(timedelta(minutes=1))  # t = 7, nothing was due in between
    b = await make_engine(seed_policy(), store=store)
    await b.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(45, SEED_L3)


async def test_restarted_engine_needs_no_policy_registered(make_engine, recorder, clock):
    store = InMemoryEscalationStore()
    a = await make_engine(seed_policy(), store=store)
    await a.trigger("inc", CRIT, SEED)
    await a.stop()
    clock.set(T0 + timedelta(minutes=20))
    b = await make_engine(store=store)  # the record's policy snapshot drives it
    await b.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(20, SEED_L2) + at(50, SEED_L3)


async def test_restarted_engine_uses_the_snapshot_not_a_changed_policy(make_engine, recorder, clock):
    store = InMemoryEscalationStore()
    a = await make_engine(seed_policy(), store=store)
    await a.trigger("inc", CRIT, SEED)
    await a.stop()
    clock.set(T0 + timedelta(minutes=20))
    b = await make_engine(ladder(SEED, delays=(0, 1, 1), severity_filter=["critical"]), store=store)
    await b.advance(DAY)
    assert recorder.timeline() == at(0, SEED_L1) + at(20, SEED_L2) + at(50, SEED_L3)


async def test_two_engines_starting_together_deliver_once(make_engine, recorder, clock):
    store = InMemoryEscalationStore()
    a = await make_engine(seed_policy(), store=store)
    await a.trigger("inc", CRIT, SEED)
    await a.stop()
    clock.set(T0 + timedelta(minutes=16))
    b = await make_engine(seed_policy(), store=store, start=False)
    c = await make_engine(seed_policy(), store=store, start=False)
    await asyncio.gather(b.start(), c.start())
    await asyncio.gather(b.drain(), c.drain())
    assert recorder.timeline() == at(0, SEED_L1) + at(16, SEED_L2)
    await b.advance(timedelta(minutes=30))
    await c.advance(timedelta(0))
    assert recorder.timeline() == at(0, SEED_L1) + at(16, SEED_L2) + at(46, SEED_L3)


async def test_restart_of_a_record_still_waiting_to_start(make_engine, recorder, clock):
    store = InMemoryEscalationStore()
    a = await make_engine(ladder(delays=(10, 5)), store=store)
    await a.trigger("inc", {}, "ladder")
    await a.stop()
    clock.set(T0 + timedelta(minutes=30))
    b = await make_engine(store=store)
    await b.advance(DAY)
    # started late at 30; L2 counts from then
    assert recorder.timeline() == [(30, "user:l1"), (35, "user:l2")]


async def test_pending_retry_survives_a_restart(make_engine, clock):
    from airflow_escalation.testing import RecordingHandler

    store = InMemoryEscalationStore()
    failing = RecordingHandler(clock, fail_targets={"user:l1"})
    a = await make_engine(
        ladder(delays=(0,)), store=store, handler=failing, scheduler_config=dict(retry_delay_seconds=60, max_attempts=3)
    )
    record_id = (await a.trigger("inc", {}, "ladder")).record.id
    await a.stop()
    clock.set(T0 + timedelta(minutes=5))
    working = RecordingHandler(clock, start=T0)
    b = await make_engine(store=store, handler=working, scheduler_config=dict(retry_delay_seconds=60, max_attempts=3))
    await b.advance(DAY)
    assert working.timeline() == [(5, "user:l1")]
    [delivery] = b.get_deliveries(record_id)
    assert delivery.state is DeliveryState.SENT and delivery.attempts == 2
