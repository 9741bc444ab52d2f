"""How a moment is written for people: one format for the pages, the link pages, the CLI and
the demo.

``2026-01-05 09:15:00 UTC``: the date and time to the second in a named zone (UTC unless the
viewer chose one), never an ISO string with microseconds. Relative: ``in 12 min``, ``3 h 5 min
ago``. The pages' script (``service/ui/static/escalation.js``, ``absTime`` / ``relTime``) writes
the same shapes in the zone chosen in Airflow's UI; tests/ui check both agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo

from airflow_escalation.core.timeutil import from_iso

UTC = timezone.utc


def format_time(value: datetime | str | None, zone: tzinfo | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS ZONE`` (UTC by default); ``""`` for no time."""
    moment = from_iso(value) if isinstance(value, str) else value
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone or UTC)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or 'UTC'}"


def format_duration(delta: timedelta | float) -> str:
    """A length of time, coarsely: ``40 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = abs(round(delta.total_seconds() if isinstance(delta, timedelta) else delta))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def format_relative(value: datetime | str | None, now: datetime) -> str:
    """``in 12 min`` / ``12 min ago`` from ``now``; ``now`` / ``just now`` within 5 s."""
    moment = from_iso(value) if isinstance(value, str) else value
    if moment is None:
        return ""
    delta = (moment - now).total_seconds()
    if abs(delta) < 5:
        return "now" if delta > 0 else "just now"
    text = format_duration(delta)
    return f"in {text}" if delta > 0 else f"{text} ago"
