"""Statistics from the fake clock (semantics 10)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from core_support import CRIT, SEED, SEED_TIMELINE, ladder, seed_policy

DAY = timedelta(hours=24)


async def test_empty_stats(make_engine):
    engine = await make_engine(seed_policy())
    stats = engine.get_stats()
    assert stats.total_escalations == 0
    assert stats.acknowledgment_rate == 0.0 and stats.resolution_rate == 0.0
    assert stats.avg_time_to_acknowledge_seconds == 0.0 and stats.avg_time_to_resolve_seconds == 0.0
    assert stats.notifications_sent == 0 and stats.notifications_by_target == {}


async def test_rates_and_mean_times(make_engine, clock):
    engine = await make_engine(ladder(delays=(0, 15, 30)))
    ids = []
    for n in range(4):  # triggered at t = 0, 1, 2, 3 minutes
        ids.append((await engine.trigger(f"inc-{n}", {}, "ladder")).record.id)
        await engine.advance(timedelta(minutes=1))
    # t = 4
    await engine.advance(timedelta(minutes=2))  # t = 6
    await engine.acknowledge(ids[0], "a")  # 360 s after its trigger
    await engine.advance(timedelta(minutes=4))  # t = 10
    await engine.acknowledge(ids[1], "b")  # 540 s after its trigger
    await engine.advance(timedelta(seconds=30))  # t = 10.5
    await engine.resolve(ids[0], "a")  # 630 s after its trigger

    stats = engine.get_stats()
    assert stats.total_escalations == 4
    # the counts partition the total: ids[0], acknowledged then resolved, counts as resolved
    assert stats.acknowledged_count == 1 and stats.resolved_count == 1
    assert stats.acknowledgment_rate == 0.25 and stats.resolution_rate == 0.25
    assert stats.avg_time_to_acknowledge_seconds == (360 + 540) / 2
    assert stats.avg_time_to_resolve_seconds == 630
    assert stats.active_escalations == 2  # inc-2 and inc-3; inc-1 is acknowledged
    assert stats.escalations_by_policy == {"ladder": 4}
    d = stats.to_dict()
    assert d["acknowledgment_rate"] == 0.25 and d["resolution_rate"] == 0.25
    assert 0 <= d["acknowledgment_rate"] <= 1 and 0 <= d["resolution_rate"] <= 1


async def test_auto_and_notify_only_resolutions_count_in_the_mean(make_engine):
    engine = await make_engine(
        ladder("auto", delays=(0, 30), level_kwargs={1: dict(auto_resolve_minutes=12)}),
        ladder("notify", delays=(0,), level_kwargs={1: dict(require_ack=False)}),
    )
    await engine.trigger("a", {}, "auto")
    await engine.trigger("b", {}, "notify")
    await engine.advance(DAY)
    stats = engine.get_stats()
    assert stats.resolved_count == 2 and stats.resolution_rate == 1.0
    assert stats.avg_time_to_resolve_seconds == (720 + 0) / 2


async def test_notifications_are_counted_per_target(make_engine, recorder):
    engine = await make_engine(seed_policy())
    await engine.trigger("inc-1", CRIT, SEED)
    await engine.advance(timedelta(minutes=20))
    await engine.trigger("inc-2", CRIT, SEED)
    await engine.advance(DAY)
    stats = engine.get_stats()
    per_target = Counter(n.target for n in recorder.sent)
    assert stats.notifications_sent == len(recorder.sent) == 2 * len(SEED_TIMELINE)
    assert (
        stats.notifications_by_target
        == dict(per_target)
        == {
            "user:team-lead": 6,
            "channel:#alerts": 6,
            "user:eng-manager": 2,
            "schedule:oncall-primary": 2,
            "user:director": 2,
            "email:leadership@company.com": 2,
        }
    )
    assert stats.notifications_failed == 0
    assert stats.escalations_by_level == {3: 2}


async def test_stats_count_every_terminal_state(make_engine):
    engine = await make_engine(ladder(delays=(0, 1, 1), max_escalations=1))
    ids = [(await engine.trigger(f"i{n}", {}, "ladder")).record.id for n in range(4)]
    await engine.cancel(ids[0])
    await engine.resolve(ids[1])
    await engine.acknowledge(ids[2])
    await engine.advance(DAY)  # ids[3] times out
    stats = engine.get_stats()
    assert (
        stats.cancelled_count,
        stats.resolved_count,
        stats.acknowledged_count,
        stats.timed_out_count,
        stats.active_escalations,
        stats.failed_count,
    ) == (1, 1, 1, 1, 0, 0)
