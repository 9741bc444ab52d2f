"""The real schedulers (asyncio, APScheduler) on the real clock: no wake-up is lost.

The safety sweep is set to an hour, so anything that happens within a test was woken by a booked
wake-up; a lost one shows as the test's wait running out (``WAIT``, a failure bound, not a speed
check).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from airflow_escalation import (
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    SchedulerConfig,
)
from airflow_escalation.core.clock import SYSTEM_CLOCK
from airflow_escalation.scheduling import create_scheduler

WAIT = 10  # seconds before a wake-up counts as lost
NO_SAFETY_SWEEP = 3600
SCHEDULERS = ["asyncio", "apscheduler"]


class Sweeps:
    """A wake callback that counts its calls and runs ``during(call_number)`` inside each."""

    def __init__(self, during=None) -> None:
        self.calls = 0
        self.during = during
        self.running = 0
        self.most_at_once = 0
        self._changed = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.during is not None:
                await self.during(self.calls)
        finally:
            self.running -= 1
            self._changed.set()

    async def wait_for_calls(self, count: int) -> None:
        async def reached() -> None:
            while self.calls < count or self.running:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reached(), WAIT)


def started(kind: str, callback) -> object:
    scheduler = create_scheduler(
        SchedulerConfig(scheduler_type=kind, check_interval_seconds=NO_SAFETY_SWEEP), callback, SYSTEM_CLOCK
    )
    scheduler.start()
    return scheduler


@pytest.mark.parametrize("kind", SCHEDULERS)
async def test_a_wake_booked_during_a_sweep_that_falls_due_before_it_ends_is_honoured(kind):
    async def first_sweep_books_a_wake_it_outlives(call: int) -> None:
        if call == 1:
            scheduler.wake_at(SYSTEM_CLOCK.now() + timedelta(milliseconds=20))
            await asyncio.sleep(0.2)  # still sweeping when that wake-up falls due

    sweeps = Sweeps(first_sweep_books_a_wake_it_outlives)
    scheduler = started(kind, sweeps)
    try:
        scheduler.wake_at(SYSTEM_CLOCK.now())
        await sweeps.wait_for_calls(2)
        assert sweeps.most_at_once == 1
    finally:
        scheduler.stop()


@pytest.mark.parametrize("kind", SCHEDULERS)
async def test_a_wake_booked_during_a_sweep_for_after_it_is_honoured(kind):
    async def first_sweep_books_a_later_wake(call: int) -> None:
        if call == 1:
            scheduler.wake_at(SYSTEM_CLOCK.now() + timedelta(milliseconds=150))
            scheduler.wake_at(SYSTEM_CLOCK.now() + timedelta(seconds=600))  # a later one does not replace it

    sweeps = Sweeps(first_sweep_books_a_later_wake)
    scheduler = started(kind, sweeps)
    try:
        scheduler.wake_at(SYSTEM_CLOCK.now())
        await sweeps.wait_for_calls(2)
    finally:
        scheduler.stop()


@pytest.mark.parametrize("kind", SCHEDULERS)
async def test_wakes_booked_just_ahead_of_a_sweep_are_each_honoured(kind):
    """A wake-up a few milliseconds after a sweep is waited for by the sweep itself; one asked
    for while it waits (here: at once, then again just ahead) is honoured too."""

    async def book_just_ahead(call: int) -> None:
        if call == 1:
            scheduler.wake_at(SYSTEM_CLOCK.now() + timedelta(milliseconds=30))

    sweeps = Sweeps(book_just_ahead)
    scheduler = started(kind, sweeps)
    try:
        scheduler.wake_at(SYSTEM_CLOCK.now())
        await sweeps.wait_for_calls(2)
        scheduler.wake_at(SYSTEM_CLOCK.now() + timedelta(milliseconds=20))
        await sweeps.wait_for_calls(3)
        assert sweeps.most_at_once == 1
    finally:
        scheduler.stop()


@pytest.mark.parametrize("kind", SCHEDULERS)
async def test_a_wake_booked_before_a_sweep_and_due_during_it_runs_another_sweep(kind):
    async def slow_first_sweep(call: int) -> None:
        if call == 1:
            await asyncio.sleep(0.2)

    sweeps = Sweeps(slow_first_sweep)
    scheduler = started(kind, sweeps)
    try:
        scheduler.wake_at(SYSTEM_CLOCK.now())
        while sweeps.running == 0:
            await asyncio.sleep(0.005)
        scheduler.wake_at(SYSTEM_CLOCK.now() + timedelta(milliseconds=30))  # mid-sweep: kept for after it
        await sweeps.wait_for_calls(2)
        assert sweeps.most_at_once == 1
    finally:
        scheduler.stop()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("kind", SCHEDULERS)
async def test_a_burst_larger_than_a_batch_drains_without_the_safety_sweep(kind, store, tmp_path):
    """23 escalations whose level 2 falls due together, batches of 5, triggered in three waves
    so that later ones fall due while earlier ones are being swept."""
    burst = 23
    level2 = asyncio.Event()
    reached: list[str] = []

    def handler(record, level, targets):
        if level.level == 2:
            reached.append(record.incident_id)
            if len(reached) == burst:
                level2.set()
        return True

    store_config = {"db_path": str(tmp_path / "burst.db")} if store == "sqlite" else {}
    engine = EscalationEngine(
        EscalationEngineConfig(
            store_type=store,
            store_config=store_config,
            default_notification_handler=handler,
            scheduler_config=SchedulerConfig(scheduler_type=kind, check_interval_seconds=NO_SAFETY_SWEEP, batch_size=5),
        )
    )
    engine.register_policy(
        EscalationPolicy(
            name="burst",
            levels=[
                EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.user("first")]),
                EscalationLevel(level=2, delay_minutes=0.3 / 60, targets=[EscalationTarget.user("second")]),
            ],
        )
    )
    await engine.start()
    try:
        for wave in (range(10), range(10, 17), range(17, burst)):
            results = await asyncio.gather(*(engine.trigger(f"incident-{i}", {}, "burst") for i in wave))
            assert all(r.success for r in results)
            await asyncio.sleep(0.05)
        await asyncio.wait_for(level2.wait(), WAIT)
        assert sorted(reached) == sorted(f"incident-{i}" for i in range(burst))  # each once
    finally:
        await engine.stop(timeout=5)
