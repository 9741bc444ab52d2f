"""core/timefmt.py: the one way a moment is written for people (pages, link pages, CLI, demo)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from airflow_escalation.core.timefmt import format_duration, format_relative, format_time

T = datetime(2026, 1, 5, 9, 15, 7, 123456, tzinfo=timezone.utc)


def test_format_time_drops_microseconds_and_names_the_zone():
    assert format_time(T) == "2026-01-05 09:15:07 UTC"
    assert format_time(T.isoformat()) == "2026-01-05 09:15:07 UTC"  # what a template holds
    assert format_time("2026-01-05T10:15:07.999+01:00") == "2026-01-05 09:15:07 UTC"
    assert format_time(T.replace(tzinfo=None)) == "2026-01-05 09:15:07 UTC"  # naive is UTC
    assert format_time(T, ZoneInfo("Europe/Paris")) == "2026-01-05 10:15:07 CET"
    assert format_time(T + timedelta(days=180), ZoneInfo("Europe/Paris")) == "2026-07-04 11:15:07 CEST"
    assert format_time(None) == "" and format_time("") == ""


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0 s"),
        (59.4, "59 s"),
        (60, "1 min"),
        (12 * 60 + 59, "12 min"),
        (3600, "1 h 0 min"),
        (3 * 3600 + 5 * 60, "3 h 5 min"),
        (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"),
        (-90, "1 min"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert format_duration(timedelta(seconds=seconds)) == text


def test_format_relative():
    assert format_relative(T + timedelta(minutes=12), T) == "in 12 min"
    assert format_relative(T - timedelta(hours=3, minutes=5), T) == "3 h 5 min ago"
    assert format_relative(T + timedelta(seconds=3), T) == "now"
    assert format_relative(T - timedelta(seconds=3), T) == "just now"
    assert format_relative((T + timedelta(seconds=40)).isoformat(), T) == "in 40 s"
    assert format_relative(None, T) == ""
