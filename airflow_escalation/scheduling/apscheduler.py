"""A scheduler on APScheduler 3.x's AsyncIOScheduler: one date job for the earliest wake-up and
one interval job for the safety sweep."""

from __future__ import annotations

import logging
from datetime import datetime

from airflow_escalation.scheduling.base import BaseEscalationScheduler

log = logging.getLogger(__name__)

_WAKE_JOB = "escalation-wake"
_SWEEP_JOB = "escalation-sweep"


class APSchedulerScheduler(BaseEscalationScheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._scheduler = None
        self._next: datetime | None = None

    def start(self) -> None:
        if self._running:
            return
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        options = {"timezone": "UTC", **self._config.apscheduler_config}
        self._scheduler = AsyncIOScheduler(**options)
        self._scheduler.add_job(
            self._fire, "interval", seconds=self._config.check_interval_seconds, id=_SWEEP_JOB,
            coalesce=True, max_instances=1, misfire_grace_time=None,
        )
        self._scheduler.start()
        self._running = True
        if self._next is not None:
            self._add_wake(self._next)

    def stop(self) -> None:
        if self._scheduler is not None and self._running:
            self._scheduler.shutdown(wait=False)
        self._running = False

    def wake_at(self, when: datetime) -> None:
        if self._next is not None and self._next <= when and self._next > self._clock.now():
            return  # an earlier wake-up is already booked
        self._next = when
        if self._running:
            self._add_wake(when)

    def _add_wake(self, when: datetime) -> None:
        self._scheduler.add_job(
            self._fire, "date", run_date=when, id=_WAKE_JOB, replace_existing=True,
            coalesce=True, max_instances=1, misfire_grace_time=None,
        )

    async def _fire(self) -> None:
        self._next = None
        try:
            await self._callback()
        except Exception:
            log.exception("escalation sweep failed; the interval sweep retries")
