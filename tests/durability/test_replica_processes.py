"""Replicas on the real clock: three processes (replica_worker.py) share one store.

Each process runs an engine with the asyncio scheduler (0.5 s safety sweep) and a two-level
policy (L1 at once, L2 a few seconds later) and appends one line per delivery to a shared file.
Whatever the processes do — trigger the same incidents, die before L2 is due, or die holding
claim leases — every (incident, level) is delivered exactly once, and nothing else is.

No timing is asserted beyond "within the bounded wait", except what the lease guarantees: a
record claimed by a process that died is not taken over before its lease ends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from durability_support import (
    Replicas,
    clear_redis,
    delivery_rows,
    drop_sql_tables,
    exactly_once_report,
    redis_prefix,
    sql_prefix,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PER_PROCESS = 20
SHARED = [f"shared-{i}" for i in range(5)]
WAIT = 60  # seconds: bound of each wait (a scenario normally takes 10-15 s)
QUIET = 1.5  # seconds the replicas keep running after the last expected line: room for a duplicate
L1_ROW = (1, "user:l1", "sent", 1)
L2_ROW = (2, "user:l2", "sent", 1)


def recorded_once(row: tuple) -> bool:
    """The store's row of a delivery whose line is in the file exactly once (asserted first).

    ``sent`` normally. ``unknown`` is the outbox's answer when the sending lease (2-4 s here) ran
    out before the sender recorded the outcome (a process killed right after writing its line,
    or one stalled that long on a loaded machine): the file shows it did go out, once.
    """
    level, target, state, attempts = row
    return (target, attempts) == (f"user:l{level}", 1) and state in ("sent", "unknown")


def own_ids(name: str) -> list[str]:
    return [f"{name}-inc-{i:02d}" for i in range(PER_PROCESS)]


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def shared_store(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """``(backend, url, prefix)`` of a fresh store; its tables / keys are removed afterwards."""
    backend = request.param
    if backend == "postgresql":
        url, prefix = request.getfixturevalue("postgres_url"), sql_prefix()
        from airflow_escalation.stores.sql import SQLEscalationStore

        # the tables exist before the replicas start, as after `airflow db migrate`
        # (replicas creating them together race: test_concurrent_first_start.py)
        SQLEscalationStore(url=url, table_prefix=prefix).close()
        yield backend, url, prefix
        drop_sql_tables(url, prefix)
    else:
        url, prefix = request.getfixturevalue("redis_url"), redis_prefix()
        yield backend, url, prefix
        clear_redis(url, prefix)


def open_reader(backend: str, url: str, prefix: str):
    if backend == "redis":
        from airflow_escalation.stores.redis import RedisEscalationStore

        return RedisEscalationStore(redis_url=url, key_prefix=prefix)
    from airflow_escalation.stores.sql import SQLEscalationStore

    return SQLEscalationStore(url=url, table_prefix=prefix, create_tables=False)


@pytest.fixture
def replicas_factory(tmp_path: Path, shared_store) -> Iterator:
    made: list[Replicas] = []

    def make(**kwargs) -> Replicas:
        backend, url, prefix = shared_store
        replicas = Replicas(tmp_path, backend, url, prefix, **kwargs)
        made.append(replicas)
        return replicas

    yield make
    for replicas in made:
        replicas.kill_all()


def test_three_replicas_deliver_each_level_exactly_once(replicas_factory, shared_store):
    # L2 3 s after L1; nobody dies here, so a long lease: every row must end `sent`
    replicas = replicas_factory(l2_delay_minutes=0.05, lease_seconds=30)
    names = ["r0", "r1", "r2"]
    for name in names:
        # every replica also triggers the same shared incidents: each must open one record
        replicas.spawn(name, SHARED + own_ids(name))
    replicas.release()
    incidents = SHARED + [i for name in names for i in own_ids(name)]
    replicas.wait_for(replicas.delivered(1, incidents), WAIT, "every level 1")
    replicas.wait_for(replicas.delivered(2, incidents), WAIT, "every level 2")
    time.sleep(QUIET)
    replicas.stop_all()

    lines = replicas.lines()
    expected = {(incident, level) for incident in incidents for level in (1, 2)}
    assert exactly_once_report(lines, expected) == "", replicas.logs()
    assert len(lines) == len(expected)

    reader = open_reader(*shared_store)
    try:
        for incident in incidents:
            [record] = reader.get_by_incident(incident)
            assert (record.state, record.current_level) == ("active", 2), incident
            assert delivery_rows(reader, record.id) == [L1_ROW, L2_ROW], incident
            if incident in SHARED:
                assert record.metadata["trigger_count"] == 3, incident  # one record, joined twice
    finally:
        reader.close()


def test_a_replica_killed_before_level_two_is_due(replicas_factory, shared_store):
    delay_minutes = 0.1  # L2 6 s after L1: room to kill the victim before any L2 is due
    replicas = replicas_factory(l2_delay_minutes=delay_minutes, lease_seconds=2)
    names = ["k0", "k1", "k2"]
    workers = {name: replicas.spawn(name, own_ids(name)) for name in names}
    released = replicas.release()
    incidents = [i for name in names for i in own_ids(name)]
    replicas.wait_for(replicas.delivered(1, incidents), WAIT, "every level 1")
    victim = workers["k0"]
    killed_at = time.time()
    replicas.kill(victim)
    print(f"victim killed {killed_at - released:.1f}s after the release (L2 due after {delay_minutes * 60:.0f}s)")
    # every L2 is due at least delay after the release: the victim died before any was due
    assert killed_at < released + delay_minutes * 60, (
        f"the replicas needed {killed_at - released:.1f}s to send level 1: too slow to kill one before level 2 was due"
    )

    replicas.wait_for(replicas.delivered(2, incidents), WAIT, "every level 2 (the survivors' sweep)")
    time.sleep(QUIET)
    replicas.stop_all()

    lines = replicas.lines()
    expected = {(incident, level) for incident in incidents for level in (1, 2)}
    assert exactly_once_report(lines, expected) == "", replicas.logs()
    assert not [line for line in lines if line["level"] == 2 and line["pid"] == victim.pid]

    reader = open_reader(*shared_store)
    try:
        for incident in incidents:
            [record] = reader.get_by_incident(incident)
            rows = delivery_rows(reader, record.id)
            assert [row[0] for row in rows] == [1, 2], (incident, rows)
            assert all(recorded_once(row) for row in rows), (incident, rows)
    finally:
        reader.close()


def test_a_replica_killed_holding_claim_leases(replicas_factory, shared_store, tmp_path):
    lease_seconds = 4
    replicas = replicas_factory(l2_delay_minutes=0.05, lease_seconds=lease_seconds)
    marker = tmp_path / "claimed.json"
    incidents = own_ids("v")
    victim = replicas.spawn("v", incidents, freeze_on_claim=marker)
    replicas.release()
    replicas.wait_for(marker.exists, WAIT, "the victim to claim its first due records")
    claim = json.loads(marker.read_text())
    assert claim["pid"] == victim.pid and claim["records"]
    # two replicas that never saw the triggers start; the victim dies holding its leases
    survivors = [replicas.spawn(name, [], wait_for_go=False) for name in ("s1", "s2")]
    replicas.kill(victim)

    replicas.wait_for(replicas.delivered(2, incidents), WAIT, "every level 2 (after the leases end)")
    time.sleep(QUIET)
    replicas.stop_all()

    lines = replicas.lines()
    expected = {(incident, level) for incident in incidents for level in (1, 2)}
    assert exactly_once_report(lines, expected) == "", replicas.logs()
    l2 = {line["record"]: line for line in lines if line["level"] == 2}
    assert {line["pid"] for line in l2.values()} <= {w.pid for w in survivors}
    for record_id in claim["records"]:  # leased by the dead replica: taken over once it ran out
        assert l2[record_id]["at"] >= claim["lease_until"], (record_id, l2[record_id], claim)
    started = min(w.ready.stat().st_mtime for w in survivors)
    print(
        f"victim leased {len(claim['records'])} of {len(incidents)} records; the first survivor "
        f"swept {claim['lease_until'] - started:.1f}s before the lease ended"
    )

    reader = open_reader(*shared_store)
    try:
        for incident in incidents:
            [record] = reader.get_by_incident(incident)
            rows = delivery_rows(reader, record.id)
            assert [row[0] for row in rows] == [1, 2], (incident, rows)
            assert all(recorded_once(row) for row in rows), (incident, rows)
    finally:
        reader.close()
