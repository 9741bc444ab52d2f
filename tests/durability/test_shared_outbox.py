"""The outbox shared by several engines: a delivery is attempted by one engine at a time.

An engine that writes a transition queues its deliveries for its own dispatcher; another engine's
sweep may claim them first (``claim_deliveries``). Whoever comes second must leave the delivery
alone: while it is being sent, after it was sent, and while it waits for its retry time. A send
whose sender died (its lease ran out while ``sending``) becomes ``unknown`` and is not re-sent.
"""

from __future__ import annotations

from datetime import timedelta


from airflow_escalation.testing import RecordingHandler

from durability_support import L1, POLICY, delivery_rows

CONTEXT = {"severity": "critical"}
LEASE = timedelta(seconds=120)


async def test_a_delivery_another_engine_is_sending_is_not_sent_again(storage, make_engine, clock):
    sent = RecordingHandler(clock)
    a = await make_engine(storage.open(), sent)
    other = storage.open()  # engine B's store object
    record_id = (await a.trigger("inc-sending", CONTEXT, POLICY)).record.id
    # L1 sits in A's dispatcher queue, not yet started: B's sweep claims it first
    [claimed] = other.claim_deliveries(clock.now(), 10, "engine-b", LEASE)
    assert claimed.record_id == record_id
    await a.drain()  # A's queued start finds it sending: nothing is sent by A
    assert sent.timeline() == []
    other.finish_delivery(claimed.id, clock.now(), sent=True)  # B's send went out
    await a.advance(timedelta(minutes=10))
    assert sent.timeline() == []
    assert delivery_rows(other, record_id) == [(1, L1, "sent", 1)]
    assert a.get_record(record_id).notification_count == 1


async def test_a_send_whose_sender_died_becomes_unknown_and_is_not_resent(storage, make_engine, clock):
    sent = RecordingHandler(clock)
    a = await make_engine(storage.open(), sent, lease_seconds=120)
    other = storage.open()
    record_id = (await a.trigger("inc-unknown", CONTEXT, POLICY)).record.id
    [claimed] = other.claim_deliveries(clock.now(), 10, "engine-b", LEASE)  # B claims, then dies
    await a.drain()
    await a.advance(timedelta(minutes=10))  # B's sending lease (2 min) runs out; A sweeps
    assert sent.timeline() == []  # it may have gone out: not re-sent
    [(level, target, state, attempts)] = delivery_rows(other, record_id)
    assert (level, target, state, attempts) == (1, L1, "unknown", 1)
    [delivery] = other.get_deliveries(record_id)
    assert "not re-sent" in delivery.last_error
    # the escalation itself goes on: L2 is due at 15 and sent by A
    await a.advance(timedelta(minutes=10))
    assert sent.timeline() == [(15.0, "user:l2")]


async def test_a_delivery_rescheduled_by_another_engine_waits_for_its_retry_time(storage, make_engine, clock):
    sent = RecordingHandler(clock)
    a = await make_engine(storage.open(), sent, retry_delay_seconds=60, max_attempts=3)
    other = storage.open()
    record_id = (await a.trigger("inc-retry", CONTEXT, POLICY)).record.id
    # L1 sits in A's dispatcher queue; B's sweep claims it, its attempt fails: retry in 60 s
    [claimed] = other.claim_deliveries(clock.now(), 10, "engine-b", LEASE)
    other.finish_delivery(
        claimed.id,
        clock.now(),
        sent=False,
        error="ConnectionError: timeout",
        retry_at=clock.now() + timedelta(seconds=60),
    )
    await a.drain()
    assert sent.timeline() == []  # fails today: A sends it at once, 60 s before its retry time
    assert delivery_rows(other, record_id) == [(1, L1, "pending", 1)]
    await a.advance(timedelta(minutes=2))
    assert sent.timeline() == [(1.0, L1)]
    assert delivery_rows(other, record_id) == [(1, L1, "sent", 2)]
