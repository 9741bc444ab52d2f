"""Due times and pending deliveries as the sweep reads them, after records and deliveries change
(every store; the memory store keeps them in indexes of their own that must follow each change)."""

from __future__ import annotations

from test_store_contract import (
    LEASE,
    T0,
    change,
    create,
    ids,
    make_delivery,
    make_record,
    minutes,
)

from airflow_escalation.core.models import EscalationRecord
from airflow_escalation.core.types import DeliveryState
from airflow_escalation.stores.base import BaseEscalationStore


def test_a_due_time_moved_later_earlier_or_cleared_is_claimed_only_at_its_new_time(store: BaseEscalationStore) -> None:
    later = create(store, make_record("later", due=T0))
    earlier = create(store, make_record("earlier", due=T0 + minutes(10)))
    cleared = create(store, make_record("cleared", due=T0))
    gone = create(store, make_record("gone", due=T0))

    change(store, later.id, lambda r: setattr(r, "next_escalation_at", T0 + minutes(5)))
    change(store, earlier.id, lambda r: setattr(r, "next_escalation_at", T0 + minutes(1)))
    change(store, cleared.id, lambda r: setattr(r, "next_escalation_at", None))
    store.delete(gone.id)

    assert store.next_due_at() == T0 + minutes(1)
    assert store.claim_due(T0, 10, "a", LEASE) == []
    assert ids(store.claim_due(T0 + minutes(1), 10, "a", LEASE)) == [earlier.id]
    assert ids(store.claim_due(T0 + minutes(2), 10, "b", LEASE)) == []  # earlier: a's lease
    assert ids(store.claim_due(T0 + minutes(5), 10, "a", LEASE)) == [earlier.id, later.id]

    def done(record: EscalationRecord) -> None:
        record.state, record.closed_at = "resolved", T0 + minutes(9)

    change(store, later.id, done)
    change(store, earlier.id, done)
    assert store.next_due_at() is None
    assert store.claim_due(T0 + minutes(60), 10, "c", LEASE) == []


def test_a_claimed_record_stays_due_until_it_is_written(store: BaseEscalationStore) -> None:
    record = create(store, make_record(due=T0))
    assert ids(store.claim_due(T0, 10, "a", LEASE)) == [record.id]
    store.release(record.id, "a")
    assert store.next_due_at() == T0
    assert ids(store.claim_due(T0, 10, "b", LEASE)) == [record.id]  # released: still due
    change(store, record.id, lambda r: setattr(r, "next_escalation_at", T0 + minutes(2)))
    assert store.claim_due(T0 + minutes(1), 10, "b", LEASE) == []
    assert store.next_due_at() == T0 + minutes(2)


def test_pending_deliveries_follow_start_retry_and_cancel(store: BaseEscalationStore) -> None:
    record = make_record(due=T0 + minutes(30))
    first, second = make_delivery(record, 0), make_delivery(record, 1)
    create(store, record, first, second)
    assert store.next_delivery_at() == T0

    assert store.start_delivery(first.id, T0, "a", LEASE) is not None
    store.finish_delivery(first.id, T0, sent=False, error="down", retry_at=T0 + minutes(3))
    assert [d.id for d in store.claim_deliveries(T0, 10, "a", LEASE)] == [second.id]
    assert store.next_delivery_at() == T0 + minutes(3)
    assert store.claim_deliveries(T0 + minutes(1), 10, "a", LEASE) == []

    change(store, record.id, lambda r: setattr(r, "state", "acknowledged"), cancel_pending=True)
    assert store.next_delivery_at() is None
    assert store.claim_deliveries(T0 + minutes(5), 10, "a", LEASE) == []
    states = {d.id: d.state for d in store.get_deliveries(record.id)}
    assert states[first.id] == DeliveryState.CANCELLED
