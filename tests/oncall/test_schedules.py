"""Schedules on the clock: rotations across DST both ways, layers with restrictions, overrides
and the fallback -- who is on call, to the second, and the handoffs ahead."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation.oncall.config import OnCallConfig
from airflow_escalation.oncall.schedule import Override, Rotation, Schedule

UTC = timezone.utc
SECOND = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def who(schedule: Schedule, at: datetime, overrides=()) -> str | None:
    return schedule.on_call(at, overrides).user


def test_weekly_handoff_keeps_local_time_across_spring_forward():
    # Berlin moves from UTC+1 to UTC+2 on Sunday 2026-03-29; handoffs are Mondays 09:00 local
    rotation = Rotation(
        participants=["alice", "bob"],
        shift_unit="weeks",
        start="2026-03-18",
        handoff_weekday="monday",
        handoff_time="09:00",
        time_zone="Europe/Berlin",
    )
    assert rotation.anchor == utc(2026, 3, 23, 8, 0)  # first Monday on/after the start date
    assert rotation.on_call(utc(2026, 3, 23, 7, 59, 59)) is None  # before the anchor: nobody
    assert rotation.on_call(utc(2026, 3, 23, 8, 0)) == "alice"
    # the next handoff is 09:00 CEST = 07:00 UTC: alice's shift was an hour shorter
    assert rotation.on_call(utc(2026, 3, 30, 6, 59, 59)) == "alice"
    assert rotation.on_call(utc(2026, 3, 30, 7, 0)) == "bob"
    assert rotation.on_call(utc(2026, 4, 6, 7, 0)) == "alice"
    assert list(rotation.handoffs(utc(2026, 3, 23, 8, 0), utc(2026, 4, 7))) == [utc(2026, 3, 30, 7), utc(2026, 4, 6, 7)]


def test_daily_handoff_keeps_local_time_across_fall_back():
    # New York moves from UTC-4 to UTC-5 on Sunday 2026-11-01 at 02:00
    rotation = Rotation(
        participants=["alice", "bob", "carol"],
        shift_unit="days",
        start="2026-10-30T08:00",
        time_zone="America/New_York",
    )
    assert [rotation.handoff(i) for i in range(4)] == [
        utc(2026, 10, 30, 12),
        utc(2026, 10, 31, 12),
        utc(2026, 11, 1, 13),  # 08:00 EST: the Oct 31 shift lasted 25 hours
        utc(2026, 11, 2, 13),
    ]
    assert rotation.on_call(utc(2026, 11, 1, 12, 59, 59)) == "bob"
    assert rotation.on_call(utc(2026, 11, 1, 13, 0)) == "carol"
    assert rotation.on_call(utc(2026, 11, 2, 13, 0)) == "alice"


def test_hourly_shifts_are_elapsed_time_across_dst():
    rotation = Rotation(
        participants=["alice", "bob"],
        shift_length=12,
        shift_unit="hours",
        start="2026-03-28T20:00",
        time_zone="Europe/Berlin",
    )
    # 20:00 CET = 19:00 UTC; twelve real hours later is 07:00 UTC = 09:00 CEST (not 08:00)
    assert rotation.handoff(1) == utc(2026, 3, 29, 7)
    assert rotation.on_call(utc(2026, 3, 29, 6, 59, 59)) == "alice"
    assert rotation.on_call(utc(2026, 3, 29, 7)) == "bob"


def test_handoff_in_a_dst_gap_happens_when_the_clock_exists_again():
    rotation = Rotation(
        participants=["alice", "bob"], shift_unit="days", start="2026-03-07T02:30", time_zone="America/New_York"
    )
    # 02:30 does not exist on 2026-03-08: that handoff is at 03:30 EDT; the next day at 02:30 again
    assert [rotation.handoff(i) for i in range(3)] == [
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 9, 6, 30),
    ]
    assert rotation.on_call(utc(2026, 3, 8, 7, 29, 59)) == "alice"
    assert rotation.on_call(utc(2026, 3, 8, 7, 30)) == "bob"


def _layered() -> Schedule:
    return OnCallConfig.from_sections(
        {
            "users": [{"id": u} for u in ("alice", "bob", "carol", "dave", "nina")],
            "schedules": [
                {
                    "name": "primary",
                    "time_zone": "Europe/Berlin",
                    "layers": [
                        {
                            "name": "around-the-clock",
                            "rotation": {
                                "participants": ["alice", "bob"],
                                "shift_unit": "weeks",
                                "start": "2026-03-02",
                                "handoff_time": "09:00",
                            },
                        },
                        {
                            "name": "business-hours",
                            "rotation": {"participants": ["carol"], "shift_unit": "days", "start": "2026-03-02"},
                            "restrictions": [
                                {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}
                            ],
                        },
                        {
                            "name": "nights",
                            "rotation": {"participants": ["nina"], "shift_unit": "days", "start": "2026-03-02"},
                            "restrictions": [{"days": ["fri"], "start": "22:00", "end": "06:00"}],
                        },
                    ],
                    "fallback": "dave",
                }
            ],
        }
    ).schedules[0]


def test_restricted_layer_over_a_full_time_layer():
    schedule = _layered()
    monday_9 = utc(2026, 3, 2, 8)  # 09:00 CET
    assert who(schedule, monday_9 - SECOND) is None or who(schedule, monday_9 - SECOND) == "dave"
    assert schedule.on_call(monday_9 - SECOND).source == "fallback"  # before the rotations start
    assert schedule.on_call(monday_9).user == "carol"
    assert schedule.on_call(monday_9).source == "layer:business-hours"
    assert who(schedule, utc(2026, 3, 2, 15, 59, 59)) == "carol"
    assert who(schedule, utc(2026, 3, 2, 16)) == "alice"  # 17:00 CET: back to the 24/7 layer
    assert who(schedule, utc(2026, 3, 7, 12)) == "alice"  # Saturday: no business hours
    # Friday 22:00 → Saturday 06:00 (past midnight), the top layer
    assert who(schedule, utc(2026, 3, 6, 20, 59, 59)) == "alice"
    assert who(schedule, utc(2026, 3, 6, 21)) == "nina"
    assert who(schedule, utc(2026, 3, 7, 4, 59, 59)) == "nina"
    assert who(schedule, utc(2026, 3, 7, 5)) == "alice"
    assert who(schedule, utc(2026, 3, 9, 8)) == "carol"  # Monday 09:00: business hours beat the handoff
    assert who(schedule, utc(2026, 3, 9, 16)) == "bob"  # and at 17:00 bob has the week


def test_overrides_beat_layers_and_the_last_created_wins():
    schedule = _layered()
    made = utc(2026, 3, 1)

    def override(oid: str, user: str, start: datetime, end: datetime, created: datetime = made) -> Override:
        return Override(id=oid, schedule="primary", user=user, start=start, end=end, created_at=created)

    first = override("o1", "dave", utc(2026, 3, 2, 10), utc(2026, 3, 2, 12))
    later = override("o2", "bob", utc(2026, 3, 2, 11), utc(2026, 3, 2, 11, 30), made + SECOND)
    other = Override(id="o3", schedule="secondary", user="nina", start=made, end=utc(2026, 4, 1), created_at=made)
    overrides = [first, later, other]
    assert who(schedule, utc(2026, 3, 2, 9, 59, 59), overrides) == "carol"
    assert schedule.on_call(utc(2026, 3, 2, 10), overrides).source == "override:o1"
    assert who(schedule, utc(2026, 3, 2, 10), overrides) == "dave"
    assert who(schedule, utc(2026, 3, 2, 11), overrides) == "bob"  # created last
    assert who(schedule, utc(2026, 3, 2, 11, 30), overrides) == "dave"  # end is exclusive
    assert who(schedule, utc(2026, 3, 2, 12), overrides) == "carol"
    shifts = schedule.shifts(utc(2026, 3, 2, 9), utc(2026, 3, 2, 13), overrides)
    assert [(s.start, s.user, s.source) for s in shifts] == [
        (utc(2026, 3, 2, 9), "carol", "layer:business-hours"),
        (utc(2026, 3, 2, 10), "dave", "override:o1"),
        (utc(2026, 3, 2, 11), "bob", "override:o2"),
        (utc(2026, 3, 2, 11, 30), "dave", "override:o1"),
        (utc(2026, 3, 2, 12), "carol", "layer:business-hours"),
    ]


def test_next_handoffs():
    schedule = _layered()
    handoffs = schedule.handoffs(utc(2026, 3, 6, 12), utc(2026, 3, 9, 17))
    assert [(h.start, h.user) for h in handoffs] == [
        (utc(2026, 3, 6, 16), "alice"),  # Friday 17:00 CET
        (utc(2026, 3, 6, 21), "nina"),
        (utc(2026, 3, 7, 5), "alice"),
        (utc(2026, 3, 9, 8), "carol"),  # Monday 09:00: carol, then bob's week at 17:00
        (utc(2026, 3, 9, 16), "bob"),
    ]


def test_nobody_without_fallback():
    schedule = Schedule(
        name="s",
        layers=[
            {
                "name": "day",
                "rotation": {"participants": ["alice"], "start": "2026-03-02"},
                "restrictions": [{"start": "09:00", "end": "17:00"}],
            }
        ],
    )
    assert schedule.on_call(utc(2026, 3, 2, 8, 59, 59)).user is None
    assert schedule.on_call(utc(2026, 3, 2, 8, 59, 59)).source == "nobody"
    assert schedule.on_call(utc(2026, 3, 2, 9)).user == "alice"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"users": [{"id": "a"}, {"id": "a"}]}, "users[1].id: duplicate user id 'a'"),
        ({"users": [{"id": "a", "time_zone": "Mars/Olympus"}]}, "users[0].time_zone: unknown time zone 'Mars/Olympus'"),
        ({"users": [{"id": "a", "contacts": [{"type": "fax", "address": "1"}]}]}, "users[0].contacts[0].type"),
        (
            {
                "users": [{"id": "a"}],
                "schedules": [
                    {
                        "name": "s",
                        "layers": [{"name": "l", "rotation": {"participants": ["a", "zed"], "start": "2026-01-01"}}],
                    }
                ],
            },
            "schedules[0].layers[0].rotation.participants[1]: unknown user 'zed'",
        ),
        (
            {
                "users": [{"id": "a"}],
                "schedules": [
                    {
                        "name": "s",
                        "layers": [
                            {
                                "name": "l",
                                "rotation": {"participants": ["a"], "start": "2026-01-01", "handoff_time": "9am"},
                            }
                        ],
                    }
                ],
            },
            "schedules[0].layers[0].rotation.handoff_time: expected a time of day as 'HH:MM'",
        ),
        (
            {
                "users": [{"id": "a"}],
                "schedules": [
                    {
                        "name": "s",
                        "layers": [
                            {
                                "name": "l",
                                "rotation": {"participants": ["a"], "start": "2026-01-01", "shift_unit": "months"},
                            }
                        ],
                    }
                ],
            },
            "schedules[0].layers[0].rotation.shift_unit",
        ),
        (
            {"users": [{"id": "a"}], "schedules": [{"name": "s", "fallback": "b"}]},
            "schedules[0].fallback: unknown user 'b'",
        ),
        ({"schedules": [{"name": "s"}]}, "schedules[0]: layers: a schedule needs at least one layer or a fallback"),
        (
            {"maintenance_windows": [{"name": "w", "cron": "61 * * * *", "duration_minutes": 5, "dag_ids": ["d"]}]},
            "maintenance_windows[0].cron: not a 5-field cron expression",
        ),
        (
            {"maintenance_windows": [{"name": "w", "cron": "0 2 * * *", "duration_minutes": 5}]},
            "maintenance_windows[0]: dag_ids: a maintenance window needs dag_ids or policies",
        ),
        (
            {"maintenance_windows": [{"name": "w", "cron": "0 2 * * *", "duration_minutes": 0, "dag_ids": ["d"]}]},
            "maintenance_windows[0].duration_minutes",
        ),
        ({"users": {"a": 1}}, "users: expected a list"),
    ],
)
def test_config_errors_name_the_field(sections, message):
    with pytest.raises(ValueError) as caught:
        OnCallConfig.from_sections(sections)
    assert message in str(caught.value)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])
@pytest.mark.parametrize(("length", "unit"), [(1, "days"), (2, "weeks"), (7, "hours"), (3, "days")])
def test_every_moment_falls_in_exactly_the_shift_its_index_says(zone, length, unit):
    rotation = Rotation(
        participants=["a", "b", "c"], shift_length=length, shift_unit=unit, start="2026-01-01T02:30", time_zone=zone
    )
    at = utc(2026, 1, 1)
    while at < utc(2027, 1, 1):
        index = rotation.shift_index(at)
        if index is None:
            assert at < rotation.anchor
        else:
            assert rotation.handoff(index) <= at < rotation.handoff(index + 1), (at, index)
        at += timedelta(hours=5, minutes=17)


def test_sections_inside_or_beside_the_escalation_block():
    from airflow_escalation.runtime.policy_config import EscalationPolicyConfig

    users = [{"id": "alice"}]
    beside = EscalationPolicyConfig.from_dict({"escalation": {"policies": []}, "users": users})
    inside = EscalationPolicyConfig.from_dict({"escalation": {"policies": [], "users": users}})
    assert beside.oncall.directory.get("alice") == inside.oncall.directory.get("alice")
    assert EscalationPolicyConfig.from_dict({"policies": []}).oncall is None
    with pytest.raises(ValueError, match="users: given both inside and beside"):
        EscalationPolicyConfig.from_dict({"escalation": {"users": users}, "users": users})
