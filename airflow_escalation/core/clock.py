"""Injectable clocks: the system clock, and a fake one tests move by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow_escalation.core.timeutil import UTC, ensure_aware


class Clock:
    """The real clock: aware UTC now."""

    is_fake = False

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock(Clock):
    """A clock that only moves when told to (``advance``/``set``); starts at an aware datetime."""

    is_fake = True

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError(f"FakeClock start must be timezone-aware, got naive {start!r}")
        self._now = ensure_aware(start) if start else datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        when = ensure_aware(when)
        if when < self._now:
            raise ValueError(f"a clock does not run backwards: {when} < {self._now}")
        self._now = when

    def advance(self, delta: timedelta) -> datetime:
        self.set(self._now + delta)
        return self._now


SYSTEM_CLOCK = Clock()
