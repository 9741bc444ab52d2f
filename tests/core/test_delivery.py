"""Outbox delivery: retries with backoff, timeouts, False returns, isolation (semantics 11)."""

from __future__ import annotations

import asyncio
from datetime import timedelta


from airflow_escalation import DeliveryState, EscalationTarget
from airflow_escalation.testing import RecordingHandler
from core_support import AttemptLog, T0, ladder

DAY = timedelta(hours=24)
RETRY = dict(retry_delay_seconds=60, max_attempts=3)


def two_target_policy(**kw):
    policy = ladder(delays=(0, 15), **kw)
    policy.levels[0].targets.append(EscalationTarget.channel("#alerts"))
    return policy


async def test_failing_target_is_retried_with_doubling_backoff_then_failed(make_engine, clock):
    recorder = RecordingHandler(clock, fail_targets={"channel:#alerts"})
    log = AttemptLog(recorder, clock)
    engine = await make_engine(two_target_policy(), handler=log, scheduler_config=RETRY)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(seconds=30))
    other_id = (await engine.trigger("other", {}, "ladder")).record.id  # at 0.5 min
    await engine.advance(DAY)

    # attempts at 0, +60 s, +120 s more; the other record and the other target on time
    assert [a for a in log.attempts if a[1] == "channel:#alerts"] == [
        (0, "channel:#alerts"),
        (0.5, "channel:#alerts"),
        (1, "channel:#alerts"),
        (1.5, "channel:#alerts"),
        (3, "channel:#alerts"),
        (3.5, "channel:#alerts"),
    ]
    assert recorder.timeline("inc") == [(0, "user:l1"), (15, "user:l2")]
    assert recorder.timeline("other") == [(0.5, "user:l1"), (15.5, "user:l2")]

    deliveries = {d.target.key: d for d in engine.get_deliveries(record_id) if d.level == 1}
    failed = deliveries["channel:#alerts"]
    assert failed.state is DeliveryState.FAILED and failed.attempts == 3
    assert "ConnectionError" in failed.last_error and "#alerts" in failed.last_error
    assert failed.updated_at == T0 + timedelta(minutes=3)
    ok = deliveries["user:l1"]
    assert ok.state is DeliveryState.SENT and ok.attempts == 1 and ok.sent_at == T0 and ok.last_error is None

    assert engine.get_record(record_id).notification_count == 2
    stats = engine.get_stats()
    assert stats.notifications_failed == 2 and stats.notifications_sent == 4
    assert engine.get_record(other_id).state == "active"


async def test_retry_that_succeeds_is_sent_once(make_engine, clock):
    calls = []

    async def flaky(record, level, targets):
        calls.append(clock.now())
        if len(calls) < 3:
            raise TimeoutError("upstream busy")
        return True

    engine = await make_engine(
        ladder(delays=(0,)), handler=flaky, scheduler_config=dict(retry_delay_seconds=10, max_attempts=5)
    )
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    assert calls == [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=30)]
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.SENT and delivery.attempts == 3
    assert delivery.sent_at == T0 + timedelta(seconds=30) and delivery.last_error is None
    assert engine.get_record(record_id).notification_count == 1


async def test_backoff_is_capped(make_engine, clock):
    times = []

    async def always_down(record, level, targets):
        times.append((clock.now() - T0).total_seconds())
        raise OSError("down")

    engine = await make_engine(
        ladder(delays=(0,)),
        handler=always_down,
        scheduler_config=dict(retry_delay_seconds=10, max_retry_delay_seconds=25, max_attempts=5),
    )
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(DAY)
    assert times == [0, 10, 30, 55, 80]


async def test_handler_returning_false_is_a_failed_attempt(make_engine, clock):
    attempts = []

    async def refuses(record, level, targets):
        attempts.append(clock.now())
        return False

    engine = await make_engine(
        ladder(delays=(0,)), handler=refuses, scheduler_config=dict(retry_delay_seconds=5, max_attempts=2)
    )
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    assert attempts == [T0, T0 + timedelta(seconds=5)]
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 2
    assert "returned False" in delivery.last_error
    assert engine.get_record(record_id).notification_count == 0


async def test_sync_handler_is_accepted(make_engine, clock):
    seen = []

    def sync_handler(record, level, targets):
        seen.extend((clock.now(), t.key) for t in targets)
        return None  # anything but False counts as sent

    engine = await make_engine(ladder(delays=(0, 1)), handler=sync_handler)
    await engine.trigger("inc", {}, "ladder")
    await engine.advance(DAY)
    assert seen == [(T0, "user:l1"), (T0 + timedelta(minutes=1), "user:l2")]


async def test_slow_handler_is_recorded_as_timed_out(make_engine, clock, recorder):
    async def slow_for_l1(record, level, targets):
        if targets[0].key == "user:l1":
            await asyncio.sleep(5)
        return await recorder(record, level, targets)

    engine = await make_engine(
        two_target_policy(), handler=slow_for_l1, scheduler_config=dict(job_timeout_seconds=0.05, max_attempts=1)
    )
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    deliveries = {d.target.key: d for d in engine.get_deliveries(record_id)}
    slow = deliveries["user:l1"]
    assert slow.state is DeliveryState.FAILED and slow.attempts == 1
    assert "timed out" in slow.last_error
    assert recorder.timeline() == [(0, "channel:#alerts"), (15, "user:l2")]


async def test_no_handler_fails_the_delivery_without_breaking_the_ladder(make_engine, clock):
    engine = await make_engine(
        ladder(delays=(0, 5)), handler=None, default_notification_handler=None, scheduler_config=dict(max_attempts=1)
    )
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(DAY)
    deliveries = engine.get_deliveries(record_id)
    assert [d.state for d in deliveries] == [DeliveryState.FAILED, DeliveryState.FAILED]
    assert all("no notification handler" in d.last_error for d in deliveries)
    assert engine.get_record(record_id).current_level == 2


async def test_acknowledge_cancels_a_pending_retry(make_engine, clock):
    recorder = RecordingHandler(clock, fail_targets={"user:l1"})
    log = AttemptLog(recorder, clock)
    engine = await make_engine(ladder(delays=(0, 15)), handler=log, scheduler_config=RETRY)
    record_id = (await engine.trigger("inc", {}, "ladder")).record.id
    await engine.advance(timedelta(seconds=30))
    await engine.acknowledge(record_id)
    await engine.advance(DAY)
    assert log.attempts == [(0, "user:l1")]
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.CANCELLED and delivery.attempts == 1


async def test_one_failing_record_does_not_delay_others(make_engine, clock):
    recorder = RecordingHandler(clock, fail_targets={"user:l1"})
    engine = await make_engine(
        ladder("bad", delays=(0, 15)),
        ladder("good", delays=(0, 15), level_kwargs={1: dict(targets=["ok"])}),
        handler=recorder,
        scheduler_config=RETRY,
    )
    for n in range(5):
        await engine.trigger(f"bad-{n}", {}, "bad")
        await engine.trigger(f"good-{n}", {}, "good")
        await engine.advance(timedelta(minutes=1))
    await engine.advance(DAY)
    for n in range(5):
        assert recorder.timeline(f"good-{n}") == [(n, "user:ok"), (n + 15, "user:l2")]
        assert recorder.timeline(f"bad-{n}") == [(n + 15, "user:l2")]
    stats = engine.get_stats()
    assert stats.notifications_failed == 5 and stats.notifications_sent == 15


# ------------------------------------------------------------------ real clock, concurrency (19)


async def test_concurrent_triggers_are_delivered_concurrently_on_the_real_clock():
    from airflow_escalation import EscalationEngine, EscalationEngineConfig, SchedulerConfig
    from core_support import OverlapCounter

    handler = OverlapCounter(sleep=0.05)
    engine = EscalationEngine(
        EscalationEngineConfig(
            scheduler_config=SchedulerConfig(scheduler_type="asyncio", max_concurrent_jobs=50),
            default_notification_handler=handler,
        )
    )
    engine.register_policy(ladder(delays=(0, 60)))
    await engine.start()
    try:
        results = await asyncio.gather(*(engine.trigger(f"inc-{n}", {}, "ladder") for n in range(200)))
        assert all(r.success and r.action == "trigger" for r in results)
        assert len({r.record.id for r in results}) == 200
        await asyncio.wait_for(engine.drain(), timeout=30)
        assert sorted(handler.calls) == sorted((f"inc-{n}", "user:l1") for n in range(200))
        assert 1 < handler.max_overlap <= 50  # concurrent, and bounded by max_concurrent_jobs
        for r in results:
            [delivery] = engine.get_deliveries(r.record.id)
            assert delivery.state is DeliveryState.SENT and delivery.attempts == 1
        assert engine.get_stats().notifications_sent == 200
    finally:
        await engine.stop()


async def test_a_sweep_claims_no_more_deliveries_than_idle_workers_can_start(make_engine, clock):
    """A claimed delivery is marked sending; one left waiting in a process that dies would end
    ``unknown`` and never be sent. So a sweep claims only what its idle workers start now, and
    the rest stay pending for whoever is free (here a second engine on the same store)."""
    from airflow_escalation import InMemoryEscalationStore

    store = InMemoryEscalationStore()
    stuck = asyncio.Event()

    async def hangs(record, level, targets):
        await stuck.wait()
        return True

    # triggers that return once the deliveries are written (the handler hangs)
    first = await make_engine(
        ladder(delays=(0, 60)),
        handler=hangs,
        store=store,
        scheduler_config=dict(max_concurrent_jobs=4),
        send_before_return=False,
    )
    for n in range(30):
        await first.trigger(f"inc-{n}", {}, "ladder")
    await asyncio.sleep(0)
    second = await make_engine(
        ladder(delays=(0, 60)), handler=hangs, store=store, scheduler_config=dict(max_concurrent_jobs=3)
    )
    await second.process_due()
    await asyncio.sleep(0)
    states = [d.state for r in store.list_records(limit=100)[0] for d in store.get_deliveries(r.id)]
    assert len(states) == 30
    # both engines are now "killed" with their workers busy: only what they were sending is at stake
    assert states.count(DeliveryState.SENDING) <= 4 + 3
    assert states.count(DeliveryState.PENDING) >= 30 - 7

    stuck.set()
    await second.drain()
    await first.drain()
    for _ in range(20):  # the freed workers claim what waits, a few at a time
        await second.process_due()
        await second.drain()
    states = [d.state for r in store.list_records(limit=100)[0] for d in store.get_deliveries(r.id)]
    assert states == [DeliveryState.SENT] * 30
