"""Silences and maintenance windows alone: matchers, boundaries to the second, recurring windows
over midnight and over both DST changes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation.oncall.silence import MaintenanceWindow, Matchers, Silence, Subject

UTC = timezone.utc
SECOND = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def subject(dag="etl", task="load", policy="p", incident="etl.load", severity="High") -> Subject:
    return Subject.of({"dag_id": dag, "task_id": task, "severity": severity}, policy, incident)


def test_every_matcher_given_must_match():
    assert Matchers(dag_id="etl").matches(subject())
    assert not Matchers(dag_id="etl", task_id="other").matches(subject())
    assert Matchers(dag_id="etl", task_id="load", policy="p", severity="HIGH").matches(subject())
    assert Matchers(incident="etl.*").matches(subject())
    assert not Matchers(incident="ETL.*").matches(subject())  # globs are case-sensitive
    assert Matchers(incident="etl.[lx]oad").matches(subject())
    assert not Matchers(severity="critical").matches(subject())
    assert not Matchers(dag_id="etl").matches(Subject.of({}, "p", "x"))  # a record of no DAG


def test_a_silence_needs_a_matcher_and_a_span():
    with pytest.raises(ValueError, match="at least one matcher"):
        Matchers()
    with pytest.raises(ValueError, match="ends_at: must be after starts_at"):
        Silence(
            id="s",
            matchers={"dag_id": "d"},
            starts_at=utc(2026, 1, 1),
            ends_at=utc(2026, 1, 1),
            created_at=utc(2026, 1, 1),
        )
    with pytest.raises(ValueError, match="give a time zone"):
        Silence(
            id="s",
            matchers={"dag_id": "d"},
            starts_at=datetime(2026, 1, 1),
            ends_at=utc(2026, 1, 2),
            created_at=utc(2026, 1, 1),
        )
    with pytest.raises(ValueError, match="at most 400 days"):
        Silence(
            id="s",
            matchers={"dag_id": "d"},
            starts_at=utc(2026, 1, 1),
            ends_at=utc(2027, 3, 1),
            created_at=utc(2026, 1, 1),
        )


def test_silence_boundaries_to_the_second():
    silence = Silence(
        id="s",
        matchers={"dag_id": "d"},
        starts_at=utc(2026, 1, 1, 10),
        ends_at=utc(2026, 1, 1, 11),
        created_at=utc(2026, 1, 1),
    )
    assert [
        silence.status(t)
        for t in (utc(2026, 1, 1, 10) - SECOND, utc(2026, 1, 1, 10), utc(2026, 1, 1, 11) - SECOND, utc(2026, 1, 1, 11))
    ] == [
        "pending",
        "active",
        "active",
        "expired",
    ]


def test_a_window_over_midnight():
    window = MaintenanceWindow(name="w", cron="30 23 * * *", duration_minutes=90, dag_ids=["d"])
    assert window.open_window(utc(2026, 1, 1, 23, 29, 59)) is None
    assert window.open_window(utc(2026, 1, 1, 23, 30)) == (utc(2026, 1, 1, 23, 30), utc(2026, 1, 2, 1))
    assert window.open_window(utc(2026, 1, 2, 0, 59, 59)) == (utc(2026, 1, 1, 23, 30), utc(2026, 1, 2, 1))
    assert window.open_window(utc(2026, 1, 2, 1)) is None


def test_a_window_over_the_spring_forward():
    # Berlin, Sunday 2026-03-29: 02:00 CET becomes 03:00 CEST. 01:30 local + 60 minutes of
    # elapsed time ends at 03:30 CEST (the wall clock shows 2 hours)
    window = MaintenanceWindow(
        name="w", cron="30 1 * * *", duration_minutes=60, time_zone="Europe/Berlin", dag_ids=["d"]
    )
    assert window.open_window(utc(2026, 3, 28, 0, 30)) == (utc(2026, 3, 28, 0, 30), utc(2026, 3, 28, 1, 30))
    assert window.open_window(utc(2026, 3, 29, 0, 29, 59)) is None
    assert window.open_window(utc(2026, 3, 29, 0, 30)) == (utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30))
    assert window.open_window(utc(2026, 3, 29, 1, 29, 59)) is not None
    assert window.open_window(utc(2026, 3, 29, 1, 30)) is None
    # the day after, 01:30 CEST = 23:30 UTC the evening before
    assert window.open_window(utc(2026, 3, 29, 23, 30)) == (utc(2026, 3, 29, 23, 30), utc(2026, 3, 30, 0, 30))


def test_a_window_over_the_fall_back():
    # Berlin, Sunday 2026-10-25: 03:00 CEST becomes 02:00 CET; 22:00 local every day for 6 hours
    window = MaintenanceWindow(
        name="w", cron="0 22 * * *", duration_minutes=360, time_zone="Europe/Berlin", policies=["p"]
    )
    # Saturday 22:00 CEST = 20:00 UTC, six elapsed hours: until 02:00 UTC (03:00 CET after the change)
    assert window.open_window(utc(2026, 10, 24, 20)) == (utc(2026, 10, 24, 20), utc(2026, 10, 25, 2))
    assert window.open_window(utc(2026, 10, 25, 1, 59, 59)) is not None
    assert window.open_window(utc(2026, 10, 25, 2)) is None
    # Sunday 22:00 CET = 21:00 UTC
    assert window.open_window(utc(2026, 10, 25, 20, 59, 59)) is None
    assert window.open_window(utc(2026, 10, 25, 21)) == (utc(2026, 10, 25, 21), utc(2026, 10, 26, 3))
    assert window.applies_to(Subject.of({"dag_id": "x"}, "p", "i"))
    assert not window.applies_to(Subject.of({"dag_id": "x"}, "q", "i"))


def test_openings_list():
    window = MaintenanceWindow(name="w", cron="0 2 * * 6", duration_minutes=120, dag_ids=["d"])  # Saturdays 02:00
    assert window.openings(utc(2026, 3, 1), utc(2026, 3, 15)) == [
        (utc(2026, 3, 7, 2), utc(2026, 3, 7, 4)),
        (utc(2026, 3, 14, 2), utc(2026, 3, 14, 4)),
    ]
    assert window.openings(utc(2026, 3, 7, 3), utc(2026, 3, 8))[0] == (utc(2026, 3, 7, 2), utc(2026, 3, 7, 4))


def test_a_window_whose_time_falls_in_a_dst_gap_or_happens_twice():
    window = MaintenanceWindow(
        name="w", cron="30 2 * * *", duration_minutes=60, time_zone="Europe/Berlin", dag_ids=["d"]
    )
    # 2026-03-29 02:30 does not exist in Berlin: the window opens at 03:30 CEST (01:30 UTC)
    assert window.open_window(utc(2026, 3, 29, 1, 29, 59)) is None
    assert window.open_window(utc(2026, 3, 29, 1, 30)) == (utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30))
    # 2026-10-25 02:30 happens twice: the window opens at the second one, 02:30 CET (01:30 UTC)
    assert window.open_window(utc(2026, 10, 25, 0, 30)) is None
    assert window.open_window(utc(2026, 10, 25, 1, 30)) == (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 30))
    assert window.openings(utc(2026, 10, 24), utc(2026, 10, 26)) == [
        (utc(2026, 10, 24, 0, 30), utc(2026, 10, 24, 1, 30)),
        (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 30)),
    ]
