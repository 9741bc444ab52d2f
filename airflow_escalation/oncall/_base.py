"""What every on-call model shares: strict pydantic models, zones, and field-naming errors."""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Any, Iterable

import pendulum
from pydantic import BaseModel, ConfigDict, PlainSerializer, ValidationError

from airflow_escalation.core import bounds
from airflow_escalation.core.timeutil import UTC

#: user ids, schedule and window names: a letter or digit, then letters, digits, ``. _ - @``
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_ALIASES = {name[:3]: i for i, name in enumerate(WEEKDAYS)} | {name: i for i, name in enumerate(WEEKDAYS)}


#: a time written as the rest of the project writes times: ``isoformat()``, UTC as ``+00:00``
Time = Annotated[datetime, PlainSerializer(lambda at: at.isoformat(), return_type=str, when_used="json")]


class Model(BaseModel):
    """Strict, frozen: unknown fields are refused, nothing changes once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def zone(name: str) -> pendulum.Timezone | pendulum.FixedTimezone:
    """The IANA zone ``name``; ``ValueError`` naming it when unknown."""
    try:
        return pendulum.timezone(name)
    except Exception:  # noqa: BLE001 - pendulum raises its own error types
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin')") from None


def to_utc(at: datetime) -> datetime:
    """A plain aware-UTC ``datetime`` (pendulum's lose their zone in arithmetic with timedelta)."""
    u = at.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=UTC)


def wall_clock(at: datetime, tz: Any) -> datetime:
    """What a wall clock in ``tz`` shows at ``at``, as a naive ``datetime``."""
    local = pendulum.instance(at.astimezone(UTC)).in_timezone(tz)
    return datetime.combine(local.date(), local.time())


def from_wall_clock(local: datetime, tz: Any) -> datetime:
    """The moment (aware UTC) a wall clock in ``tz`` shows ``local`` -- the one rule for the two
    DST edge cases: a time that does not exist (spring forward) is moved forward by the gap
    (02:30 → 03:30); a time that happens twice (fall back) is its second occurrence, after the
    change (pendulum's default)."""
    moment = pendulum.datetime(
        local.year, local.month, local.day, local.hour, local.minute, local.second, local.microsecond, tz=tz
    )
    return to_utc(moment)


def every_occurrence(local: datetime, tz: Any) -> tuple[datetime, ...]:
    """Each moment (aware UTC) a wall clock in ``tz`` shows ``local``: both, in order, for a time
    that happens twice (fall back); else :func:`from_wall_clock`'s one."""
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset() and wall_clock(first, tz) == local:
        return (to_utc(first), to_utc(second))
    return (from_wall_clock(local, tz),)


def check_zone(name: str) -> str:
    zone(name)
    return name


def parse_hhmm(value: Any, *, allow_24: bool = False) -> time | None:
    """``"09:30"`` as a time; ``"24:00"`` (end of the day) as None when ``allow_24``."""
    if isinstance(value, time):
        return value
    text = str(value).strip()
    if allow_24 and text == "24:00":
        return None
    if not _HHMM.match(text):
        span = "00:00-23:59, or 24:00" if allow_24 else "00:00-23:59"
        raise ValueError(f"expected a time of day as 'HH:MM' ({span}), got {text[:20]!r}")
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def weekday_index(value: Any) -> int:
    """0 (Monday) .. 6 (Sunday) from ``monday``/``mon`` (any case)."""
    found = _WEEKDAY_ALIASES.get(str(value).strip().lower())
    if found is None:
        raise ValueError(f"unknown weekday {str(value)[:20]!r} (use monday..sunday or mon..sun)")
    return found


def aware_utc(value: datetime, field: str) -> datetime:
    """Run-time times (silences, overrides) must say their zone: naive ones are refused."""
    if value.tzinfo is None:
        raise ValueError(f"{field}: give a time zone (e.g. 2026-03-01T09:00:00Z), got a naive time")
    return value.astimezone(UTC)


_FIELD_FIRST = re.compile(r"([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.+)", re.DOTALL)


def check_unique(values: Iterable[str], field: str, key: str, what: str) -> None:
    """Raise naming the first repeated value: ``users[3].id: duplicate user id 'ann'``."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{field}[{index}].{key}: duplicate {what} {value!r}")
        seen.add(value)


def explain(exc: ValidationError, where: str = "") -> str:
    """A pydantic error as ``where.field[0].sub: message`` lines, short enough to show."""
    lines = []
    for error in exc.errors()[:5]:
        path = where
        for part in error.get("loc", ()):
            path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        # a check across fields names its field first (``start: …``): it belongs in the path
        if (field := _FIELD_FIRST.match(message)) is not None:
            path, message = (f"{path}.{field[1]}" if path else field[1]), field[2]
        lines.append(f"{path}: {message}" if path else message)
    more = len(exc.errors()) - len(lines)
    if more > 0:
        lines.append(f"(and {more} more)")
    return bounds.truncate("; ".join(lines))
