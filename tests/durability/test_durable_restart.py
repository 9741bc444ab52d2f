"""Restart on every backend: what fell due while no engine ran is done once, by the next engine.

Engine A triggers and stops; time passes with no engine; a NEW store object on the same database
(prefix) and a new engine B start. The store is the truth: B's start() sweep delivers the overdue
level once, and B then climbs on schedule. An acknowledgement written through B on A's record
stops everything, on both engines. Timelines are the RecordingHandler's (minutes since T0).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import EscalationState
from airflow_escalation.testing import RecordingHandler

from durability_support import L1, L2, L3, POLICY, T0, delivery_rows

CONTEXT = {"severity": "critical"}


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


async def test_restart_delivers_the_overdue_level_once_then_climbs(storage, make_engine, clock):
    store_a = storage.open()
    sent_a = RecordingHandler(clock)
    a = await make_engine(store_a, sent_a)
    result = await a.trigger("inc-restart", CONTEXT, POLICY)
    assert result.success, result.message
    record_id = result.record.id
    await a.stop()  # drains: L1 is out
    storage.retire(store_a)
    assert sent_a.timeline() == [(0.0, L1)]

    clock.set(T0 + minutes(20))  # L2 was due at 15; no engine ran
    store_b = storage.open()
    sent_b = RecordingHandler(clock, start=T0)
    b = await make_engine(store_b, sent_b)  # start() sweeps what is due
    assert b.get_record(record_id).current_level == 2  # climbed inside start()
    await b.drain()
    assert sent_b.timeline() == [(20.0, L2)]
    assert delivery_rows(store_b, record_id) == [(1, L1, "sent", 1), (2, L2, "sent", 1)]

    await b.advance(minutes(24 * 60))  # L3 counts from when L2 really fired: 20 + 30
    assert sent_b.timeline() == [(20.0, L2), (50.0, L3)]
    assert sent_a.timeline() == [(0.0, L1)]

    reader = storage.open()  # a third process sees the same truth
    record = reader.get(record_id)
    assert record.state == EscalationState.ACTIVE.value
    assert (record.current_level, record.escalation_count, record.notification_count) == (3, 2, 3)
    assert delivery_rows(reader, record_id) == [(1, L1, "sent", 1), (2, L2, "sent", 1), (3, L3, "sent", 1)]
    assert [r.id for r in reader.get_by_incident("inc-restart")] == [record_id]


@pytest.mark.parametrize("a_running", [True, False], ids=["a-running", "a-stopped"])
async def test_ack_through_another_engine_stops_everything(storage, make_engine, clock, a_running):
    store_a = storage.open()
    sent_a = RecordingHandler(clock)
    a = await make_engine(store_a, sent_a)
    record_id = (await a.trigger("inc-ack", CONTEXT, POLICY)).record.id
    await a.advance(minutes(5))
    if not a_running:
        await a.stop()
        storage.retire(store_a)

    store_b = storage.open()
    sent_b = RecordingHandler(clock, start=T0)
    b = await make_engine(store_b, sent_b)
    acked = await b.acknowledge(record_id, "alice", note="on it")
    assert acked.success, acked.message

    await b.advance(minutes(24 * 60))
    if a_running:
        await a.advance(minutes(0))  # A's own sweep finds nothing left to do
    assert sent_a.timeline() == [(0.0, L1)]
    assert sent_b.timeline() == []
    record = b.get_record(record_id)
    assert record.state == EscalationState.ACKNOWLEDGED.value
    assert (record.acknowledged_by, record.acknowledged_at) == ("alice", T0 + minutes(5))
    assert record.current_level == 1 and record.next_escalation_at is None
    assert delivery_rows(b.store, record_id) == [(1, L1, "sent", 1)]


async def test_ack_through_another_engine_cancels_a_pending_retry(storage, make_engine, clock):
    store_a = storage.open()
    sent_a = RecordingHandler(clock, fail_targets={L2})  # L2's first attempt fails
    a = await make_engine(store_a, sent_a, retry_delay_seconds=60, max_attempts=3)
    record_id = (await a.trigger("inc-retry", CONTEXT, POLICY)).record.id
    await a.advance(minutes(15))  # L2 attempt 1 fails at 15; retry booked for 16
    await a.stop()
    storage.retire(store_a)

    store_b = storage.open()
    sent_b = RecordingHandler(clock, start=T0)  # B's handler would succeed
    b = await make_engine(store_b, sent_b, retry_delay_seconds=60, max_attempts=3)
    [(level, target, state, attempts)] = delivery_rows(store_b, record_id)[1:]
    # attempts: 1, or 2 when A's own sweep raced its dispatcher and restarted the failed attempt
    # before its retry time (the bug pinned in test_shared_outbox.py)
    assert (level, target, state) == (2, L2, "pending") and attempts in (1, 2)
    assert (await b.acknowledge(record_id, "bob")).success

    await b.advance(minutes(24 * 60))
    assert sent_a.timeline() == [(0.0, L1)]
    assert sent_b.timeline() == []  # the retry was cancelled, not sent
    assert delivery_rows(b.store, record_id) == [(1, L1, "sent", 1), (2, L2, "cancelled", attempts)]
    assert b.get_record(record_id).state == EscalationState.ACKNOWLEDGED.value
