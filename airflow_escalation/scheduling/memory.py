"""A passive scheduler for tests: it never fires by itself; ``engine.advance`` drives time."""

from __future__ import annotations

from datetime import datetime

from airflow_escalation.scheduling.base import BaseEscalationScheduler


class InMemoryScheduler(BaseEscalationScheduler):
    """Remembers requested wake-ups; the fake clock's ``engine.advance`` walks the store's due times."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requested: list[datetime] = []

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False

    def _book(self, when: datetime) -> None:
        self.requested.append(when)

    async def process_due_jobs(self) -> None:
        """Run the wake callback once now (what a real scheduler does at a due time)."""
        if self._callback is not None:
            await self._callback()
