"""A scheduler on APScheduler 3.x's AsyncIOScheduler: one date job for the earliest wake-up and
one interval job for the safety sweep.

Both jobs run ``_sweep`` (see :class:`BaseEscalationScheduler`), which lets one sweep run at a
time and books the next wake-up when it ends. APScheduler itself drops a run of a job whose
previous run is still going (``max_instances``), so the jobs allow a second instance: it only
tells the running sweep to go again.
"""

from __future__ import annotations

from datetime import datetime

from airflow_escalation.scheduling.base import BaseEscalationScheduler

_WAKE_JOB = "escalation-wake"
_SWEEP_JOB = "escalation-sweep"
_JOB_OPTIONS = {"coalesce": True, "max_instances": 2, "misfire_grace_time": None}


class APSchedulerScheduler(BaseEscalationScheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._scheduler = None
        self._next: datetime | None = None  # the wake job's run time while it is booked

    def start(self) -> None:
        if self._running:
            return
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        options = {"timezone": "UTC", **self._config.apscheduler_config}
        self._scheduler = AsyncIOScheduler(**options)
        self._scheduler.add_job(
            self._sweep, "interval", seconds=self._config.check_interval_seconds, id=_SWEEP_JOB, **_JOB_OPTIONS
        )
        self._scheduler.start()
        self._running = True
        if self._next is not None:
            self._add_wake(self._next)

    def stop(self) -> None:
        if self._scheduler is not None and self._running:
            self._scheduler.shutdown(wait=False)
        self._running = False

    def _book(self, when: datetime) -> None:
        if self._next is not None and self._next <= when and self._next > self._clock.now():
            return  # an earlier wake-up is already booked
        self._next = when
        if self._running:
            self._add_wake(when)

    def _add_wake(self, when: datetime) -> None:
        self._scheduler.add_job(self._fire, "date", run_date=when, id=_WAKE_JOB, replace_existing=True, **_JOB_OPTIONS)

    async def _fire(self) -> None:
        self._next = None  # APScheduler removed the date job when it went off
        await self._sweep()
