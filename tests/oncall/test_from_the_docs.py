"""Scenarios written only from docs/oncall.md (not from the code): each is driven through the
public API the page shows (a policies file → ``EscalationPolicyManager`` on a ``FakeClock``,
``engine.oncall``), minute by minute, and compared with what the page says must happen —
exactly who is paged, when, and that nothing else is sent."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation import EscalationPolicyManager
from airflow_escalation.oncall.silence import MaintenanceWindow
from airflow_escalation.testing import FakeClock, RecordingHandler

UTC = timezone.utc

USERS = """
users:
  - {id: ann, name: Ann, time_zone: America/New_York, contacts: [{type: email, address: ann@example.com}]}
  - {id: ben, name: Ben, time_zone: America/New_York, contacts: [{type: email, address: ben@example.com}]}
  - {id: cat, name: Cat, time_zone: America/New_York, contacts: [{type: email, address: cat@example.com}]}
  - {id: dan, name: Dan, time_zone: Europe/Berlin, contacts: [{type: email, address: dan@example.com}]}
  - {id: eve, name: Eve, time_zone: Europe/Berlin, contacts: [{type: email, address: eve@example.com}]}
  - {id: fay, name: Fay, time_zone: Europe/Berlin, contacts: [{type: email, address: fay@example.com}]}
  - {id: gus, name: Gus, time_zone: UTC, contacts: [{type: email, address: gus@example.com}]}
  - {id: hal, name: Hal, time_zone: UTC, contacts: [{type: email, address: hal@example.com}]}
  - {id: ivy, name: Ivy, time_zone: UTC, contacts: [{type: email, address: ivy@example.com}]}
  - {id: kim, name: Kim, time_zone: UTC, contacts: [{type: email, address: kim@example.com}]}
  - id: lea
    name: Lea
    time_zone: Europe/Paris
    contacts:
      - {type: email, address: lea@example.com}
      - {type: slack, address: U0LEA}
      - {type: webhook, address: /pager/lea}
      - {type: phone, address: "+33 600000000"}
"""


def level1(name: str, target: str, repeat_count: int = 0, interval: int = 0) -> str:
    kind, ident = target.split(":")
    return f"""
    - name: {name}
      levels:
        - level: 1
          targets: [{{type: {kind}, identifier: {ident}}}]
          repeat_count: {repeat_count}
          repeat_interval_minutes: {interval or 5}
"""


class Run:
    """A manager on the fake clock, advanced in steps of at most one minute."""

    def __init__(self, yaml_text: str, start: datetime) -> None:
        self.clock = FakeClock(start)
        self.recorder = RecordingHandler(self.clock)
        self.manager = EscalationPolicyManager.from_yaml(yaml_text, clock=self.clock)
        self.manager.set_notification_handler(self.recorder)

    async def __aenter__(self) -> Run:
        await self.manager.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.manager.stop()

    @property
    def engine(self):
        return self.manager.engine

    @property
    def oncall(self):
        return self.manager.engine.oncall

    async def to(self, when: datetime) -> None:
        while self.clock.now() < when:
            await self.engine.advance(min(timedelta(minutes=1), when - self.clock.now()))
        await self.engine.drain()

    async def trigger(self, incident: str, context: dict, policy: str):
        result = await self.manager.trigger(incident, context, policy)
        await self.engine.drain()
        return result

    def sent(self) -> dict[str, list[str]]:
        """``"MM-DD HH:MM:SS incident" -> sorted targets`` for every notification sent."""
        by_moment: dict[str, list[str]] = defaultdict(list)
        for n in self.recorder.sent:
            by_moment[f"{n.at.astimezone(UTC):%m-%d %H:%M:%S} {n.incident_id}"].append(n.target)
        return {key: sorted(targets) for key, targets in sorted(by_moment.items())}

    def history(self, record_id: str, event: str) -> list[dict]:
        return [e for e in self.engine.get_record(record_id).history if e["event"] == event]


# --- a weekly rotation in New York across both DST changes; a repeat across a handoff ----------

NEW_YORK = (
    "escalation:\n  policies:"
    + level1("ny-spring", "schedule:ny", repeat_count=3, interval=30)
    + level1("ny-fall", "schedule:ny-fall", repeat_count=4, interval=20)
    + USERS
    + """
schedules:
  - name: ny
    time_zone: America/New_York
    layers:
      - name: weekly
        rotation:
          participants: [ann, ben, cat]
          shift_unit: weeks
          start: 2026-02-20          # a Friday: the anchor moves on to Sunday 2026-02-22
          handoff_weekday: sun
          handoff_time: "02:30"      # does not exist on 2026-03-08 (spring forward)
  - name: ny-fall
    time_zone: America/New_York
    layers:
      - name: weekly
        rotation:
          participants: [ann, ben]
          start: 2026-10-25
          handoff_weekday: sunday
          handoff_time: "01:30"      # happens twice on 2026-11-01 (fall back)
"""
)


async def test_weekly_rotation_across_spring_forward_and_a_repeat_across_the_handoff():
    async with Run(NEW_YORK, datetime(2026, 3, 8, 6, 15, tzinfo=UTC)) as run:
        # 02:30 EST = 07:30 UTC; on 2026-03-08 02:30 does not exist: 03:30 EDT = 07:30 UTC;
        # from then on 02:30 EDT = 06:30 UTC
        handoffs = run.oncall.handoffs("ny", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC))
        assert [(h.start, h.user) for h in handoffs] == [
            (datetime(2026, 2, 22, 7, 30, tzinfo=UTC), "ann"),
            (datetime(2026, 3, 1, 7, 30, tzinfo=UTC), "ben"),
            (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), "cat"),
            (datetime(2026, 3, 15, 6, 30, tzinfo=UTC), "ann"),
        ]
        # before the anchor the rotation has nobody (and there is no fallback)
        before = run.oncall.on_call("ny", datetime(2026, 2, 22, 7, 29, 59, tzinfo=UTC))
        assert (before.user, before.source) == (None, "nobody")

        first = await run.trigger("db.down", {"dag_id": "db", "severity": "high"}, "ny-spring")
        await run.to(datetime(2026, 3, 8, 9, 0, tzinfo=UTC))
        assert run.sent() == {
            "03-08 06:15:00 db.down": ["email:ben@example.com"],
            "03-08 06:45:00 db.down": ["email:ben@example.com"],
            "03-08 07:15:00 db.down": ["email:ben@example.com"],  # 03:15 EDT: still ben
            "03-08 07:45:00 db.down": ["email:cat@example.com"],  # repeat after the handoff
        }
        labels = [r["label"] for r in run.oncall.resolutions(first.record.id)]
        assert labels == ["schedule:ny → ben"] * 3 + ["schedule:ny → cat"]


async def test_weekly_rotation_across_fall_back_takes_the_second_occurrence():
    async with Run(NEW_YORK, datetime(2026, 11, 1, 5, 20, tzinfo=UTC)) as run:
        # 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST): the second one counts
        handoffs = run.oncall.handoffs(
            "ny-fall", datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
        )
        assert [(h.start, h.user) for h in handoffs] == [
            (datetime(2026, 10, 25, 5, 30, tzinfo=UTC), "ann"),
            (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "ben"),
            (datetime(2026, 11, 8, 6, 30, tzinfo=UTC), "ann"),
        ]
        await run.trigger("db.slow", {"dag_id": "db"}, "ny-fall")
        await run.to(datetime(2026, 11, 1, 7, 30, tzinfo=UTC))
        assert run.sent() == {
            "11-01 05:20:00 db.slow": ["email:ann@example.com"],
            "11-01 05:40:00 db.slow": ["email:ann@example.com"],  # 01:40 EDT, first 01:30 passed
            "11-01 06:00:00 db.slow": ["email:ann@example.com"],
            "11-01 06:20:00 db.slow": ["email:ann@example.com"],
            "11-01 06:40:00 db.slow": ["email:ben@example.com"],
        }


# --- a daily rotation with a business-hours layer on top; a 12-hour rotation ------------------

BERLIN = (
    "escalation:\n  policies:"
    + level1("biz-policy", "schedule:biz", repeat_count=11, interval=60)
    + USERS
    + """
schedules:
  - name: biz
    time_zone: Europe/Berlin
    layers:
      - name: daily
        rotation:
          participants: [dan, eve]
          shift_unit: days
          start: "2026-03-02T08:00"   # a date-time: handoffs at 08:00
      - name: office
        rotation: {participants: [fay], shift_unit: days, start: 2026-03-02}
        restrictions:
          - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}
  - name: twelve
    time_zone: Europe/Berlin
    layers:
      - name: halves
        rotation:
          participants: [gus, hal]
          shift_length: 12
          shift_unit: hours
          start: 2026-03-28
          handoff_time: "08:00"
    fallback: ivy
"""
)


async def test_business_hours_layer_over_a_daily_rotation_minute_by_minute():
    async with Run(BERLIN, datetime(2026, 3, 3, 6, 30, tzinfo=UTC)) as run:  # Tuesday 07:30 Berlin
        record = await run.trigger("etl.load", {"dag_id": "etl"}, "biz-policy")
        await run.to(datetime(2026, 3, 3, 18, 0, tzinfo=UTC))
        expected = {"03-03 06:30:00 etl.load": ["email:dan@example.com"]}  # Monday's shift until 08:00
        expected["03-03 07:30:00 etl.load"] = ["email:eve@example.com"]  # 08:30: Tuesday's shift
        for hour in range(8, 16):  # 09:30 … 16:30 Berlin: the office layer
            expected[f"03-03 {hour:02d}:30:00 etl.load"] = ["email:fay@example.com"]
        expected["03-03 16:30:00 etl.load"] = ["email:eve@example.com"]  # 17:30: office closed
        expected["03-03 17:30:00 etl.load"] = ["email:eve@example.com"]
        assert run.sent() == expected
        sources = [r.get("source") for r in run.oncall.resolutions(record.record.id)]
        assert sources[:3] == ["layer:daily", "layer:daily", "layer:office"]
        # [09:00, 17:00): at 17:00:00 Berlin (16:00 UTC) the office layer is no longer active
        assert run.oncall.on_call("biz", datetime(2026, 3, 3, 15, 59, 59, tzinfo=UTC)).user == "fay"
        assert run.oncall.on_call("biz", datetime(2026, 3, 3, 16, 0, tzinfo=UTC)).user == "eve"
        assert run.oncall.on_call("biz", datetime(2026, 3, 3, 8, 0, tzinfo=UTC)).user == "fay"
        # days are counted on the wall clock: 08:00 Berlin is 07:00 UTC, then 06:00 UTC after DST
        handoffs = run.oncall.handoffs("biz", datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC))
        assert [(h.start, h.user) for h in handoffs] == [
            (datetime(2026, 3, 28, 7, 0, tzinfo=UTC), "dan"),
            (datetime(2026, 3, 29, 6, 0, tzinfo=UTC), "eve"),
        ]


async def test_hour_shifts_count_elapsed_time_and_the_fallback_before_the_anchor():
    async with Run(BERLIN, datetime(2026, 3, 27, tzinfo=UTC)) as run:
        oncall = run.oncall
        # the anchor is 2026-03-28 08:00 CET = 07:00 UTC; shifts of 12 real hours
        handoffs = oncall.handoffs("twelve", datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC))
        assert [(h.start, h.user) for h in handoffs] == [
            (datetime(2026, 3, 28, 7, 0, tzinfo=UTC), "gus"),
            (datetime(2026, 3, 28, 19, 0, tzinfo=UTC), "hal"),
            (datetime(2026, 3, 29, 7, 0, tzinfo=UTC), "gus"),  # 09:00 CEST: the wall clock moved
            (datetime(2026, 3, 29, 19, 0, tzinfo=UTC), "hal"),
        ]
        before = oncall.on_call("twelve", datetime(2026, 3, 28, 6, 59, tzinfo=UTC))
        assert (before.user, before.source) == ("ivy", "fallback")


# --- overrides: part of a shift, to the minute; the one created last wins ---------------------

OPS = (
    "escalation:\n  policies:"
    + level1("ops-policy", "schedule:ops", repeat_count=5, interval=2)
    + USERS
    + """
schedules:
  - name: ops
    time_zone: UTC
    layers:
      - name: base
        rotation: {participants: [ivy], shift_unit: days, start: 2026-06-01}
"""
)


def at(hour: int, minute: int, second: int = 0, day: int = 10, month: int = 6) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


async def test_overrides_cover_part_of_a_shift_to_the_minute():
    async with Run(OPS, at(10, 0)) as run:
        oncall = run.oncall
        wide = oncall.create_override("ops", "gus", at(10, 7), at(10, 13), created_by="lead")
        await run.to(at(10, 1))
        narrow = oncall.create_override("ops", "hal", at(10, 9), at(10, 11), created_by="lead")
        assert oncall.on_call("ops", at(10, 6, 59)).user == "ivy"
        now = oncall.on_call("ops", at(10, 7))
        assert (now.user, now.source) == ("gus", f"override:{wide.id}")
        assert oncall.on_call("ops", at(10, 9)).source == f"override:{narrow.id}"
        assert oncall.on_call("ops", at(10, 12, 59)).user == "gus"
        assert oncall.on_call("ops", at(10, 13)).user == "ivy"  # [start, end)

        await run.to(at(10, 5))
        record = await run.trigger("api.5xx", {"dag_id": "api"}, "ops-policy")
        await run.to(at(10, 30))
        assert run.sent() == {
            "06-10 10:05:00 api.5xx": ["email:ivy@example.com"],
            "06-10 10:07:00 api.5xx": ["email:gus@example.com"],
            "06-10 10:09:00 api.5xx": ["email:hal@example.com"],  # created last: wins
            "06-10 10:11:00 api.5xx": ["email:gus@example.com"],
            "06-10 10:13:00 api.5xx": ["email:ivy@example.com"],
            "06-10 10:15:00 api.5xx": ["email:ivy@example.com"],
        }
        assert [r["label"] for r in oncall.resolutions(record.record.id)] == [
            "schedule:ops → ivy",
            "schedule:ops → gus",
            "schedule:ops → hal",
            "schedule:ops → gus",
            "schedule:ops → ivy",
            "schedule:ops → ivy",
        ]
        assert oncall.delete_override(narrow.id).id == narrow.id
        assert [o.id for o in oncall.list_overrides("ops", include_past=True)] == [wide.id]


# --- silences: glob and severity matchers starting and ending while a record is open ----------

SILENCES = "escalation:\n  policies:" + level1("etl-policy", "user:kim", repeat_count=6, interval=10) + USERS


async def test_a_silence_starting_and_ending_while_records_are_open():
    async with Run(SILENCES, at(10, 0)) as run:
        oncall = run.oncall
        kim = ["email:kim@example.com"]
        # a dag_id matcher is compared for equality, not as a glob: this one matches nothing
        oncall.create_silence({"dag_id": "et*"}, duration=timedelta(hours=3), comment="not a glob")
        load = await run.trigger("etl.load", {"dag_id": "etl", "task_id": "load", "severity": "critical"}, "etl-policy")
        high = await run.trigger("etl.sync", {"dag_id": "etl", "task_id": "sync", "severity": "high"}, "etl-policy")
        other = await run.trigger("etlx", {"dag_id": "etl", "task_id": "x", "severity": "critical"}, "etl-policy")
        await run.to(at(10, 5))
        silence = oncall.create_silence(
            {"incident": "etl.*", "severity": "CRITICAL"},
            starts_at=at(10, 20),
            ends_at=at(10, 40),
            comment="db failover",
        )
        await run.to(at(10, 25))
        suppressed = await run.trigger("etl.new", {"dag_id": "etl", "severity": "Critical"}, "etl-policy")
        assert suppressed.code == "suppressed" and suppressed.record.state == "cancelled"
        assert suppressed.record.metadata["suppressed_by"] == {
            "kind": "silence",
            "id": silence.id,
            "comment": "db failover",
            "ends_at": at(10, 40).isoformat(),
        }
        assert [e["event"] for e in suppressed.record.history] == ["triggered", "suppressed", "cancel"]
        await run.to(at(10, 39, 59))
        last_second = await run.trigger("etl.late", {"severity": "critical"}, "etl-policy")
        assert last_second.code == "suppressed"
        await run.to(at(10, 40))
        after = await run.trigger("etl.after", {"severity": "critical"}, "etl-policy")
        assert after.success
        # a second silence on DAG and task, expired early
        await run.to(at(10, 45))
        second = oncall.create_silence({"dag_id": "etl", "task_id": "load"}, duration=timedelta(hours=1))
        await run.to(at(10, 55))
        oncall.expire_silence(second.id)
        await run.to(at(12, 0))

        expected: dict[str, list[str]] = {}
        for minute in range(0, 61, 10):
            hour, mm = 10 + minute // 60, minute % 60
            for incident in ("etl.sync", "etlx"):  # severity high; "etlx" is not "etl.*"
                expected[f"06-10 {hour}:{mm:02d}:00 {incident}"] = kim
            if minute not in (20, 30, 50):  # muted by the first silence, then by the second
                expected[f"06-10 {hour}:{mm:02d}:00 etl.load"] = kim
        for minute in range(40, 101, 10):
            hour, mm = 10 + minute // 60, minute % 60
            expected[f"06-10 {hour}:{mm:02d}:00 etl.after"] = kim
        assert run.sent() == dict(sorted(expected.items()))

        muted = run.history(load.record.id, "notification_muted")
        assert [(e["at"], e["details"]["round"], e["details"]["id"]) for e in muted] == [
            (at(10, 20).isoformat(), 2, silence.id),
            (at(10, 30).isoformat(), 3, silence.id),
            (at(10, 50).isoformat(), 5, second.id),
        ]
        # the clock kept running: all six repeats counted, the record is still open, nothing replayed
        assert run.engine.get_record(load.record.id).state in ("active", "acknowledged", "timed_out")
        assert run.history(high.record.id, "notification_muted") == []
        assert run.history(other.record.id, "notification_muted") == []
        assert oncall.get_silence(second.id).ends_at == at(10, 55)


async def test_people_act_during_a_silence_and_a_manual_escalate_pages():
    policy = """
escalation:
  policies:
    - name: two-levels
      levels:
        - {level: 1, targets: [{type: user, identifier: kim}], repeat_count: 2, repeat_interval_minutes: 10}
        - {level: 2, delay_minutes: 60, targets: [{type: user, identifier: lea}]}
"""
    async with Run(policy + USERS, at(9, 0)) as run:
        record = await run.trigger("web.down", {"dag_id": "web"}, "two-levels")
        run.oncall.create_silence({"policy": "two-levels"}, duration=timedelta(hours=2))
        await run.to(at(9, 15))
        escalated = await run.engine.escalate(record.record.id, escalated_by="kim")
        assert escalated.success
        await run.engine.drain()
        await run.to(at(9, 30))
        assert (await run.engine.acknowledge(record.record.id, acknowledged_by="lea")).success
        await run.to(at(12, 0))
        assert run.sent() == {
            "06-10 09:00:00 web.down": ["email:kim@example.com"],
            # the manual escalate is not a due step: it pages lea through every deliverable method
            "06-10 09:15:00 web.down": ["channel:U0LEA", "email:lea@example.com", "webhook:/pager/lea"],
        }
        assert [e["details"]["round"] for e in run.history(record.record.id, "notification_muted")] == [1]


# --- recurring maintenance windows over midnight and over a DST change ------------------------

WINDOWS = (
    "escalation:\n  policies:"
    + level1("nightly-policy", "user:kim", repeat_count=6, interval=20)
    + level1("dst-policy", "user:kim")
    + USERS
    + """
maintenance_windows:
  - name: over-midnight
    cron: "30 23 * * *"
    duration_minutes: 90
    time_zone: Europe/Berlin
    dag_ids: [nightly]
    comment: vacuum
  - name: at-two-thirty
    cron: "30 2 * * *"
    duration_minutes: 60
    time_zone: Europe/Berlin
    policies: [dst-policy]
"""
)


async def test_a_window_over_midnight_mutes_an_open_record_and_suppresses_new_ones():
    async with Run(WINDOWS, at(22, 0, day=27, month=3)) as run:  # Friday 23:00 Berlin (UTC+1)
        open_record = await run.trigger("nightly.open", {"dag_id": "nightly"}, "nightly-policy")
        await run.to(at(22, 29, 59, day=27, month=3))
        assert (await run.trigger("nightly.a", {"dag_id": "nightly"}, "dst-policy")).success
        await run.to(at(22, 30, day=27, month=3))  # 23:30 Berlin: open for 90 minutes
        inside = await run.trigger("nightly.b", {"dag_id": "nightly"}, "dst-policy")
        assert inside.code == "suppressed"
        assert inside.record.metadata["suppressed_by"] == {
            "kind": "maintenance_window",
            "id": "over-midnight",
            "comment": "vacuum",
            "ends_at": at(0, 0, day=28, month=3).isoformat(),
        }
        await run.to(at(23, 59, 59, day=27, month=3))
        assert (await run.trigger("nightly.c", {"dag_id": "nightly"}, "dst-policy")).code == "suppressed"
        await run.to(at(0, 0, day=28, month=3))
        assert (await run.trigger("nightly.d", {"dag_id": "nightly"}, "dst-policy")).success
        await run.to(at(1, 0, day=28, month=3))
        kim = ["email:kim@example.com"]
        assert run.sent() == {
            "03-27 22:00:00 nightly.open": kim,
            "03-27 22:20:00 nightly.open": kim,
            "03-27 22:29:59 nightly.a": kim,
            # 22:40, 23:00, 23:20, 23:40 are muted
            "03-28 00:00:00 nightly.d": kim,
            "03-28 00:00:00 nightly.open": kim,
        }
        muted = run.history(open_record.record.id, "notification_muted")
        assert [(e["details"]["round"], e["details"]["kind"]) for e in muted] == [
            (2, "maintenance_window"),
            (3, "maintenance_window"),
            (4, "maintenance_window"),
            (5, "maintenance_window"),
        ]


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        (at(1, 30, day=28, month=3), at(2, 30, day=28, month=3)),  # 02:30 CET
        (at(1, 30, day=29, month=3), at(2, 30, day=29, month=3)),  # 02:30 does not exist: 03:30 CEST
        (at(0, 30, day=30, month=3), at(1, 30, day=30, month=3)),  # 02:30 CEST
    ],
)
async def test_a_window_is_evaluated_on_its_own_wall_clock_across_spring_forward(opening, closing):
    async with Run(WINDOWS, opening - timedelta(hours=2)) as run:
        await run.to(opening - timedelta(seconds=1))
        assert (await run.trigger("x.1", {"dag_id": "any"}, "dst-policy")).success
        assert (await run.trigger("x.other", {"dag_id": "any"}, "nightly-policy")).success
        await run.to(opening)
        opened = await run.trigger("x.2", {"dag_id": "any"}, "dst-policy")
        assert opened.code == "suppressed"
        assert opened.record.metadata["suppressed_by"]["ends_at"] == closing.isoformat()
        await run.to(closing - timedelta(seconds=1))
        assert (await run.trigger("x.3", {"dag_id": "any"}, "dst-policy")).code == "suppressed"
        await run.to(closing)
        assert (await run.trigger("x.4", {"dag_id": "any"}, "dst-policy")).success
        assert {key.split()[-1] for key in run.sent()} == {"x.1", "x.4", "x.other"}


# --- user: targets ------------------------------------------------------------------------------

USER_TARGETS = """
escalation:
  policies:
    - name: people
      levels:
        - level: 1
          targets: [{type: user, identifier: lea}, {type: user, identifier: zed}]
"""


async def test_a_user_target_reaches_every_deliverable_contact_and_an_unknown_user_is_sent_as_written():
    async with Run(USER_TARGETS + USERS, at(8, 0)) as run:
        record = await run.trigger("crm.sync", {"dag_id": "crm"}, "people")
        await run.to(at(9, 0))
        assert run.sent() == {
            "06-10 08:00:00 crm.sync": ["channel:U0LEA", "email:lea@example.com", "user:zed", "webhook:/pager/lea"]
        }
        labels = [r["label"] for r in run.oncall.resolutions(record.record.id)]
        assert labels == ["user:lea → lea"]


# --- the file is refused with the field named ------------------------------------------------

BAD_BASE = "escalation:\n  policies:" + level1("p", "user:kim") + USERS


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (
            "schedules:\n  - {name: s, time_zone: UTC, layers: [{name: l, rotation: {participants: [kim, erin], start: 2026-01-01}}]}",
            "schedules[0].layers[0].rotation.participants[1]",
        ),
        (
            "schedules:\n  - {name: s, time_zone: Mars/Olympus, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01}}]}",
            "schedules[0].time_zone",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01, shift_length: -1}}]}",
            "schedules[0].layers[0].rotation.shift_length",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01, handoff_weekday: funday}}]}",
            "schedules[0].layers[0].rotation.handoff_weekday",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01, handoff_time: '25:00'}}]}",
            "schedules[0].layers[0].rotation.handoff_time",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: '2026-01-01T08:00+01:00'}}]}",
            "schedules[0].layers[0].rotation.start",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01}, restrictions: [{start: '09:00', end: '24:30'}]}]}",
            "schedules[0].layers[0].restrictions[0].end",
        ),
        (
            "schedules:\n  - {name: s, fallback: erin, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01}}]}",
            "schedules[0].fallback",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01}}]}\n"
            "  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01}}]}",
            "schedules[1].name",
        ),
        (
            "maintenance_windows:\n  - {name: w, cron: '0 25 * * *', duration_minutes: 10, dag_ids: [a]}",
            "maintenance_windows[0].cron",
        ),
        (
            "maintenance_windows:\n  - {name: w, cron: '0 2 * * *', duration_minutes: 20000, dag_ids: [a]}",
            "maintenance_windows[0].duration_minutes",
        ),
        (
            "maintenance_windows:\n  - {name: w, cron: '0 2 * * *', duration_minutes: 10, time_zone: Nowhere/Land, dag_ids: [a]}",
            "maintenance_windows[0].time_zone",
        ),
        (
            "maintenance_windows:\n  - {name: w, cron: '0 2 * * *', duration_minutes: 10, policies: [p, nope]}",
            "maintenance_windows[0].policies[1]: unknown policy 'nope'",
        ),
        (
            "schedules:\n  - {name: s, layers: [{name: l, rotation: {participants: [kim], start: 2026-01-01}},"
            " {name: l, rotation: {participants: [kim], start: 2026-01-01}}]}",
            "schedules[0].layers[1].name: duplicate layer name 'l'",
        ),
        ("users:\n  - {id: kim, name: K2}", "users[10].id"),
    ],
)
def test_invalid_sections_are_refused_naming_the_field(section, field):
    text = BAD_BASE + section
    if section.startswith("users:"):
        text = BAD_BASE.replace("\nusers:\n", "\nusers:\n  - {id: kim, name: K2}\n", 1)
    with pytest.raises(Exception) as refused:
        EscalationPolicyManager.from_yaml(text, clock=FakeClock(at(0, 0)))
    assert field in str(refused.value)


async def test_runtime_overrides_and_silences_are_refused_naming_the_field():
    async with Run(OPS, at(10, 0)) as run:
        oncall = run.oncall
        with pytest.raises(ValueError, match="end"):
            oncall.create_override("ops", "gus", at(11, 0), at(10, 0))
        with pytest.raises(ValueError, match="user"):
            oncall.create_override("ops", "nobody-here", at(10, 0), at(11, 0))
        with pytest.raises(ValueError, match="schedule"):
            oncall.create_override("nope", "gus", at(10, 0), at(11, 0))
        with pytest.raises(ValueError, match="matchers"):
            oncall.create_silence({}, duration=timedelta(minutes=5))
        with pytest.raises(ValueError, match="ends_at"):
            oncall.create_silence({"dag_id": "a"}, starts_at=at(8, 0), ends_at=at(9, 0))  # ends in the past
        with pytest.raises(ValueError, match="start"):
            oncall.create_override("ops", "gus", datetime(2026, 6, 10, 11), at(12, 0))  # naive
        with pytest.raises(ValueError, match="starts_at"):
            oncall.create_silence({"dag_id": "a"}, starts_at=datetime(2026, 6, 10, 11), duration=timedelta(hours=1))
        assert oncall.list_silences() == []


# --- restrictions: over midnight, 24 hours, across a DST change --------------------------------

RESTRICTED = (
    "escalation:\n  policies:"
    + level1("p", "user:kim")
    + USERS
    + """
schedules:
  - name: nights
    time_zone: Europe/Berlin
    layers:
      - name: all-week
        rotation: {participants: [dan], shift_unit: weeks, start: 2026-01-05}
      - name: friday-night
        rotation: {participants: [eve], shift_unit: weeks, start: 2026-01-05}
        restrictions:
          - {days: [fri], start: "22:00", end: "06:00"}
      - name: sunday-all-day
        rotation: {participants: [fay], shift_unit: weeks, start: 2026-01-05}
        restrictions:
          - {days: [sun], start: "07:00", end: "07:00"}
      - name: early-sunday
        rotation: {participants: [gus], shift_unit: weeks, start: 2026-01-05}
        restrictions:
          - {days: [sun], start: "01:00", end: "03:00"}
"""
)


async def test_restrictions_over_midnight_a_whole_day_and_across_spring_forward():
    async with Run(RESTRICTED, at(0, 0, day=27, month=3)) as run:
        who = lambda *args: run.oncall.on_call("nights", at(*args)).user  # noqa: E731
        # Friday 2026-03-27 22:00 CET (21:00 UTC) to Saturday 06:00 CET (05:00 UTC)
        assert who(20, 59, 59, 27, 3) == "dan"
        assert who(21, 0, 0, 27, 3) == "eve"
        assert who(4, 59, 59, 28, 3) == "eve"
        assert who(5, 0, 0, 28, 3) == "dan"
        # Sunday 2026-03-29: 01:00 CET is 00:00 UTC; 03:00 CEST is 01:00 UTC (one real hour)
        assert who(23, 59, 59, 28, 3) == "dan"
        assert who(0, 0, 0, 29, 3) == "gus"
        assert who(0, 59, 59, 29, 3) == "gus"
        # start == end is 24 hours: Sunday 07:00 CEST (05:00 UTC) to Monday 07:00 CEST
        assert who(1, 0, 0, 29, 3) == "dan"
        assert who(5, 0, 0, 29, 3) == "fay"
        assert who(4, 59, 59, 30, 3) == "fay"
        assert who(5, 0, 0, 30, 3) == "dan"
        assert run.oncall.on_call("nights", at(5, 0, 0, 29, 3)).source == "layer:sunday-all-day"


# --- several matching silences; a suppressed record starts no cooldown -------------------------

COOLDOWN = """
escalation:
  policies:
    - name: cool
      cooldown_minutes: 30
      levels:
        - {level: 1, targets: [{type: user, identifier: kim}]}
maintenance_windows:
  - {name: always, cron: "0 * * * *", duration_minutes: 60, dag_ids: [etl], comment: hourly}
"""


async def test_the_first_started_silence_is_named_before_a_window_and_no_cooldown_follows():
    async with Run(COOLDOWN + USERS, at(9, 30)) as run:
        oncall = run.oncall
        later = oncall.create_silence({"dag_id": "etl"}, starts_at=at(9, 50), duration=timedelta(hours=1))
        earlier = oncall.create_silence({"policy": "cool"}, starts_at=at(9, 40), duration=timedelta(minutes=15))
        await run.to(at(9, 35))
        assert (await run.trigger("etl.a", {"dag_id": "etl"}, "cool")).record.metadata["suppressed_by"][
            "id"
        ] == "always"
        await run.to(at(9, 52))
        first = await run.trigger("etl.a", {"dag_id": "etl"}, "cool")
        assert first.record.metadata["suppressed_by"]["id"] == earlier.id
        await run.to(at(9, 55))  # the earlier silence has ended
        assert (await run.trigger("etl.a", {"dag_id": "etl"}, "cool")).record.metadata["suppressed_by"][
            "id"
        ] == later.id
        oncall.expire_silence(later.id)
        # the window is still open for etl: use another DAG under the same policy and incident id
        again = await run.trigger("etl.a", {"dag_id": "other"}, "cool")
        assert again.success  # three suppressed records started no cooldown
        await run.to(at(10, 30))
        assert run.sent() == {"06-10 09:55:00 etl.a": ["email:kim@example.com"]}


# --- a schedule with nobody on call: the attempt fails and is resolved again at the retry ------

LATE_START = (
    "escalation:\n  policies:"
    + level1("late", "schedule:late")
    + USERS
    + """
schedules:
  - name: late
    time_zone: UTC
    layers:
      - name: only
        rotation: {participants: [hal], shift_unit: days, start: "2026-06-10T10:01"}
"""
)


async def test_nobody_on_call_fails_the_attempt_and_the_retry_reaches_the_new_person():
    async with Run(LATE_START, at(10, 0)) as run:
        record = await run.trigger("late.x", {"dag_id": "late"}, "late")
        await run.to(at(10, 10))
        # attempts at 10:00:00 (nobody), 10:00:30 (nobody), 10:01:30 (hal): 30 s, doubling
        assert run.sent() == {"06-10 10:01:30 late.x": ["email:hal@example.com"]}
        assert [r["label"] for r in run.oncall.resolutions(record.record.id)][-1] == "schedule:late → hal"


# --- windows on a fall-back night: a fixed hour opens once, an hourly window covers every hour --

FALL_BACK_WINDOWS = """
escalation:
  policies:
    - name: quiet
      levels:
        - {level: 1, targets: [{type: user, identifier: kim}]}
maintenance_windows:
  - {name: hourly, cron: "0 * * * *", duration_minutes: 60, dag_ids: [hourly], time_zone: Europe/Berlin}
  - {name: at-two-thirty, cron: "30 2 * * *", duration_minutes: 30, dag_ids: [daily], time_zone: Europe/Berlin}
"""


async def test_windows_on_a_fall_back_night():
    # 2026-10-25 in Berlin: 03:00 CEST (01:00 UTC) falls back to 02:00 CET; 02:00-03:00 happens twice
    async with Run(FALL_BACK_WINDOWS + USERS, at(22, 0, day=24, month=10)) as run:
        outcomes = {}
        for minutes in range(0, 240, 15):
            await run.to(at(22, 0, day=24, month=10) + timedelta(minutes=minutes))
            hourly = await run.trigger(f"h{minutes}", {"dag_id": "hourly"}, "quiet")
            daily = await run.trigger(f"d{minutes}", {"dag_id": "daily"}, "quiet")
            outcomes[f"{run.clock.now():%H:%M}"] = (hourly.code, daily.code)
        # the hourly window opens at both 02:00s (00:00 and 01:00 UTC): every moment is covered
        assert {hourly for hourly, _ in outcomes.values()} == {"suppressed"}
        # 02:30 happens twice: the daily window opens at the second, 02:30 CET = 01:30 UTC
        assert [t for t, (_, daily) in outcomes.items() if daily == "suppressed"] == ["01:30", "01:45"]
        window = MaintenanceWindow(
            name="h", cron="0 * * * *", duration_minutes=60, dag_ids=["a"], time_zone="Europe/Berlin"
        )
        openings = window.openings(at(23, 30, day=24, month=10), at(2, 0, day=25, month=10))
        assert [opened for opened, _ in openings] == [
            at(23, 0, day=24, month=10),
            at(0, 0, day=25, month=10),
            at(1, 0, day=25, month=10),
        ]


# --- more silence rules: a retry written before the silence, expiring, a muted escalation -----


async def test_a_retry_written_before_a_silence_is_still_sent():
    async with Run(LATE_START, at(10, 0)) as run:
        await run.trigger("late.y", {"dag_id": "late"}, "late")  # nobody on call: retried
        await run.to(at(10, 0, 10))
        run.oncall.create_silence({"dag_id": "late"}, duration=timedelta(hours=1))
        await run.to(at(10, 10))
        assert run.sent() == {"06-10 10:01:30 late.y": ["email:hal@example.com"]}


async def test_expiring_a_pending_and_an_expired_silence():
    async with Run(SILENCES, at(10, 0)) as run:
        oncall = run.oncall
        pending = oncall.create_silence({"dag_id": "etl"}, starts_at=at(11, 0), duration=timedelta(hours=1))
        assert oncall.get_silence(pending.id).status(at(10, 0)) == "pending"
        expired = oncall.expire_silence(pending.id)
        assert expired.ends_at == at(10, 0) and expired.status(at(10, 0)) == "expired"
        await run.to(at(10, 5))
        assert oncall.expire_silence(pending.id).ends_at == at(10, 0)  # changes nothing
        assert oncall.list_silences() == []
        assert [s.id for s in oncall.list_silences(include_expired=True)] == [pending.id]
        await run.to(at(11, 30))
        assert (await run.trigger("etl.z", {"dag_id": "etl"}, "etl-policy")).success


async def test_a_muted_escalation_still_climbs_and_the_next_level_resumes_after_the_silence():
    policy = """
escalation:
  policies:
    - name: climb
      levels:
        - {level: 1, targets: [{type: user, identifier: kim}]}
        - {level: 2, delay_minutes: 30, targets: [{type: user, identifier: ivy}], repeat_count: 2, repeat_interval_minutes: 10}
"""
    async with Run(policy + USERS, at(10, 0)) as run:
        record = await run.trigger("q.1", {"dag_id": "q"}, "climb")
        run.oncall.create_silence({"dag_id": "q"}, starts_at=at(10, 20), ends_at=at(10, 45))
        await run.to(at(11, 30))
        assert run.sent() == {
            "06-10 10:00:00 q.1": ["email:kim@example.com"],
            # 10:30 level 2 and 10:40 its first repeat are muted; level 1 does not come back
            "06-10 10:50:00 q.1": ["email:ivy@example.com"],
        }
        assert run.engine.get_record(record.record.id).current_level == 2
        muted = run.history(record.record.id, "notification_muted")
        assert [(e["at"], e["level"], e["details"]["round"]) for e in muted] == [
            (at(10, 30).isoformat(), 2, 0),
            (at(10, 40).isoformat(), 2, 1),
        ]


async def test_handoffs_include_an_override():
    async with Run(OPS, at(10, 0)) as run:
        run.oncall.create_override("ops", "gus", at(10, 7), at(10, 13))
        handoffs = run.oncall.handoffs("ops", at(10, 0), at(11, 0))
        assert [(h.start, h.user) for h in handoffs] == [(at(10, 7), "gus"), (at(10, 13), "ivy")]


async def test_shifts_merge_a_persons_back_to_back_shifts_and_handoffs_start_after_start():
    yaml_text = (
        BAD_BASE
        + """
schedules:
  - name: s
    time_zone: UTC
    layers:
      - name: base
        rotation: {participants: [kim, kim, ivy], shift_unit: days, start: 2026-06-01}
"""
    )
    async with Run(yaml_text, at(0, 0, day=1)) as run:
        shifts = run.oncall.shifts("s", at(0, 0, day=1), at(0, 0, day=5))
        assert [(s.start.day, s.end.day, s.user) for s in shifts] == [(1, 3, "kim"), (3, 4, "ivy"), (4, 5, "kim")]
        handoffs = run.oncall.handoffs("s", at(0, 0, day=3), at(0, 0, day=8))
        assert [(h.start.day, h.user) for h in handoffs] == [(4, "kim"), (6, "ivy"), (7, "kim")]


# --- the same rules over REST (the routes the page lists; in-process, fake clock) -------------

REST_YAML = (
    "escalation:\n  policies:"
    + level1("ops-policy", "schedule:ops")
    + USERS
    + """
schedules:
  - name: ops
    time_zone: UTC
    layers:
      - name: base
        rotation: {participants: [ivy], shift_unit: days, start: 2026-06-01}
maintenance_windows:
  - {name: nightly, cron: "0 23 * * *", duration_minutes: 60, dag_ids: [night], time_zone: Europe/Berlin}
"""
)


class Caller:
    def get_name(self) -> str:
        return "lead"

    def get_id(self) -> str:
        return "lead"


@pytest.fixture
def rest(monkeypatch):
    from fastapi.testclient import TestClient

    from airflow_escalation.runtime.policy_config import EscalationPolicyConfig, parse_yaml
    from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
    from airflow_escalation.scheduling.base import SchedulerConfig
    from airflow_escalation.service import auth
    from airflow_escalation.service.app import create_app
    from airflow_escalation.service.routes import oncall as oncall_routes
    from airflow_escalation.stores.memory import InMemoryEscalationStore

    async def allow(user, dag_id=None):  # the auth manager's answer is tested on the real stack
        return None

    monkeypatch.setattr(oncall_routes, "authorize_write", allow)
    clock = FakeClock(at(10, 0))
    recorder = RecordingHandler(clock)
    config = EscalationPolicyConfig.from_dict(parse_yaml(REST_YAML))
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=InMemoryEscalationStore(),
            clock=clock,
            scheduler_config=SchedulerConfig(scheduler_type="memory"),
            default_notification_handler=recorder,
        )
    )
    for policy in config.policies.values():
        engine.register_policy(policy)
    app = create_app(engine=engine, policy_config=config)
    app.dependency_overrides[auth.require_read] = Caller
    app.dependency_overrides[auth.require_write] = Caller
    app.dependency_overrides[auth.read_scope] = lambda: auth.DagScope(None)
    with TestClient(app) as client:
        yield client, clock, recorder


def test_an_override_and_a_silence_over_rest(rest):
    client, clock, recorder = rest
    api = "/api/v1"
    naive = {"schedule": "ops", "user": "gus", "start": "2026-06-10T10:07:00", "end": "2026-06-10T10:13:00Z"}
    assert client.post(f"{api}/overrides", json=naive).status_code == 422
    made = client.post(f"{api}/overrides", json={**naive, "start": "2026-06-10T10:07:00Z", "comment": "swap"})
    assert made.status_code == 201 and made.json()["created_by"] == "lead"
    who = client.get(f"{api}/schedules/ops/oncall", params={"at": "2026-06-10T10:07:00Z"}).json()
    assert (who["user"], who["source"]) == ("gus", f"override:{made.json()['id']}")
    assert client.get(f"{api}/schedules/ops/oncall", params={"at": "2026-06-10T10:13:00Z"}).json()["user"] == "ivy"
    handoffs = client.get(f"{api}/schedules/ops/handoffs", params={"start": "2026-06-10T10:00:00Z", "days": 1})
    assert [(h["start"], h["user"]) for h in handoffs.json()["handoffs"]][:2] == [
        ("2026-06-10T10:07:00+00:00", "gus"),
        ("2026-06-10T10:13:00+00:00", "ivy"),
    ]
    silence = client.post(
        f"{api}/silences",
        json={"matchers": {"incident": "api.*", "severity": "HIGH"}, "duration_minutes": 30, "comment": "failover"},
    )
    assert silence.status_code == 201 and silence.json()["status"] == "active"
    assert client.post(f"{api}/silences", json={"matchers": {}, "duration_minutes": 5}).status_code == 422
    body = {"incident_id": "api.5xx", "context": {"dag_id": "api", "severity": "high"}, "policy_name": "ops-policy"}
    suppressed = client.post(f"{api}/escalations", json=body)
    assert suppressed.status_code == 200 and suppressed.json()["code"] == "suppressed"
    clock.set(at(10, 8))
    body["context"]["severity"] = "low"  # not matched: pages gus, who covers 10:07-10:13
    paged = client.post(f"{api}/escalations", json=body).json()
    assert paged["success"] is True
    record = client.get(f"{api}/escalations/{paged['record']['id']}").json()
    assert [d.get("resolved_to") for d in record["deliveries"]] == ["schedule:ops → gus"]
    assert [(n.at, n.target) for n in recorder.sent] == [(at(10, 8), "email:gus@example.com")]
    expired = client.post(f"{api}/silences/{silence.json()['id']}/expire").json()
    assert expired["status"] == "expired" and expired["ends_at"] == at(10, 8).isoformat()
    [window] = client.get(f"{api}/maintenance-windows").json()["maintenance_windows"]
    assert window["name"] == "nightly" and window["open_now"] is False
    # 23:00 in Berlin is 21:00 UTC in June
    assert window["openings"][0] == {"start": "2026-06-10T21:00:00+00:00", "end": "2026-06-10T22:00:00+00:00"}


@pytest.mark.parametrize(("text", "minutes"), [("90m", 90), ("2h", 120), ("1d", 1440), ("1w", 10080), ("45", 45)])
def test_cli_durations_as_documented(text, minutes):
    from airflow_escalation.cli.oncall import _duration_minutes

    assert _duration_minutes(text) == minutes


@pytest.mark.parametrize("text", ["0", "-5", "nan", "inf", "2x", "1h30m"])
def test_cli_durations_refused(text):
    from airflow_escalation.cli.commands import UsageError
    from airflow_escalation.cli.oncall import _duration_minutes

    with pytest.raises(UsageError, match="--duration"):
        _duration_minutes(text)


async def test_a_trigger_joining_an_open_escalation_during_a_silence_pages_nobody():
    async with Run(SILENCES, at(10, 0)) as run:
        first = await run.trigger("etl.load", {"dag_id": "etl"}, "etl-policy")
        run.oncall.create_silence({"dag_id": "etl"}, starts_at=at(10, 5), duration=timedelta(minutes=30))
        await run.to(at(10, 5))
        joined = await run.trigger("etl.load", {"dag_id": "etl"}, "etl-policy")
        assert joined.success and joined.record.id == first.record.id  # joined, not suppressed
        await run.to(at(10, 40))
        kim = ["email:kim@example.com"]
        # 10:10, 10:20, 10:30 muted; 10:40 pages again
        assert run.sent() == {"06-10 10:00:00 etl.load": kim, "06-10 10:40:00 etl.load": kim}
