"""The engine with on call, on the fake clock: schedule and user targets resolved at delivery
time (a repeat after a handoff goes to the new person), silences and maintenance windows at the
trigger and on open records, to the second, and two engines on one store agreeing."""

from __future__ import annotations

from datetime import timedelta

from airflow_escalation import EscalationLevel, EscalationPolicy, EscalationTarget

from oncall_support import T0

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)

SECTIONS = """
users:
  - id: alice
    name: Alice
    time_zone: Europe/Berlin
    contacts:
      - {type: email, address: alice@example.com}
      - {type: phone, address: "+491700000001"}
  - id: bob
    contacts:
      - {type: email, address: bob@example.com}
      - {type: slack, address: U0BOB}
  - id: carol
    contacts: [{type: webhook, address: /carol}]
schedules:
  - name: oncall-primary
    time_zone: Europe/Berlin
    layers:
      - name: daily
        rotation:
          participants: [alice, bob]
          shift_unit: days
          start: 2026-03-01
          handoff_time: "09:00"
maintenance_windows:
  - name: billing-nightly
    cron: "30 23 * * *"
    duration_minutes: 90
    time_zone: Europe/Berlin
    dag_ids: [billing_daily]
"""


def policy(
    *targets: EscalationTarget, repeat_count: int = 0, repeat_interval_minutes: float = 30, **kw
) -> EscalationPolicy:
    return EscalationPolicy(
        name="p",
        levels=[
            EscalationLevel(
                level=1,
                targets=list(targets),
                repeat_count=repeat_count,
                repeat_interval_minutes=repeat_interval_minutes,
            )
        ],
        **kw,
    )


def sent(recorder) -> list[tuple[float, str]]:
    return recorder.timeline()


async def test_schedule_target_resolves_at_delivery_and_a_repeat_after_the_handoff_reaches_the_new_person(
    make_engine, recorder, clock
):
    engine = await make_engine(
        SECTIONS, policy(EscalationTarget.schedule("oncall-primary"), repeat_count=2, repeat_interval_minutes=40)
    )
    # 07:30 UTC = 08:30 Berlin: alice's shift (from Sunday 09:00) ends at 09:00 Berlin = 08:00 UTC
    clock.set(T0 + 30 * MINUTE)
    recorder.start = clock.now()
    result = await engine.trigger("inc-1", {"dag_id": "etl"})
    await engine.advance(timedelta(hours=2))
    assert sent(recorder) == [
        (0.0, "email:alice@example.com"),  # alice's phone is kept, not delivered
        (40.0, "channel:U0BOB"),
        (40.0, "email:bob@example.com"),
        (80.0, "channel:U0BOB"),
        (80.0, "email:bob@example.com"),
    ]
    resolutions = engine.oncall.resolutions(result.record.id)
    assert [(r["label"], r["source"]) for r in resolutions] == [
        ("schedule:oncall-primary → alice", "layer:daily"),
        ("schedule:oncall-primary → bob", "layer:daily"),
        ("schedule:oncall-primary → bob", "layer:daily"),
    ]
    assert all(d.state.value == "sent" for d in engine.get_deliveries(result.record.id))


async def test_override_takes_the_page_and_user_targets_reach_their_contacts(make_engine, recorder, clock):
    engine = await make_engine(
        SECTIONS, policy(EscalationTarget.schedule("oncall-primary"), EscalationTarget.user("carol"))
    )
    override = engine.oncall.create_override("oncall-primary", "carol", T0, T0 + timedelta(hours=1), created_by="lead")
    await engine.trigger("inc-1", {"dag_id": "etl"})
    await engine.drain()
    assert sent(recorder) == [(0.0, "webhook:/carol"), (0.0, "webhook:/carol")]
    assert engine.oncall.on_call("oncall-primary").source == f"override:{override.id}"
    clock.set(T0 + timedelta(hours=1))  # the override is over, at the daily handoff (09:00 Berlin): bob
    assert engine.oncall.on_call("oncall-primary").user == "bob"
    assert engine.oncall.on_call("oncall-primary", T0 + timedelta(minutes=59)).source == f"override:{override.id}"


async def test_unknown_schedule_and_user_targets_are_sent_as_written(make_engine, recorder):
    engine = await make_engine(SECTIONS, policy(EscalationTarget.schedule("elsewhere"), EscalationTarget.user("zed")))
    await engine.trigger("inc-1", {})
    await engine.drain()
    assert sent(recorder) == [(0.0, "schedule:elsewhere"), (0.0, "user:zed")]


async def test_a_silenced_trigger_is_recorded_suppressed_and_pages_nobody(make_engine, recorder, clock):
    engine = await make_engine(SECTIONS, policy(EscalationTarget.user("alice"), cooldown_minutes=60))
    silence = engine.oncall.create_silence(
        {"dag_id": "etl"}, ends_at=T0 + timedelta(minutes=30), comment="deploy", created_by="ops"
    )
    result = await engine.trigger("inc-1", {"dag_id": "etl"})
    assert not result.success and result.code == "suppressed"
    record = engine.get_record(result.record.id)
    assert record.state == "cancelled"
    suppressed = [e for e in record.history if e["event"] == "suppressed"]
    assert suppressed[0]["details"]["id"] == silence.id and suppressed[0]["details"]["kind"] == "silence"
    assert record.metadata["suppressed_by"]["comment"] == "deploy"
    # another DAG is not silenced
    other = await engine.trigger("inc-1", {"dag_id": "other"})
    assert other.success
    await engine.drain()
    assert sent(recorder) == [(0.0, "email:alice@example.com")]
    # one second before the end: still silenced; at the end: pages (a silenced trigger starts no cooldown)
    clock.set(silence.ends_at - SECOND)
    assert (await engine.trigger("inc-1", {"dag_id": "etl"})).code == "suppressed"
    clock.set(silence.ends_at)
    again = await engine.trigger("inc-1", {"dag_id": "etl"})
    assert again.success, again.message
    await engine.drain()
    assert sent(recorder) == [(0.0, "email:alice@example.com"), (30.0, "email:alice@example.com")]


async def test_silence_start_is_inclusive_to_the_second(make_engine, recorder, clock):
    engine = await make_engine(SECTIONS, policy(EscalationTarget.user("alice")))
    start = T0 + timedelta(minutes=10)
    engine.oncall.create_silence({"incident": "etl.*"}, starts_at=start, ends_at=start + MINUTE)
    clock.set(start - SECOND)
    assert (await engine.trigger("etl.load", {"dag_id": "etl"})).success
    clock.set(start)
    assert (await engine.trigger("etl.other", {"dag_id": "etl"})).code == "suppressed"
    assert (await engine.trigger("billing.load", {"dag_id": "etl"})).success  # the glob does not match


async def test_an_open_record_is_muted_while_a_silence_lasts_and_resumes_without_replay(make_engine, recorder, clock):
    engine = await make_engine(
        SECTIONS, policy(EscalationTarget.user("bob"), repeat_count=6, repeat_interval_minutes=10)
    )
    result = await engine.trigger("inc-1", {"dag_id": "etl", "severity": "critical"})
    await engine.advance(timedelta(minutes=5))
    # silence from minute 5 to minute 25: the repeats at 10 and 20 are muted, 30 and later page
    engine.oncall.create_silence({"severity": "CRITICAL"}, duration=timedelta(minutes=20), created_by="ops")
    await engine.advance(timedelta(minutes=40))
    assert [t for t, key in sent(recorder) if key == "email:bob@example.com"] == [0.0, 30.0, 40.0]
    record = engine.get_record(result.record.id)
    muted = [e for e in record.history if e["event"] == "notification_muted"]
    assert [(e["at"], e["details"]["round"]) for e in muted] == [
        ((T0 + timedelta(minutes=10)).isoformat(), 1),
        ((T0 + timedelta(minutes=20)).isoformat(), 2),
    ]
    # expiring the silence early is the same as its end
    silence = engine.oncall.create_silence({"dag_id": "etl"}, duration=timedelta(hours=1))
    await engine.advance(timedelta(minutes=10))  # minute 55: muted
    engine.oncall.expire_silence(silence.id, "ops")
    await engine.advance(timedelta(minutes=5))  # minute 60: pages
    assert [t for t, key in sent(recorder) if key == "email:bob@example.com"] == [0.0, 30.0, 40.0, 60.0]


async def test_a_recurring_window_over_midnight(make_engine, recorder, clock):
    engine = await make_engine(SECTIONS, policy(EscalationTarget.user("alice")))
    # 23:30 → 01:00 Berlin (CET, UTC+1): 22:30 → 00:00 UTC
    clock.set(T0.replace(hour=22, minute=29, second=59))
    assert (await engine.trigger("a", {"dag_id": "billing_daily"})).success
    clock.set(T0.replace(hour=22, minute=30))
    result = await engine.trigger("b", {"dag_id": "billing_daily"})
    assert result.code == "suppressed"
    assert result.record.metadata["suppressed_by"]["kind"] == "maintenance_window"
    assert result.record.metadata["suppressed_by"]["id"] == "billing-nightly"
    assert (await engine.trigger("c", {"dag_id": "other"})).success  # other DAGs page
    clock.set(T0.replace(hour=23, minute=59, second=59))
    assert (await engine.trigger("d", {"dag_id": "billing_daily"})).code == "suppressed"
    clock.set(T0 + timedelta(hours=17))  # 00:00 UTC on Tuesday = 01:00 Berlin: closed
    assert (await engine.trigger("e", {"dag_id": "billing_daily"})).success


async def test_two_engines_on_one_store_agree(make_engine, recorder, clock, tmp_path):
    """Each engine's OnCall reads silences again at most every ``cache_seconds`` (1 s on a store
    that does I/O): here that delay is 0, so each change is seen at once."""
    from airflow_escalation.stores.sql import SQLiteEscalationStore

    db = str(tmp_path / "shared.db")
    one = await make_engine(
        SECTIONS, policy(EscalationTarget.schedule("oncall-primary")), store=SQLiteEscalationStore(db), cache_seconds=0
    )
    two = await make_engine(
        SECTIONS, policy(EscalationTarget.schedule("oncall-primary")), store=SQLiteEscalationStore(db), cache_seconds=0
    )
    silence = one.oncall.create_silence({"dag_id": "etl"}, duration=timedelta(minutes=10))
    assert [s.id for s in two.oncall.list_silences()] == [silence.id]
    assert (await two.trigger("inc", {"dag_id": "etl"})).code == "suppressed"
    override = two.oncall.create_override("oncall-primary", "bob", T0, T0 + timedelta(hours=1))
    assert one.oncall.on_call("oncall-primary").source == f"override:{override.id}"
    result = await one.trigger("inc", {"dag_id": "other"})
    await one.drain()
    await two.drain()
    assert sent(recorder) == [(0.0, "channel:U0BOB"), (0.0, "email:bob@example.com")]
    assert [r["label"] for r in two.oncall.resolutions(result.record.id)] == ["schedule:oncall-primary → bob"]
    two.oncall.expire_silence(silence.id)
    assert (await one.trigger("inc", {"dag_id": "etl"})).success


async def test_old_items_are_pruned(make_engine, recorder, clock):
    engine = await make_engine(SECTIONS, policy(EscalationTarget.user("alice")))
    silence = engine.oncall.create_silence({"dag_id": "etl"}, duration=timedelta(hours=1))
    result = await engine.trigger("inc-1", {"dag_id": "other"})
    await engine.drain()
    assert engine.oncall.resolutions(result.record.id)
    clock.advance(timedelta(days=30, hours=2))  # past the retention of both
    await engine.trigger("inc-2", {"dag_id": "other"})  # a trigger looks at silences, and prunes
    assert engine.oncall.resolutions(result.record.id) == []
    assert [s.id for s in engine.oncall.list_silences(include_expired=True)] == []
    assert silence.id


async def test_a_silence_made_on_another_replica_is_seen_within_the_cache_delay(make_engine, clock, tmp_path):
    from airflow_escalation.stores.sql import SQLiteEscalationStore

    ticks = [0.0]
    db = str(tmp_path / "shared.db")
    one = await make_engine(SECTIONS, policy(EscalationTarget.user("alice")), store=SQLiteEscalationStore(db))
    two = await make_engine(SECTIONS, policy(EscalationTarget.user("alice")), store=SQLiteEscalationStore(db))
    two.oncall._monotonic = lambda: ticks[0]  # its real-time clock, moved by hand
    assert two.oncall.cache_seconds == 1.0
    assert (await two.trigger("a", {"dag_id": "etl"})).success  # reads: no silence
    silence = one.oncall.create_silence({"dag_id": "etl"}, duration=timedelta(hours=1))
    ticks[0] = 0.999
    assert (await two.trigger("b", {"dag_id": "etl"})).success  # still the list read at 0
    ticks[0] = 1.0
    assert (await two.trigger("c", {"dag_id": "etl"})).code == "suppressed"
    # its own writes are seen at once
    two.oncall.expire_silence(silence.id)
    assert (await two.trigger("d", {"dag_id": "etl"})).success
