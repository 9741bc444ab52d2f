"""Silences and maintenance windows: when not to page.

A **silence** (created at run time) has matchers, ``[starts_at, ends_at)``, a comment and who
created it. It matches an escalation when *every* matcher it sets matches: ``dag_id``,
``task_id``, ``policy`` and ``severity`` exactly (severity in any case), ``incident`` as a glob
(``billing_*``; ``*``, ``?`` and ``[abc]``, case-sensitive). A silence with no matcher is refused.

A **maintenance window** (in the policies file) recurs: it opens at every time its cron
expression names, in its time zone, and stays open ``duration_minutes`` of elapsed time. It
matches an escalation whose DAG is one of its ``dag_ids`` or whose policy is one of its
``policies``.

Both are active on ``[start, end)``: at ``end`` exactly they no longer are. What an active one
does is decided in :mod:`airflow_escalation.oncall.runtime` (docs/oncall.md, "Silence rules").
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from pydantic import Field, field_validator, model_validator

from airflow_escalation.core import bounds
from airflow_escalation.core.models import dag_id_of
from airflow_escalation.oncall._base import (
    NAME_PATTERN,
    Model,
    Time,
    aware_utc,
    check_zone,
    from_wall_clock,
    wall_clock,
    zone,
)


@dataclass(frozen=True)
class Subject:
    """What silences and windows match on: an escalation's DAG, task, policy, incident, severity."""

    dag_id: str | None
    task_id: str | None
    policy: str
    incident_id: str
    severity: str | None

    @classmethod
    def of(cls, context: dict[str, Any] | None, policy: str, incident_id: str) -> Subject:
        context = context or {}
        task_id = context.get("task_id")
        severity = context.get("severity")
        return cls(
            dag_id=dag_id_of(context),
            task_id=task_id if isinstance(task_id, str) else None,
            policy=policy,
            incident_id=incident_id,
            severity=str(severity).lower() if severity is not None else None,
        )


@dataclass(frozen=True)
class Suppression:
    """The silence or window that suppresses an escalation now."""

    kind: str  # "silence" or "maintenance_window"
    id: str
    comment: str
    ends_at: Time

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "comment": self.comment, "ends_at": self.ends_at.isoformat()}


# ----------------------------------------------------------------------------- silences


class Matchers(Model):
    dag_id: str | None = Field(default=None, min_length=1, max_length=bounds.MAX_NAME)
    task_id: str | None = Field(default=None, min_length=1, max_length=bounds.MAX_NAME)
    policy: str | None = Field(default=None, min_length=1, max_length=bounds.MAX_NAME)
    incident: str | None = Field(default=None, min_length=1, max_length=bounds.MAX_NAME)
    severity: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("severity")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _some(self) -> Matchers:
        if not any(self.model_dump().values()):
            raise ValueError("give at least one matcher (dag_id, task_id, policy, incident, severity)")
        return self

    def matches(self, subject: Subject) -> bool:
        if self.dag_id is not None and subject.dag_id != self.dag_id:
            return False
        if self.task_id is not None and subject.task_id != self.task_id:
            return False
        if self.policy is not None and subject.policy != self.policy:
            return False
        if self.severity is not None and subject.severity != self.severity:
            return False
        return self.incident is None or fnmatch.fnmatchcase(subject.incident_id, self.incident)


class Silence(Model):
    id: str = Field(min_length=1, max_length=64)
    matchers: Matchers
    starts_at: Time
    ends_at: Time
    comment: str = Field(default="", max_length=bounds.MAX_NOTE)
    created_by: str = Field(default="", max_length=bounds.MAX_NAME)
    created_at: Time

    @field_validator("starts_at", "ends_at", "created_at")
    @classmethod
    def _aware(cls, value: datetime, info: Any) -> datetime:
        return aware_utc(value, info.field_name)

    @model_validator(mode="after")
    def _span(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at: must be after starts_at")
        if self.ends_at - self.starts_at > timedelta(days=bounds.MAX_ONCALL_SPAN_DAYS):
            raise ValueError(f"ends_at: a silence lasts at most {bounds.MAX_ONCALL_SPAN_DAYS} days")
        return self

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def status(self, at: datetime) -> str:
        return "pending" if at < self.starts_at else ("active" if at < self.ends_at else "expired")

    def suppression(self) -> Suppression:
        return Suppression("silence", self.id, self.comment, self.ends_at)


# ------------------------------------------------------------------- maintenance windows


_DST_MARGIN = timedelta(hours=3)  # more than any zone's DST shift
_MAX_CRON_STEPS = 10_000


class MaintenanceWindow(Model):
    name: str = Field(pattern=NAME_PATTERN)
    cron: str = Field(min_length=9, max_length=120)
    duration_minutes: int = Field(ge=1, le=bounds.MAX_WINDOW_MINUTES)
    time_zone: str = Field(default="UTC", max_length=64)
    dag_ids: tuple[str, ...] = Field(default=(), max_length=bounds.MAX_WINDOW_SCOPE)
    policies: tuple[str, ...] = Field(default=(), max_length=bounds.MAX_WINDOW_SCOPE)
    comment: str = Field(default="", max_length=bounds.MAX_NOTE)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter  # type: ignore[import-untyped]

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a 5-field cron expression: {value[:60]!r}")
        return value

    @model_validator(mode="after")
    def _scoped(self) -> MaintenanceWindow:
        if not self.dag_ids and not self.policies:
            raise ValueError("dag_ids: a maintenance window needs dag_ids or policies")
        return self

    @cached_property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)

    def applies_to(self, subject: Subject) -> bool:
        return subject.dag_id in self.dag_ids or subject.policy in self.policies

    def _cron(self, local: datetime) -> Any:
        from croniter import croniter

        return croniter(self.cron, local)

    def opened_before(self, at: datetime) -> datetime:
        """The latest opening at or before ``at`` (aware UTC).

        The cron expression is read on the zone's wall clock; each wall-clock time it names
        becomes a moment by :func:`~airflow_escalation.oncall._base.from_wall_clock` (a time in
        a spring-forward gap opens at the gap's end plus its offset, 02:30 → 03:30; a time that
        happens twice opens at its second occurrence). A few hours' margin around ``at`` lets
        those shifts be seen."""
        tz = zone(self.time_zone)
        it = self._cron(wall_clock(at, tz).replace(microsecond=0) + _DST_MARGIN)
        for _ in range(_MAX_CRON_STEPS):
            opened = from_wall_clock(it.get_prev(datetime), tz)
            if opened <= at:
                return opened
        raise ValueError(f"maintenance window {self.name!r}: no opening found before {at.isoformat()}")

    def open_window(self, at: datetime) -> tuple[datetime, datetime] | None:
        """``(opened, closes)`` when the window is open at ``at``, else None."""
        opened = self.opened_before(at)
        closes = opened + self.duration
        return (opened, closes) if opened <= at < closes else None

    def openings(self, start: datetime, end: datetime, limit: int = 50) -> list[tuple[datetime, datetime]]:
        """Windows that are open at some moment of ``[start, end)``, in order (at most ``limit``)."""
        tz = zone(self.time_zone)
        found: list[tuple[datetime, datetime]] = []
        current = self.open_window(start)
        if current is not None:
            found.append(current)
        it = self._cron(wall_clock(start, tz).replace(microsecond=0) - _DST_MARGIN)
        for _ in range(_MAX_CRON_STEPS):
            opened = from_wall_clock(it.get_next(datetime), tz)
            if opened >= end or len(found) >= limit:
                break
            if opened > start and (not found or opened > found[-1][0]):
                found.append((opened, opened + self.duration))
        return found

    def suppression(self, closes: datetime) -> Suppression:
        return Suppression("maintenance_window", self.name, self.comment, closes)
