"""A lost wake-up loses nothing: an engine that never saw a trigger takes it over by its sweep.

Two engines on one storage (two store objects; one fake clock). A triggers, so only A's scheduler
was told the next due time. When the clock passes it, B's periodic sweep (what a real scheduler
runs every ``check_interval_seconds``; here ``InMemoryScheduler.process_due_jobs``) claims the
record from the store and climbs: exactly once overall, whether A is stopped, idle, or sweeping
at the same moment.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from airflow_escalation.testing import RecordingHandler

from durability_support import L1, L2, L3, POLICY, T0, delivery_rows


async def sweep(*engines) -> None:
    """One safety sweep on each engine, concurrently, then wait for their deliveries."""
    await asyncio.gather(*(e.scheduler.process_due_jobs() for e in engines))
    await asyncio.gather(*(e.drain() for e in engines))


@pytest.mark.parametrize("mode", ["a-stopped", "a-idle", "both-sweep"])
async def test_an_engine_that_never_saw_the_trigger_climbs_by_its_sweep(storage, make_engine, clock, mode):
    sent_a, sent_b = RecordingHandler(clock), RecordingHandler(clock)
    a = await make_engine(storage.open(), sent_a)
    b = await make_engine(storage.open(), sent_b)
    record_id = (await a.trigger("inc-lost", {"severity": "critical"}, POLICY)).record.id
    await a.drain()
    assert sent_a.timeline() == [(0.0, L1)]
    assert a.scheduler.requested == [T0 + timedelta(minutes=15)]
    assert b.scheduler.requested == []  # B was never told: its only way in is the sweep

    if mode == "a-stopped":
        await a.stop()
    clock.set(T0 + timedelta(minutes=20))
    sweepers = (a, b) if mode == "both-sweep" else (b,)
    await sweep(*sweepers)
    if mode == "a-idle":
        await sweep(a)  # A wakes late: the work is done already
    combined = sorted(sent_a.timeline() + sent_b.timeline())
    assert combined == [(0.0, L1), (20.0, L2)]
    if mode != "both-sweep":
        assert sent_b.timeline() == [(20.0, L2)]

    clock.set(T0 + timedelta(minutes=50))  # L3: 30 after L2 fired at 20
    await sweep(*sweepers)
    if mode == "a-idle":
        await sweep(a)
    combined = sorted(sent_a.timeline() + sent_b.timeline())
    assert combined == [(0.0, L1), (20.0, L2), (50.0, L3)]

    clock.set(T0 + timedelta(days=1))
    await sweep(*((a, b) if mode != "a-stopped" else (b,)))
    assert sorted(sent_a.timeline() + sent_b.timeline()) == combined  # nothing else, ever
    assert delivery_rows(b.store, record_id) == [(1, L1, "sent", 1), (2, L2, "sent", 1), (3, L3, "sent", 1)]
    assert b.get_record(record_id).current_level == 3
