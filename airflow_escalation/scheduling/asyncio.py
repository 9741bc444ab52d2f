"""A scheduler built on one asyncio task: sleep until the earliest wake-up or the check interval."""

from __future__ import annotations

import asyncio
from datetime import datetime

from airflow_escalation.scheduling.base import BaseEscalationScheduler


class AsyncioScheduler(BaseEscalationScheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._task: asyncio.Task | None = None
        self._next: datetime | None = None
        self._changed: asyncio.Event | None = None

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="escalation-scheduler")

    def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _book(self, when: datetime) -> None:
        if self._next is None or when < self._next:
            self._next = when
            if self._changed is not None:
                self._changed.set()

    async def _loop(self) -> None:
        interval = self._config.check_interval_seconds
        while self._running:
            delay = interval
            if self._next is not None:
                delay = min(delay, max(0.0, (self._next - self._clock.now()).total_seconds()))
            self._changed.clear()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=delay)
                    continue  # an earlier wake-up was requested: re-plan the sleep
                except asyncio.TimeoutError:
                    pass
            self._next = None
            await self._sweep()
