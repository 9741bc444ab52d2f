"""The scheduler contract: a scheduler only wakes the engine.

The store holds every due time; a scheduler is told the earliest one (``wake_at``) and calls the
engine's wake callback then, and also every ``check_interval_seconds`` as a safety sweep that
catches a wake-up lost to a restart or to another replica's write.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Awaitable, Callable

from airflow_escalation.core.clock import SYSTEM_CLOCK, Clock

WakeCallback = Callable[[], Awaitable[Any]]

log = logging.getLogger(__name__)

# A wake-up this close after a sweep is waited for by the sweep itself (an event-loop timer)
# rather than booked with the scheduler: under a steady stream of due steps, booking one job per
# step (APScheduler) costs more than the steps.
_NAP_SECONDS = 0.1


class SchedulerType(str, Enum):
    MEMORY = "memory"
    ASYNCIO = "asyncio"
    APSCHEDULER = "apscheduler"


@dataclass
class SchedulerConfig:
    """How the engine is woken and how it delivers.

    ``max_concurrent_jobs`` bounds concurrent deliveries; ``job_timeout_seconds`` is one delivery
    attempt's time limit; a failed attempt is retried after ``retry_delay_seconds`` doubling each
    time (capped at ``max_retry_delay_seconds``) up to ``max_attempts`` attempts.
    """

    scheduler_type: SchedulerType | str = SchedulerType.ASYNCIO
    check_interval_seconds: float = 10
    max_concurrent_jobs: int = 100
    job_timeout_seconds: float = 30
    retry_delay_seconds: float = 30
    max_retry_delay_seconds: float = 900
    max_attempts: int = 5
    lease_seconds: float = 120
    batch_size: int = 200
    cleanup_interval_seconds: float = 3600
    apscheduler_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.scheduler_type = SchedulerType(self.scheduler_type)
        except ValueError:
            allowed = ", ".join(t.value for t in SchedulerType)
            raise ValueError(f"scheduler_type: unknown value {self.scheduler_type!r} (allowed: {allowed})") from None
        for name in ("check_interval_seconds", "job_timeout_seconds", "lease_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("max_concurrent_jobs", "max_attempts", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)!r}")


class BaseEscalationScheduler(ABC):
    """Wakes ``callback`` at the earliest time it was told, and every check interval.

    A subclass arms its timer in ``_book`` and runs ``_sweep`` when it goes off. ``_sweep`` holds
    the rule that no wake-up is lost: one sweep runs at a time; a wake-up asked for while it runs
    is kept and booked when it ends, and one already due (or a timer going off meanwhile) makes
    the sweep run again at once, because the running sweep looked at the store before that time.
    """

    def __init__(
        self, config: SchedulerConfig | None = None, callback: WakeCallback | None = None, clock: Clock | None = None
    ) -> None:
        self._config = config or SchedulerConfig()
        self._callback = callback
        self._clock = clock or SYSTEM_CLOCK
        self._running = False
        self._sweeping = False
        self._wanted: datetime | None = None  # the earliest wake-up asked for during this sweep
        self._nap: asyncio.Future | None = None  # the sweep waiting for a wake-up close ahead

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @property
    def is_running(self) -> bool:
        return self._running

    def set_callback(self, callback: WakeCallback) -> None:
        self._callback = callback

    @abstractmethod
    def start(self) -> None:
        """Begin waking (called from inside the running event loop)."""

    @abstractmethod
    def stop(self) -> None: ...

    def wake_at(self, when: datetime) -> None:
        """Make sure the callback runs at ``when`` (or now, if it has passed)."""
        if self._sweeping:
            if self._wanted is None or when < self._wanted:
                self._wanted = when
                if self._nap is not None and not self._nap.done():
                    self._nap.set_result(None)  # earlier than the sweep is waiting for: re-plan
            return
        self._book(when)

    @abstractmethod
    def _book(self, when: datetime) -> None:
        """Arm the timer to run ``_sweep`` at ``when`` unless it goes off earlier already."""

    async def _sweep(self) -> None:
        """Run the callback, again at once while work it could not see is due (or within
        ``_NAP_SECONDS``, after waiting for it), then book the earliest wake-up asked for meanwhile."""
        if self._sweeping:  # a timer went off during the sweep: run once more after it
            self.wake_at(self._clock.now())
            return
        self._sweeping = True
        try:
            while True:
                self._wanted = None
                try:
                    await self._callback()
                except Exception:  # the scheduler must outlive a failed sweep; the next one retries
                    log.exception("escalation sweep failed; retrying in %ss", self._config.check_interval_seconds)
                while True:
                    wanted = self._wanted
                    if wanted is None or not self._running:
                        return
                    wait = (wanted - self._clock.now()).total_seconds()
                    if wait <= 0:
                        break
                    if wait > _NAP_SECONDS:
                        self._sweeping = False
                        self._book(wanted)
                        return
                    await self._wait(wait)
                await asyncio.sleep(0)  # let deliveries and requests run between sweeps
        finally:
            self._sweeping = False

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if an earlier wake-up is asked for meanwhile."""
        loop = asyncio.get_running_loop()
        self._nap = nap = loop.create_future()
        timer = loop.call_later(seconds, lambda: nap.done() or nap.set_result(None))
        try:
            await nap
        finally:
            timer.cancel()
            self._nap = None
