"""Helpers for testing escalation policies on a fake clock.

clock = FakeClock(datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc))
sent = RecordingHandler(clock)
engine = EscalationEngine(EscalationEngineConfig(clock=clock, default_notification_handler=sent))
engine.register_policy(policy)
await engine.start()
await engine.trigger("incident-1", {"severity": "critical"}, "critical_alerts")
await engine.advance(timedelta(hours=1))
assert sent.timeline() == [(0, "user:lead"), (15, "user:manager"), (45, "user:director")]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_escalation.core.clock import Clock, FakeClock
from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

__all__ = ["FakeClock", "Notification", "RecordingHandler"]


@dataclass(frozen=True)
class Notification:
    at: datetime
    record_id: str
    incident_id: str
    level: int
    target: str  # EscalationTarget.key, e.g. "user:lead"


class RecordingHandler:
    """A notification handler that records who was told what, when (by the engine's clock)."""

    def __init__(self, clock: Clock, start: datetime | None = None, fail_targets: set[str] | None = None) -> None:
        self.clock = clock
        self.start = start or clock.now()
        self.sent: list[Notification] = []
        self.fail_targets = set(fail_targets or ())

    async def __call__(self, record: EscalationRecord, level: EscalationLevel, targets: list[EscalationTarget]) -> Any:
        for target in targets:
            if target.key in self.fail_targets:
                raise ConnectionError(f"{target.key} is unreachable")
            self.sent.append(Notification(self.clock.now(), record.id, record.incident_id, level.level, target.key))
        return True

    def timeline(self, incident_id: str | None = None) -> list[tuple[float, str]]:
        """``(minutes since start, target key)`` for each notification, in order."""
        return sorted(
            ((n.at - self.start).total_seconds() / 60, n.target)
            for n in self.sent
            if incident_id is None or n.incident_id == incident_id
        )

    def clear(self) -> None:
        self.sent.clear()
