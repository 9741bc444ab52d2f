"""Shared builders for the tests/core suite (policies, expected timelines, small handlers)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_escalation import (
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    EscalationTrigger,
)

UTC = timezone.utc
# A Monday, 09:00 UTC: inside default business hours in UTC.
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CRIT = {"severity": "critical"}
SEED = "production_critical"

# The spec's complete example, never acknowledged: (minute, target key), sorted as
# RecordingHandler.timeline() sorts them.
SEED_L1 = ["channel:#alerts", "user:team-lead"]
SEED_L2 = ["schedule:oncall-primary", "user:eng-manager"]
SEED_L3 = ["email:leadership@company.com", "user:director"]


def at(minute: float, keys: list[str]) -> list[tuple[float, str]]:
    return [(float(minute), k) for k in keys]


SEED_TIMELINE = at(0, SEED_L1) + at(5, SEED_L1) + at(10, SEED_L1) + at(15, SEED_L2) + at(45, SEED_L3)


def seed_levels(**l1_overrides: Any) -> list[EscalationLevel]:
    l1 = dict(
        level=1,
        delay_minutes=0,
        targets=[
            EscalationTarget.user("team-lead", "Team Lead"),
            EscalationTarget.channel("#alerts", "Alerts Channel"),
        ],
        repeat_count=2,
        repeat_interval_minutes=5,
    )
    l1.update(l1_overrides)
    return [
        EscalationLevel(**l1),
        EscalationLevel(
            level=2,
            delay_minutes=15,
            targets=[
                EscalationTarget.user("eng-manager", "Engineering Manager"),
                EscalationTarget.schedule("oncall-primary", "Primary On-call"),
            ],
        ),
        EscalationLevel(
            level=3,
            delay_minutes=30,
            targets=[
                EscalationTarget.user("director", "Director of Engineering"),
                EscalationTarget.email("leadership@company.com", "Leadership"),
            ],
        ),
    ]


def seed_policy(**overrides: Any) -> EscalationPolicy:
    """The spec's ``production_critical`` example policy (overrides replace its fields)."""
    kwargs: dict[str, Any] = dict(
        name=SEED,
        description="Production critical alerts",
        levels=seed_levels(),
        triggers=[EscalationTrigger.UNACKNOWLEDGED],
        severity_filter=["critical", "high"],
        cooldown_minutes=60,
    )
    kwargs.update(overrides)
    return EscalationPolicy(**kwargs)


def ladder(
    name: str = "ladder",
    delays: tuple[float, ...] = (0, 15, 30),
    level_kwargs: dict[int, dict] | None = None,
    **policy_kwargs: Any,
) -> EscalationPolicy:
    """A policy whose level n notifies only ``user:l<n>``, after ``delays[n-1]`` minutes."""
    level_kwargs = level_kwargs or {}
    levels = [
        EscalationLevel(
            **{"level": n, "delay_minutes": d, "targets": [EscalationTarget.user(f"l{n}")], **level_kwargs.get(n, {})}
        )
        for n, d in enumerate(delays, start=1)
    ]
    return EscalationPolicy(name=name, levels=levels, **policy_kwargs)


def minutes_since(start: datetime, when: datetime) -> float:
    return (when - start).total_seconds() / 60


class AttemptLog:
    """Wraps a handler and records every attempt (minute since start, target key), failed or not."""

    def __init__(self, inner: Any, clock: Any, start: datetime | None = None) -> None:
        self.inner = inner
        self.clock = clock
        self.start = start or clock.now()
        self.attempts: list[tuple[float, str]] = []

    async def __call__(self, record, level, targets):
        for t in targets:
            self.attempts.append((minutes_since(self.start, self.clock.now()), t.key))
        return await self.inner(record, level, targets)


class OverlapCounter:
    """A handler that sleeps and tracks how many calls overlap (real clock)."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep
        self.current = 0
        self.max_overlap = 0
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, record, level, targets):
        self.current += 1
        self.max_overlap = max(self.max_overlap, self.current)
        try:
            await asyncio.sleep(self.sleep)
        finally:
            self.current -= 1
        for t in targets:
            self.calls.append((record.incident_id, t.key))
        return True


__all__ = [
    "CRIT",
    "SEED",
    "SEED_L1",
    "SEED_L2",
    "SEED_L3",
    "SEED_TIMELINE",
    "T0",
    "UTC",
    "AttemptLog",
    "OverlapCounter",
    "at",
    "ladder",
    "minutes_since",
    "seed_levels",
    "seed_policy",
    "timedelta",
]
