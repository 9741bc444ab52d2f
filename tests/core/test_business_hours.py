"""Business hours: wait / skip / notify, IANA timezones, DST (semantics 7)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from airflow_escalation import BusinessHoursMode
from airflow_escalation.core.business_hours import is_business_time, next_business_time
from airflow_escalation.testing import FakeClock, RecordingHandler
from core_support import SEED_L1, SEED_L2, SEED_L3, UTC, ladder, seed_policy

SEOUL = ZoneInfo("Asia/Seoul")
NY = ZoneInfo("America/New_York")
WEEK = timedelta(days=7)


def sent(recorder):
    """Every notification as (aware UTC datetime, target key), in order."""
    return sorted((n.at, n.target) for n in recorder.sent)


def keys(when, targets):
    return [(when.astimezone(UTC), k) for k in targets]


@pytest.fixture
def bh(make_engine):
    """``engine, recorder = await bh(policy, start_at)``: an engine on its own clock starting at start_at."""

    async def factory(policy, start_at, **config):
        clock = FakeClock(start_at.astimezone(UTC))
        recorder = RecordingHandler(clock)
        engine = await make_engine(policy, clock=clock, handler=recorder, **config)
        return engine, recorder

    return factory


def bh_seed(tz, **kw):
    return seed_policy(business_hours_only=True, timezone=tz, **kw)


async def test_saturday_trigger_waits_for_monday_morning_seoul(bh):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    monday9 = datetime(2026, 1, 12, 9, 0, tzinfo=SEOUL)
    engine, recorder = await bh(bh_seed("Asia/Seoul"), saturday)
    result = await engine.trigger("inc", {"severity": "high"}, "production_critical")
    assert result.success and result.record.state == "pending"
    assert result.targets_notified == []
    assert result.record.next_escalation_at == monday9.astimezone(UTC)
    assert monday9.astimezone(UTC) == datetime(2026, 1, 12, 0, 0, tzinfo=UTC)

    await engine.advance(timedelta(days=1, hours=20, minutes=59))  # Monday 08:59 KST
    assert sent(recorder) == []
    assert engine.get_record(result.record.id).state == "pending"

    await engine.advance(WEEK)
    m = lambda minutes: monday9 + timedelta(minutes=minutes)  # noqa: E731
    assert sent(recorder) == (
        keys(m(0), SEED_L1) + keys(m(5), SEED_L1) + keys(m(10), SEED_L1) + keys(m(15), SEED_L2) + keys(m(45), SEED_L3)
    )


async def test_sunday_night_trigger_new_york_waits_until_monday_0900(bh):
    sunday = datetime(2026, 1, 11, 23, 59, tzinfo=NY)
    engine, recorder = await bh(ladder(delays=(0, 15), business_hours_only=True, timezone="America/New_York"), sunday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    monday9 = datetime(2026, 1, 12, 9, 0, tzinfo=NY)
    assert sent(recorder) == keys(monday9, ["user:l1"]) + keys(monday9 + timedelta(minutes=15), ["user:l2"])


async def test_weekday_before_opening_waits_for_0900(bh):
    early = datetime(2026, 1, 13, 6, 30, tzinfo=NY)  # Tuesday
    engine, recorder = await bh(ladder(delays=(0,), business_hours_only=True, timezone="America/New_York"), early)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == keys(datetime(2026, 1, 13, 9, 0, tzinfo=NY), ["user:l1"])


async def test_level_due_after_closing_waits_for_the_next_business_morning(bh):
    tuesday = datetime(2026, 1, 13, 17, 55, tzinfo=NY)
    engine, recorder = await bh(
        ladder(delays=(0, 15, 30), business_hours_only=True, timezone="America/New_York"), tuesday
    )
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(minutes=20))
    record = engine.get_record(record_id)
    wednesday9 = datetime(2026, 1, 14, 9, 0, tzinfo=NY)
    assert record.state == "active" and record.current_level == 1
    assert record.next_escalation_at == wednesday9.astimezone(UTC)
    await engine.advance(WEEK)
    assert sent(recorder) == (
        keys(tuesday, ["user:l1"])
        + keys(wednesday9, ["user:l2"])
        + keys(wednesday9 + timedelta(minutes=30), ["user:l3"])
    )


async def test_friday_evening_level_waits_for_monday(bh):
    friday = datetime(2026, 1, 16, 17, 55, tzinfo=SEOUL)
    engine, recorder = await bh(ladder(delays=(0, 15), business_hours_only=True, timezone="Asia/Seoul"), friday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == (keys(friday, ["user:l1"]) + keys(datetime(2026, 1, 19, 9, 0, tzinfo=SEOUL), ["user:l2"]))


async def test_repeats_held_past_closing_are_not_sent_in_a_burst(bh):
    # seed policy at 17:55: L1 at 17:55; its repeats (18:00, 18:05) and L2 (18:10) are held to
    # the next morning, where the escalation wins and the missed repeats are dropped.
    tuesday = datetime(2026, 1, 13, 17, 55, tzinfo=NY)
    engine, recorder = await bh(bh_seed("America/New_York"), tuesday)
    await engine.trigger("inc", {"severity": "critical"}, "production_critical")
    await engine.advance(WEEK)
    wednesday9 = datetime(2026, 1, 14, 9, 0, tzinfo=NY)
    assert sent(recorder) == (
        keys(tuesday, SEED_L1) + keys(wednesday9, SEED_L2) + keys(wednesday9 + timedelta(minutes=30), SEED_L3)
    )


@pytest.mark.parametrize(
    "saturday, monday_utc",
    [
        # spring forward on Sunday 2026-03-08: Monday 09:00 is EDT (UTC-4)
        (datetime(2026, 3, 7, 12, 0, tzinfo=NY), datetime(2026, 3, 9, 13, 0, tzinfo=UTC)),
        # fall back on Sunday 2026-11-01: Monday 09:00 is EST (UTC-5)
        (datetime(2026, 10, 31, 12, 0, tzinfo=NY), datetime(2026, 11, 2, 14, 0, tzinfo=UTC)),
    ],
    ids=["march-dst", "november-dst"],
)
async def test_dst_weekend_trigger_fires_at_local_0900(bh, saturday, monday_utc):
    engine, recorder = await bh(ladder(delays=(0, 15), business_hours_only=True, timezone="America/New_York"), saturday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == [(monday_utc, "user:l1"), (monday_utc + timedelta(minutes=15), "user:l2")]


async def test_level_held_over_the_dst_weekend(bh):
    friday = datetime(2026, 3, 6, 17, 50, tzinfo=NY)  # 22:50 UTC, EST
    engine, recorder = await bh(ladder(delays=(0, 15), business_hours_only=True, timezone="America/New_York"), friday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == [
        (datetime(2026, 3, 6, 22, 50, tzinfo=UTC), "user:l1"),
        (datetime(2026, 3, 9, 13, 0, tzinfo=UTC), "user:l2"),
    ]


@pytest.mark.parametrize(
    "start_hour, saturday, expected_utc",
    [
        # 02:00 does not exist on 2026-03-08 in New York: the window opens at 03:00 EDT
        (2, datetime(2026, 3, 7, 12, 0, tzinfo=NY), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        # 01:00 happens twice on 2026-11-01: the window opens at the first one (EDT)
        (1, datetime(2026, 10, 31, 12, 0, tzinfo=NY), datetime(2026, 11, 1, 5, 0, tzinfo=UTC)),
    ],
    ids=["gap", "fold"],
)
async def test_window_opening_inside_a_dst_transition(bh, start_hour, saturday, expected_utc):
    policy = ladder(
        delays=(0,),
        business_hours_only=True,
        timezone="America/New_York",
        business_days=[6],
        business_hours_start=start_hour,
        business_hours_end=5,
    )
    engine, recorder = await bh(policy, saturday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == [(expected_utc, "user:l1")]


async def test_skip_mode_drops_notifications_outside_hours_but_the_ladder_advances(bh):
    tuesday = datetime(2026, 1, 13, 17, 52, tzinfo=NY)
    policy = bh_seed("America/New_York", business_hours_mode=BusinessHoursMode.SKIP)
    engine, recorder = await bh(policy, tuesday)
    result = await engine.trigger("inc", {"severity": "critical"}, "production_critical")
    await engine.advance(WEEK)

    # L1 17:52, repeat 17:57 sent; repeat 18:02, L2 18:07, L3 18:37 skipped
    assert sent(recorder) == keys(tuesday, SEED_L1) + keys(tuesday + timedelta(minutes=5), SEED_L1)
    record = engine.get_record(result.record.id)
    assert record.state == "active" and record.current_level == 3 and record.escalation_count == 2
    skipped = [h for h in record.history if h["event"] == "notification_skipped"]
    assert [(h["at"], h["level"]) for h in skipped] == [
        ((tuesday + timedelta(minutes=10)).astimezone(UTC).isoformat(), 1),
        ((tuesday + timedelta(minutes=15)).astimezone(UTC).isoformat(), 2),
        ((tuesday + timedelta(minutes=45)).astimezone(UTC).isoformat(), 3),
    ]
    assert record.notification_count == 4


async def test_skip_mode_saturday_trigger_sends_nothing_and_climbs(bh):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    policy = ladder(delays=(0, 15, 30), business_hours_only=True, timezone="Asia/Seoul", business_hours_mode="skip")
    engine, recorder = await bh(policy, saturday)
    result = await engine.trigger("inc", {}, "ladder")
    assert result.record.state == "active" and result.targets_notified == []
    await engine.advance(WEEK)
    assert sent(recorder) == []
    record = engine.get_record(result.record.id)
    assert record.current_level == 3
    assert sum(h["event"] == "notification_skipped" for h in record.history) == 3


async def test_notify_mode_sends_outside_hours(bh):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    policy = ladder(delays=(0, 15, 30), business_hours_only=True, timezone="Asia/Seoul", business_hours_mode="notify")
    engine, recorder = await bh(policy, saturday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == [
        (saturday.astimezone(UTC), "user:l1"),
        ((saturday + timedelta(minutes=15)).astimezone(UTC), "user:l2"),
        ((saturday + timedelta(minutes=45)).astimezone(UTC), "user:l3"),
    ]


@pytest.mark.parametrize("mode", ["wait", "skip"])
async def test_engine_check_business_hours_false_ignores_them(bh, mode):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    policy = ladder(delays=(0, 15), business_hours_only=True, timezone="Asia/Seoul", business_hours_mode=mode)
    engine, recorder = await bh(policy, saturday, check_business_hours=False)
    result = await engine.trigger("inc", {}, "ladder")
    assert result.record.state == "active"
    await engine.advance(WEEK)
    assert sent(recorder) == [
        (saturday.astimezone(UTC), "user:l1"),
        ((saturday + timedelta(minutes=15)).astimezone(UTC), "user:l2"),
    ]


async def test_business_hours_fields_are_ignored_without_business_hours_only(bh):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    engine, recorder = await bh(ladder(delays=(0,), timezone="Asia/Seoul"), saturday)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(WEEK)
    assert sent(recorder) == [(saturday.astimezone(UTC), "user:l1")]


@pytest.mark.parametrize("action", ["acknowledge", "resolve", "cancel"])
async def test_closing_or_acknowledging_a_held_record_means_nothing_is_ever_sent(bh, action):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    engine, recorder = await bh(ladder(delays=(0, 15), business_hours_only=True, timezone="Asia/Seoul"), saturday)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(hours=3))
    result = await getattr(engine, action)(record_id)
    assert result.success
    await engine.advance(WEEK)
    assert sent(recorder) == []
    assert engine.get_record(record_id).next_escalation_at is None


async def test_manual_escalate_starts_a_held_record_now(bh):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=SEOUL)
    engine, recorder = await bh(ladder(delays=(0, 15), business_hours_only=True, timezone="Asia/Seoul"), saturday)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    result = await engine.escalate(record_id)
    assert result.success and result.record.state == "active" and result.record.current_level == 1
    await engine.advance(WEEK)
    # L1 now (manually), L2 waits for Monday 09:00 KST
    assert sent(recorder) == [
        (saturday.astimezone(UTC), "user:l1"),
        (datetime(2026, 1, 12, 0, 0, tzinfo=UTC), "user:l2"),
    ]


def test_next_business_time_helpers():
    policy = ladder(delays=(0,), business_hours_only=True, timezone="America/New_York")
    inside = datetime(2026, 1, 13, 10, 0, tzinfo=NY)
    assert is_business_time(policy, inside)
    assert next_business_time(policy, inside) == inside
    assert not is_business_time(policy, datetime(2026, 1, 13, 18, 0, tzinfo=NY))  # end is exclusive
    assert is_business_time(policy, datetime(2026, 1, 13, 17, 59, 59, tzinfo=NY))
    assert next_business_time(policy, datetime(2026, 1, 13, 18, 0, tzinfo=NY)) == datetime(
        2026, 1, 14, 14, 0, tzinfo=UTC
    )
    assert next_business_time(policy, datetime(2026, 1, 17, 9, 0, tzinfo=NY)) == datetime(
        2026, 1, 19, 14, 0, tzinfo=UTC
    )


async def test_notify_only_level_skipped_outside_hours_does_not_stay_open_forever(bh):
    saturday = datetime(2026, 1, 10, 12, 0, tzinfo=NY)
    policy = ladder(
        delays=(0,),
        level_kwargs={1: dict(require_ack=False)},
        business_hours_only=True,
        timezone="America/New_York",
        business_hours_mode="skip",
    )
    engine, recorder = await bh(policy, saturday)
    first = await engine.trigger("inc", {}, "ladder")
    await engine.advance(timedelta(days=2, hours=-2))  # Monday 10:00
    assert engine.get_record(first.record.id).state != "active"
    again = await engine.trigger("inc", {}, "ladder")
    assert again.action == "trigger"
    await engine.drain()
    assert sent(recorder) == keys(datetime(2026, 1, 12, 10, 0, tzinfo=NY), ["user:l1"])
