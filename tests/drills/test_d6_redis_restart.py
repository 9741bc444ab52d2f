"""Drill 6: Redis restarts under the Redis store.

Three engine replicas (``tests/durability/replica_worker.py``: separate processes, asyncio
clock, 0.5 s sweep) share the Redis store on a private ``redis-server`` (append-only file,
fsync on every write; never the shared server). Each triggers twenty incidents of a two-level
policy (level 2 six seconds after level 1). Once every level 1 is delivered, Redis is stopped
(SIGTERM) a second before level 2 falls due, left down for two seconds, and started again on the
same files. The replicas must carry on by themselves: every (incident, level) delivered, none twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "durability"))

from durability_support import Replicas, exactly_once_report, redis_prefix

from drill_stack import Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(180)]

PER_REPLICA = 20
DOWN_S = 2.0
L2_DUE_S = 6.0  # l2_delay_minutes=0.1


def test_redis_restarts_under_the_redis_store(private_redis, tmp_path):
    replicas = Replicas(tmp_path, "redis", private_redis.url, redis_prefix(), l2_delay_minutes=0.1, lease_seconds=4)
    names = ["r0", "r1", "r2"]
    incidents = {name: [f"{name}-inc-{i:02d}" for i in range(PER_REPLICA)] for name in names}
    try:
        for name in names:
            replicas.spawn(name, incidents[name])
        released = replicas.release()
        everything = [i for ids in incidents.values() for i in ids]
        replicas.wait_for(replicas.delivered(1, everything), 60, "every level 1")
        level1_done = time.time() - released
        # down from a second before level 2 falls due until a second after
        time.sleep(max(0.0, released + L2_DUE_S - DOWN_S / 2 - time.time()))
        stopped_at = time.time() - released
        began = time.monotonic()
        private_redis.stop()
        time.sleep(DOWN_S)
        private_redis.start()
        outage = time.monotonic() - began
        restarted_at = time.time()
        replicas.wait_for(replicas.delivered(2, everything), 90, "every level 2 after the restart")
        delivered_after = time.time() - restarted_at
        time.sleep(1.5)  # room for a duplicate to show
        replicas.stop_all()
    finally:
        replicas.kill_all()

    lines = replicas.lines()
    expected = {(incident, level) for incident in everything for level in (1, 2)}
    ledger = Ledger({(i, level, f"user:l{level}") for i, level in expected})
    for line in lines:
        ledger.received[(line["incident"], line["level"], line["target"])] += 1
    text = report(
        "6 Redis restarted under the Redis store",
        ledger,
        redis_down_s=outage,
        level1_delivered_after_release_s=level1_done,
        redis_stopped_after_release_s=stopped_at,
        level2_due_after_trigger_s=L2_DUE_S,
        all_level2_delivered_after_restart_s=delivered_after,
    )
    assert exactly_once_report(lines, expected) == "", text + "\n" + replicas.logs()
