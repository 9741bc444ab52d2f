"""Schedules: who is on call at a moment, and when that changes.

A schedule is layers over a final fallback, with overrides on top:

- a **rotation** hands the shift from one participant to the next every ``shift_length``
  ``hours``/``days``/``weeks``. The first shift starts at the anchor: ``start``'s date (moved
  forward to ``handoff_weekday`` when one is given) at ``handoff_time`` (default: ``start``'s time
  of day, else 00:00), in the rotation's time zone; before the anchor the rotation has nobody.
  ``days`` and ``weeks`` shifts hand off at the same *wall-clock* time every time (09:00 stays
  09:00 across a DST change, so that shift is an hour shorter or longer); ``hours`` shifts are
  elapsed time (a 12-hour shift is 12 real hours). A handoff time that does not exist on the day
  (a spring-forward gap) happens at the first moment that exists after it (02:30 → 03:30).
- a **layer** is a rotation, optionally restricted to times of day on some weekdays (in the
  rotation's zone). Outside its restrictions a layer has nobody.
- **layers** are listed bottom to top: the highest layer that has somebody at a moment wins.
- an **override** (created at run time) puts a user on call for ``[start, end)``; it beats every
  layer. Among overlapping overrides the one created last wins.
- the **fallback** user is on call when no override and no layer has anybody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property
from itertools import pairwise
from typing import Any, Iterable, Literal, Sequence

from pydantic import Field, field_validator, model_validator

from airflow_escalation.core import bounds
from airflow_escalation.oncall._base import (
    from_wall_clock,
    to_utc,
    wall_clock,
    Time,
    NAME_PATTERN,
    WEEKDAYS,
    Model,
    aware_utc,
    check_unique,
    check_zone,
    parse_hhmm,
    weekday_index,
    zone,
)

ShiftUnit = Literal["hours", "days", "weeks"]
_MAX_STEPS = 100_000  # bound on the loops that walk shifts (a year of hourly shifts is 8,760)


def _at_wall_clock(day: date, at: time, tz: Any) -> datetime:
    return from_wall_clock(datetime.combine(day, at), tz)


# ----------------------------------------------------------------------------- rotation


class Rotation(Model):
    """Participants (user ids) taking turns; see the module docstring for the arithmetic."""

    participants: tuple[str, ...] = Field(min_length=1, max_length=bounds.MAX_PARTICIPANTS)
    shift_length: int = Field(default=1, ge=1, le=bounds.MAX_SHIFT_HOURS)
    shift_unit: ShiftUnit = "weeks"
    start: date | datetime
    handoff_time: str | None = None
    handoff_weekday: str | None = None
    time_zone: str | None = Field(default=None, max_length=64)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else check_zone(value)

    @field_validator("handoff_time", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):  # YAML reads 09:00 as 540 (sexagesimal)
            value = f"{value // 60:02d}:{value % 60:02d}"
        parse_hhmm(value)
        return str(value).strip()

    @field_validator("handoff_weekday")
    @classmethod
    def _weekday(cls, value: str | None) -> str | None:
        return None if value is None else WEEKDAYS[weekday_index(value)]

    @model_validator(mode="after")
    def _coherent(self) -> Rotation:
        hours = self.shift_length * {"hours": 1, "days": 24, "weeks": 24 * 7}[self.shift_unit]
        if hours > bounds.MAX_SHIFT_HOURS:
            raise ValueError(f"shift_length: a shift may last at most {bounds.MAX_SHIFT_HOURS} hours, got {hours}")
        if isinstance(self.start, datetime) and self.handoff_time is not None:
            given = parse_hhmm(self.handoff_time) or time()
            if (self.start.hour, self.start.minute) != (given.hour, given.minute):
                raise ValueError("handoff_time: differs from start's time of day (give one of them)")
        if isinstance(self.start, datetime) and self.start.tzinfo is not None:
            raise ValueError("start: give a local date or date-time; the zone is time_zone's")
        return self

    def with_zone(self, fallback: str) -> Rotation:
        return self if self.time_zone else self.model_copy(update={"time_zone": fallback})

    @cached_property
    def tz(self) -> Any:
        return zone(self.time_zone or "UTC")

    @cached_property
    def anchor_wall_clock(self) -> datetime:
        """The wall-clock time the first shift (``participants[0]``) starts at (naive, the zone's)."""
        if isinstance(self.start, datetime):
            day, at = self.start.date(), self.start.time().replace(second=0, microsecond=0)
        else:
            day, at = self.start, time()
        if self.handoff_time is not None:
            at = parse_hhmm(self.handoff_time) or time()
        if self.handoff_weekday is not None:
            day += timedelta(days=(weekday_index(self.handoff_weekday) - day.weekday()) % 7)
        return datetime.combine(day, at)

    @cached_property
    def anchor(self) -> datetime:
        """When the first shift starts (aware UTC)."""
        wall = self.anchor_wall_clock
        return from_wall_clock(wall, self.tz)

    def handoff(self, index: int) -> datetime:
        """When shift ``index`` starts (shift 0 at the anchor), as aware UTC."""
        if self.shift_unit == "hours":
            return self.anchor + timedelta(hours=index * self.shift_length)
        days = index * self.shift_length * (7 if self.shift_unit == "weeks" else 1)
        local = self.anchor_wall_clock + timedelta(days=days)  # wall-clock arithmetic
        return from_wall_clock(local, self.tz)

    def shift_index(self, at: datetime) -> int | None:
        """The shift running at ``at`` (None before the anchor)."""
        if at < self.anchor:
            return None
        if self.shift_unit == "hours":
            return int((at - self.anchor) // timedelta(hours=self.shift_length))
        days = self.shift_length * (7 if self.shift_unit == "weeks" else 1)
        index = (wall_clock(at, self.tz) - self.anchor_wall_clock) // timedelta(days=days)
        for _ in range(3):  # the wall-clock estimate is off by one at most, around a DST change
            if self.handoff(index) > at:
                index -= 1
            elif self.handoff(index + 1) <= at:
                index += 1
            else:
                break
        return max(index, 0)

    def on_call(self, at: datetime) -> str | None:
        index = self.shift_index(at)
        return None if index is None else self.participants[index % len(self.participants)]

    def handoffs(self, start: datetime, end: datetime) -> Iterable[datetime]:
        """Handoffs in ``(start, end)``."""
        index = self.shift_index(start)
        index = -1 if index is None else index
        for step in range(1, _MAX_STEPS):
            at = self.handoff(index + step)
            if at >= end:
                return
            if at > start:
                yield at


# -------------------------------------------------------------------------- restrictions


class Restriction(Model):
    """``[start, end)`` each day on ``days`` (all days by default), in the layer's zone.

    ``end`` before ``start`` runs past midnight into the next day (the day named is the day it
    starts); ``end: "24:00"`` is the end of the day; ``start == end`` is the whole day.
    """

    days: tuple[str, ...] = Field(default=WEEKDAYS, min_length=1, max_length=7)
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(WEEKDAYS[weekday_index(v)] for v in value)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any, info: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 sexagesimal: 17:00 → 1020
            value = f"{value // 60:02d}:{value % 60:02d}"
        parse_hhmm(value, allow_24=info.field_name == "end")
        return str(value).strip()

    def windows(self, day: date, tz: Any) -> tuple[datetime, datetime] | None:
        """The window that starts on ``day`` (aware UTC), or None when ``day`` is not one of ``days``."""
        if WEEKDAYS[day.weekday()] not in self.days:
            return None
        begin_at = parse_hhmm(self.start) or time()
        end_at = parse_hhmm(self.end, allow_24=True)
        begin = _at_wall_clock(day, begin_at, tz)
        if end_at is None or end_at <= begin_at:  # 24:00, past midnight, or the whole day
            finish = _at_wall_clock(day + timedelta(days=1), end_at or time(), tz)
        else:
            finish = _at_wall_clock(day, end_at, tz)
        return begin, finish


class Layer(Model):
    """A rotation, restricted (or not) to some times of the week."""

    name: str = Field(pattern=NAME_PATTERN)
    rotation: Rotation
    restrictions: tuple[Restriction, ...] = Field(default=(), max_length=bounds.MAX_RESTRICTIONS)

    def active(self, at: datetime) -> bool:
        if not self.restrictions:
            return True
        day = wall_clock(at, self.rotation.tz).date()
        for restriction in self.restrictions:
            for start_day in (day, day - timedelta(days=1)):
                window = restriction.windows(start_day, self.rotation.tz)
                if window is not None and window[0] <= at < window[1]:
                    return True
        return False

    def on_call(self, at: datetime) -> str | None:
        return self.rotation.on_call(at) if self.active(at) else None

    def changes(self, start: datetime, end: datetime) -> Iterable[datetime]:
        """Moments in ``(start, end)`` where this layer may change hands."""
        yield from self.rotation.handoffs(start, end)
        if self.restrictions:
            day = wall_clock(start, self.rotation.tz).date() - timedelta(days=1)
            last = wall_clock(end, self.rotation.tz).date()
            while day <= last:
                for restriction in self.restrictions:
                    window = restriction.windows(day, self.rotation.tz)
                    if window is not None:
                        yield from (t for t in window if start < t < end)
                day += timedelta(days=1)


# ----------------------------------------------------------------------------- overrides


class Override(Model):
    """``user`` is on call for ``schedule`` during ``[start, end)`` (created at run time)."""

    id: str = Field(min_length=1, max_length=64)
    schedule: str = Field(pattern=NAME_PATTERN)
    user: str = Field(pattern=NAME_PATTERN)
    start: Time
    end: Time
    created_by: str = Field(default="", max_length=bounds.MAX_NAME)
    created_at: Time
    comment: str = Field(default="", max_length=bounds.MAX_NOTE)

    @field_validator("start", "end", "created_at")
    @classmethod
    def _aware(cls, value: datetime, info: Any) -> datetime:
        return aware_utc(value, info.field_name)

    @model_validator(mode="after")
    def _span(self) -> Override:
        if self.end <= self.start:
            raise ValueError("end: must be after start")
        if self.end - self.start > timedelta(days=bounds.MAX_ONCALL_SPAN_DAYS):
            raise ValueError(f"end: an override lasts at most {bounds.MAX_ONCALL_SPAN_DAYS} days")
        return self

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


# ------------------------------------------------------------------------------ schedule


@dataclass(frozen=True)
class OnCallAt:
    """Who is on call, and why: ``override:<id>``, ``layer:<name>``, ``fallback`` or ``nobody``."""

    user: str | None
    source: str


@dataclass(frozen=True)
class Shift:
    """``user`` is on call during ``[start, end)`` (``source`` as in :class:`OnCallAt`)."""

    start: datetime
    end: datetime
    user: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "user": self.user, "source": self.source}


class Schedule(Model):
    """Layers (bottom to top) over a fallback; overrides are passed in (they live in the store)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=bounds.MAX_NOTE)
    time_zone: str = Field(default="UTC", max_length=64)
    layers: tuple[Layer, ...] = Field(default=(), max_length=bounds.MAX_LAYERS)
    fallback: str | None = Field(default=None, pattern=NAME_PATTERN)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)

    @model_validator(mode="after")
    def _layers(self) -> Schedule:
        check_unique((layer.name for layer in self.layers), "layers", "name", "layer name")
        if not self.layers and self.fallback is None:
            raise ValueError("layers: a schedule needs at least one layer or a fallback")
        # a layer without its own zone keeps the schedule's
        zoned = tuple(
            layer.model_copy(update={"rotation": layer.rotation.with_zone(self.time_zone)}) for layer in self.layers
        )
        object.__setattr__(self, "layers", zoned)
        return self

    @property
    def users(self) -> set[str]:
        """Every user id the schedule names (participants and fallback)."""
        named = {user for layer in self.layers for user in layer.rotation.participants}
        return named | ({self.fallback} if self.fallback else set())

    def on_call(self, at: datetime, overrides: Sequence[Override] = ()) -> OnCallAt:
        """Who is on call at ``at`` (aware)."""
        at = to_utc(at)
        covering = [o for o in overrides if o.schedule == self.name and o.covers(at)]
        if covering:
            chosen = max(covering, key=lambda o: (o.created_at, o.id))
            return OnCallAt(chosen.user, f"override:{chosen.id}")
        for layer in reversed(self.layers):
            user = layer.on_call(at)
            if user is not None:
                return OnCallAt(user, f"layer:{layer.name}")
        if self.fallback is not None:
            return OnCallAt(self.fallback, "fallback")
        return OnCallAt(None, "nobody")

    def shifts(self, start: datetime, end: datetime, overrides: Sequence[Override] = ()) -> list[Shift]:
        """Who is on call from ``start`` to ``end``, as consecutive shifts (adjacent equal ones merged)."""
        start, end = to_utc(start), to_utc(end)
        mine = [o for o in overrides if o.schedule == self.name]
        moments = {start, end}
        for layer in self.layers:
            moments.update(layer.changes(start, end))
        for override in mine:
            moments.update(t for t in (override.start, override.end) if start < t < end)
        points = sorted(moments)
        shifts: list[Shift] = []
        for begin, finish in pairwise(points):
            who = self.on_call(begin, mine)
            if shifts and shifts[-1].user == who.user and shifts[-1].source == who.source:
                shifts[-1] = Shift(shifts[-1].start, finish, who.user, who.source)
            else:
                shifts.append(Shift(begin, finish, who.user, who.source))
        return shifts

    def handoffs(self, start: datetime, end: datetime, overrides: Sequence[Override] = ()) -> list[Shift]:
        """The shifts that begin in ``(start, end)`` with another person than before."""
        out: list[Shift] = []
        previous = self.on_call(start, overrides).user
        for shift in self.shifts(start, end, overrides):
            if shift.start > start and shift.user != previous:
                out.append(shift)
            previous = shift.user
        return out
