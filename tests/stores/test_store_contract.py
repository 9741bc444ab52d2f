"""The store contract (stores/base.py), run against every backend by the ``store`` fixture.

The in-memory store is the reference: every backend must give the same answers. Times are fixed
(no wall clock), so each expectation is exact.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from uuid import uuid4

import pytest

from airflow_escalation.core.models import (
    Delivery,
    EscalationRecord,
    EscalationTarget,
    StatsAccumulator,
)
from airflow_escalation.core.timeutil import UTC
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, OPEN_STATE_VALUES, DeliveryState
from airflow_escalation.stores.base import BaseEscalationStore, StoreError
from airflow_escalation.stores.memory import InMemoryEscalationStore

StoreFactory = Callable[[], BaseEscalationStore]  # the store_factory fixture (conftest.py)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)
LEAD = EscalationTarget.user("lead")
OPS = EscalationTarget.channel("#ops")


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def make_record(
    incident: str = "inc-1",
    policy: str = "critical",
    *,
    state: str = "active",
    at: datetime = T0,
    due: datetime | None = None,
    **fields: Any,
) -> EscalationRecord:
    return EscalationRecord(
        id=uuid4().hex,
        incident_id=incident,
        policy_name=policy,
        state=state,
        created_at=at,
        updated_at=at,
        next_escalation_at=due,
        **fields,
    )


def make_delivery(
    record: EscalationRecord, index: int = 0, *, target: EscalationTarget = LEAD, **fields: Any
) -> Delivery:
    fields.setdefault("created_at", record.created_at)
    fields.setdefault("updated_at", fields["created_at"])
    return Delivery(
        id=f"{record.id}-{index}", record_id=record.id, level=record.current_level, round=0, target=target, **fields
    )


def create(store: BaseEscalationStore, record: EscalationRecord, *deliveries: Delivery) -> EscalationRecord:
    stored = store.create(record, deliveries)
    assert stored is not None, f"create refused {record.incident_id}/{record.policy_name}"
    return stored


def change(
    store: BaseEscalationStore,
    record_id: str,
    edit: Callable[[EscalationRecord], Any],
    *,
    events: int = 0,
    deliveries: tuple[Delivery, ...] = (),
    cancel_pending: bool = False,
) -> EscalationRecord:
    """Read, edit and CAS-write a record as the engine does; ``events`` = how many ``edit`` added."""
    record = store.get(record_id)
    assert record is not None
    expected = record.version
    edit(record)
    new_events = record.history[len(record.history) - events :] if events else []
    assert store.update(record, expected, new_events, deliveries, cancel_pending)
    return record


def close_record(store: BaseEscalationStore, record_id: str, at: datetime, state: str = "resolved") -> EscalationRecord:
    def edit(record: EscalationRecord) -> None:
        record.state, record.closed_at, record.updated_at = state, at, at
        record.next_escalation_at = None
        if state == "resolved":
            record.resolved_at, record.resolved_by = at, "alice"

    return change(store, record_id, edit, cancel_pending=True)


def ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def states(store: BaseEscalationStore, record_id: str) -> dict[str, DeliveryState]:
    return {d.id: d.state for d in store.get_deliveries(record_id)}


# --------------------------------------------------------------------------- create / open key


def test_create_stores_every_field_and_get_reads_it_back(store: BaseEscalationStore) -> None:
    record = make_record(
        state="acknowledged",
        due=T0 + minutes(15),
        current_level=2,
        acknowledged_at=T0 + minutes(3),
        acknowledged_by="alice",
        escalation_count=1,
        context={"severity": "high", "tags": ["a", "b"]},
        metadata={"trigger_count": 1, "nested": {"x": 1.5}},
        trigger_type="manual",
        policy_snapshot={"name": "critical", "levels": [{"level": 1, "targets": []}]},
        level_fired_at=T0 + minutes(1),
        repeats_sent=2,
        next_action="escalate",
        notify_rounds=3,
    )
    record.add_history_event("triggered", T0, actor="api", severity="high")
    stored = create(store, record)

    assert stored.version == 1
    read = store.get(record.id)
    assert read is not None
    assert read.to_dict() == {**record.to_dict(), "version": 1}
    assert store.get("no-such-id") is None


def test_a_second_open_record_of_the_same_incident_and_policy_is_refused(store: BaseEscalationStore) -> None:
    first = create(store, make_record(state="acknowledged"))
    second = make_record()

    assert store.create(second, [make_delivery(second)]) is None
    assert store.get(second.id) is None
    assert store.get_deliveries(second.id) == []
    assert store.find_open("inc-1", "critical").id == first.id
    assert store.create(make_record(state="resolved", closed_at=T0)) is None  # even a closed one
    # other policies and other incidents are independent
    create(store, make_record(policy="other"))
    create(store, make_record(incident="inc-2"))


def test_a_new_record_is_allowed_once_the_open_one_is_closed(store: BaseEscalationStore) -> None:
    first = create(store, make_record())
    close_record(store, first.id, T0 + minutes(5))
    assert store.find_open("inc-1", "critical") is None

    second = create(store, make_record(at=T0 + minutes(6)))
    assert store.find_open("inc-1", "critical").id == second.id
    assert store.create(make_record(), ()) is None


def test_create_refuses_an_id_already_stored(store: BaseEscalationStore) -> None:
    record = create(store, make_record(state="resolved", closed_at=T0))
    again = make_record(incident="inc-2")
    again.id = record.id
    assert store.create(again) is None
    assert store.get(record.id).incident_id == "inc-1"


# --------------------------------------------------------------------------- compare-and-swap update


def test_update_is_a_compare_and_swap(store: BaseEscalationStore) -> None:
    record = create(store, make_record())
    mine, theirs = store.get(record.id), store.get(record.id)

    mine.current_level = 2
    assert store.update(mine, 1)
    assert mine.version == 2

    theirs.current_level = 3
    assert not store.update(theirs, 1)  # stale
    assert theirs.version == 1
    stored = store.get(record.id)
    assert (stored.version, stored.current_level) == (2, 2)

    assert not store.update(make_record(incident="ghost"), 1)  # unknown record


def test_a_refused_update_writes_nothing(store: BaseEscalationStore) -> None:
    record = make_record()
    create(store, record, make_delivery(record, 0))
    change(store, record.id, lambda r: setattr(r, "current_level", 2))

    stale = store.get(record.id)
    stale.add_history_event("escalated", T0)
    assert not store.update(stale, 1, stale.history[-1:], [make_delivery(record, 1)], cancel_pending=True)

    stored = store.get(record.id)
    assert stored.version == 2 and stored.history == []
    assert states(store, record.id) == {f"{record.id}-0": DeliveryState.PENDING}


def test_history_events_are_appended_and_read_back_in_order(store: BaseEscalationStore) -> None:
    record = make_record(due=T0)
    record.add_history_event("triggered", T0)
    create(store, record)

    change(store, record.id, lambda r: r.add_history_event("started", T0 + minutes(1)), events=1)

    def two_events(r: EscalationRecord) -> None:
        r.add_history_event("notified", T0 + minutes(2), round=0, targets=["user:lead"])
        r.add_history_event("escalated", T0 + minutes(3), actor="bob")

    change(store, record.id, two_events, events=2)
    change(store, record.id, lambda r: setattr(r, "current_level", 2))  # no events
    change(store, record.id, lambda r: r.add_history_event("repeated", T0 + minutes(4)), events=1)

    expected = ["triggered", "started", "notified", "escalated", "repeated"]
    assert [e["event"] for e in store.get(record.id).history] == expected
    assert store.get(record.id).history[2]["details"] == {"round": 0, "targets": ["user:lead"]}
    # every read returns full records
    for found in (
        store.get_by_incident("inc-1"),
        store.get_active(),
        store.get_pending_escalations(T0),
        store.claim_due(T0, 10, "a", LEASE),
    ):
        assert [e["event"] for e in found[0].history] == expected


# --------------------------------------------------------------------------- claims


def test_claim_due_takes_due_records_in_due_order_up_to_the_limit(store: BaseEscalationStore) -> None:
    late = create(store, make_record("late", due=T0 - minutes(1)))
    now = create(store, make_record("now", due=T0))
    early = create(store, make_record("early", due=T0 - minutes(2)))
    create(store, make_record("future", due=T0 + minutes(1)))
    create(store, make_record("idle"))  # nothing due
    # closed: never due, whatever next_escalation_at says
    create(store, make_record("closed", state="timed_out", due=T0 - minutes(9), closed_at=T0))

    assert ids(store.claim_due(T0, 2, "a", LEASE)) == [early.id, late.id]
    assert ids(store.claim_due(T0, 10, "b", LEASE)) == [now.id]
    assert store.claim_due(T0, 0, "c", LEASE) == []


def test_a_live_lease_of_another_owner_is_skipped_an_expired_one_is_not(store: BaseEscalationStore) -> None:
    record = create(store, make_record(due=T0))
    assert ids(store.claim_due(T0, 10, "a", LEASE)) == [record.id]

    assert store.claim_due(T0 + minutes(1), 10, "b", LEASE) == []  # a's lease runs until T0+2
    assert ids(store.claim_due(T0 + minutes(1), 10, "a", LEASE)) == [record.id]  # its own: renewed
    assert store.claim_due(T0 + minutes(2), 10, "b", LEASE) == []  # renewed until T0+3
    assert ids(store.claim_due(T0 + minutes(3), 10, "b", LEASE)) == [record.id]  # expired: taken over
    assert store.claim_due(T0 + minutes(3), 10, "a", LEASE) == []


def test_release_drops_only_the_owners_lease(store: BaseEscalationStore) -> None:
    record = create(store, make_record(due=T0))
    store.claim_due(T0, 10, "a", LEASE)

    store.release(record.id, "b")
    assert store.claim_due(T0, 10, "b", LEASE) == []
    store.release(record.id, "a")
    assert ids(store.claim_due(T0, 10, "b", LEASE)) == [record.id]


def test_update_clears_the_claim_lease(store: BaseEscalationStore) -> None:
    record = create(store, make_record(due=T0))
    store.claim_due(T0, 10, "a", LEASE)
    change(store, record.id, lambda r: r.add_history_event("noted", T0), events=1)
    assert ids(store.claim_due(T0, 10, "b", LEASE)) == [record.id]


def test_next_due_at_is_the_earliest_due_time_of_an_open_record(store: BaseEscalationStore) -> None:
    assert store.next_due_at() is None
    create(store, make_record("a", due=T0 + minutes(5)))
    create(store, make_record("b", due=T0 + minutes(3)))
    create(store, make_record("c"))
    create(store, make_record("e", state="resolved", due=T0 - minutes(9), closed_at=T0))
    closed = create(store, make_record("d", due=T0))
    assert store.next_due_at() == T0

    def close_keeping_the_due_time(record: EscalationRecord) -> None:
        record.state, record.closed_at = "cancelled", T0

    change(store, closed.id, close_keeping_the_due_time)
    assert store.next_due_at() == T0 + minutes(3)
    assert store.claim_due(T0 + minutes(1), 10, "a", LEASE) == []


def test_get_pending_escalations_lists_open_records_due_by_then(store: BaseEscalationStore) -> None:
    second = create(store, make_record("a", due=T0))
    first = create(store, make_record("b", state="acknowledged", due=T0 - minutes(1)))
    create(store, make_record("c", due=T0 + minutes(1)))
    create(store, make_record("d", state="cancelled", due=T0 - minutes(2), closed_at=T0))
    store.claim_due(T0, 10, "a", LEASE)  # leases do not hide records from this query

    assert ids(store.get_pending_escalations(T0)) == [first.id, second.id]
    assert store.get_pending_escalations(T0 - minutes(5)) == []


# --------------------------------------------------------------------------- outbox


def test_deliveries_are_written_with_the_record_in_order(store: BaseEscalationStore) -> None:
    record = make_record()
    batch = [
        make_delivery(record, i, target=t)
        for i, t in enumerate([LEAD, OPS, EscalationTarget.webhook("https://hooks.example/x", conn_id="hook")])
    ]
    create(store, record, *batch)
    later = [make_delivery(record, i, created_at=T0 + minutes(5)) for i in (10, 3)]
    change(store, record.id, lambda r: None, deliveries=tuple(later))

    stored = store.get_deliveries(record.id)
    assert ids(stored) == ids(batch + later)
    assert [d.to_dict() for d in stored] == [d.to_dict() for d in batch + later]
    assert store.get_deliveries("no-such-record") == []


def test_start_delivery_moves_a_pending_delivery_to_sending_once(store: BaseEscalationStore) -> None:
    record = make_record()
    delivery = make_delivery(record)
    create(store, record, delivery)

    started = store.start_delivery(delivery.id, T0 + minutes(1), "a", LEASE)
    assert (started.state, started.attempts, started.updated_at) == (DeliveryState.SENDING, 1, T0 + minutes(1))
    assert store.start_delivery(delivery.id, T0 + minutes(1), "b", LEASE) is None
    assert store.claim_deliveries(T0 + minutes(1), 10, "b", LEASE) == []
    assert store.start_delivery("no-such-delivery", T0, "a", LEASE) is None


def test_claim_deliveries_takes_due_pending_ones_up_to_the_limit(store: BaseEscalationStore) -> None:
    record = make_record()
    now = [make_delivery(record, i) for i in range(3)]
    later = make_delivery(record, 9, next_attempt_at=T0 + minutes(5))
    create(store, record, *now, later)

    first = store.claim_deliveries(T0, 2, "a", LEASE)
    assert len(first) == 2 and all(d.state == DeliveryState.SENDING and d.attempts == 1 for d in first)
    second = store.claim_deliveries(T0, 10, "b", LEASE)
    assert sorted(ids(first + second)) == sorted(ids(now))
    assert store.claim_deliveries(T0 + minutes(4), 10, "a", LEASE) == []
    assert ids(store.claim_deliveries(T0 + minutes(5), 10, "a", LEASE)) == [later.id]
    assert store.claim_deliveries(T0 + minutes(5), 0, "a", LEASE) == []


def test_a_sent_delivery_counts_and_a_later_update_keeps_the_count(store: BaseEscalationStore) -> None:
    record = make_record()
    create(store, record, make_delivery(record, 0), make_delivery(record, 1, target=OPS))
    stale = store.get(record.id)  # read before the sends, as a concurrent engine step would be
    for delivery in store.claim_deliveries(T0, 10, "a", LEASE):
        done = store.finish_delivery(delivery.id, T0 + minutes(1), sent=True)
        assert (done.state, done.sent_at, done.last_error) == (DeliveryState.SENT, T0 + minutes(1), None)

    assert store.get(record.id).notification_count == 2
    stale.current_level = 2
    assert store.update(stale, 1)
    stored = store.get(record.id)
    assert (stored.current_level, stored.notification_count) == (2, 2)
    assert store.finish_delivery(f"{record.id}-0", T0, sent=True) is None  # not sending any more


def test_a_failed_attempt_with_retry_at_is_pending_again_at_that_time(store: BaseEscalationStore) -> None:
    record = make_record()
    delivery = make_delivery(record)
    create(store, record, delivery)
    assert store.finish_delivery(delivery.id, T0, sent=False, error="not sending") is None

    store.start_delivery(delivery.id, T0, "a", LEASE)
    retry_at = T0 + timedelta(seconds=30)
    done = store.finish_delivery(delivery.id, T0 + timedelta(seconds=1), sent=False, error="boom", retry_at=retry_at)
    assert (done.state, done.next_attempt_at, done.last_error) == (DeliveryState.PENDING, retry_at, "boom")
    assert store.next_delivery_at() == retry_at
    assert store.claim_deliveries(retry_at - timedelta(seconds=1), 10, "a", LEASE) == []
    again = store.claim_deliveries(retry_at, 10, "a", LEASE)
    assert [(d.id, d.attempts) for d in again] == [(delivery.id, 2)]
    assert store.get(record.id).notification_count == 0


def test_a_failed_attempt_without_retry_fails_for_good(store: BaseEscalationStore) -> None:
    record = make_record()
    delivery = make_delivery(record)
    create(store, record, delivery)
    store.start_delivery(delivery.id, T0, "a", LEASE)

    done = store.finish_delivery(delivery.id, T0 + minutes(1), sent=False, error="gone")
    assert (done.state, done.last_error, done.updated_at) == (DeliveryState.FAILED, "gone", T0 + minutes(1))
    assert store.get_deliveries(record.id)[0].state == DeliveryState.FAILED
    assert store.claim_deliveries(T0 + minutes(10), 10, "a", LEASE) == []
    assert store.next_delivery_at() is None


def test_update_with_cancel_pending_cancels_only_pending_deliveries(store: BaseEscalationStore) -> None:
    record = make_record()
    pending, sending = make_delivery(record, 0), make_delivery(record, 1)
    create(store, record, pending, sending)
    store.start_delivery(sending.id, T0, "a", LEASE)
    fresh = make_delivery(record, 2, created_at=T0 + minutes(2))

    def acknowledge(r: EscalationRecord) -> None:
        r.state, r.acknowledged_at, r.updated_at = "acknowledged", T0 + minutes(2), T0 + minutes(2)

    change(store, record.id, acknowledge, deliveries=(fresh,), cancel_pending=True)
    assert states(store, record.id) == {
        pending.id: DeliveryState.CANCELLED,
        sending.id: DeliveryState.SENDING,
        fresh.id: DeliveryState.PENDING,
    }
    assert store.get_deliveries(record.id)[0].updated_at == T0 + minutes(2)
    # without cancel_pending nothing is cancelled
    change(store, record.id, lambda r: None)
    assert states(store, record.id)[fresh.id] == DeliveryState.PENDING


def test_expire_deliveries_marks_sends_whose_lease_ran_out_unknown(store: BaseEscalationStore) -> None:
    record = make_record()
    dead, alive = make_delivery(record, 0), make_delivery(record, 1)
    create(store, record, dead, alive)
    store.start_delivery(dead.id, T0, "a", LEASE)
    store.start_delivery(alive.id, T0 + minutes(1), "b", LEASE)

    assert store.expire_deliveries(T0 + minutes(1)) == 0
    assert store.expire_deliveries(T0 + minutes(2)) == 1
    expired = store.get_deliveries(record.id)[0]
    assert (expired.state, expired.updated_at) == (DeliveryState.UNKNOWN, T0 + minutes(2))
    assert expired.last_error
    assert store.finish_delivery(dead.id, T0 + minutes(3), sent=True) is None  # too late
    assert store.expire_deliveries(T0 + minutes(2)) == 0
    assert states(store, record.id)[alive.id] == DeliveryState.SENDING


def test_next_delivery_at_is_the_earliest_pending_attempt(store: BaseEscalationStore) -> None:
    assert store.next_delivery_at() is None
    record = make_record()
    retry = make_delivery(record, 0, next_attempt_at=T0 + minutes(7))
    new = make_delivery(record, 1, created_at=T0 + minutes(5))  # no next_attempt_at: due at creation
    create(store, record, retry, new)
    assert store.next_delivery_at() == T0 + minutes(5)
    store.start_delivery(new.id, T0 + minutes(5), "a", LEASE)
    assert store.next_delivery_at() == T0 + minutes(7)


# --------------------------------------------------------------------------- queries


def test_get_active_lists_paging_records_oldest_first(store: BaseEscalationStore) -> None:
    c = create(store, make_record("c", state="active", at=T0 + minutes(3)))
    a = create(store, make_record("a", state="pending", at=T0 + minutes(1)))
    b = create(store, make_record("b", "other", state="active", at=T0 + minutes(2)))
    d = create(store, make_record("d", state="escalating", at=T0))
    create(store, make_record("e", state="acknowledged", at=T0))
    create(store, make_record("f", state="resolved", at=T0, closed_at=T0))
    closed = create(store, make_record("g", at=T0))
    close_record(store, closed.id, T0 + minutes(9), state="cancelled")

    assert ids(store.get_active()) == [d.id, a.id, b.id, c.id]
    assert ids(store.get_active("critical")) == [d.id, a.id, c.id]
    assert ids(store.get_active("other")) == [b.id]
    assert store.get_active("none") == []
    # counted as listed: the state change of a close moves a record out of the count
    assert [store.count_active(), store.count_active("critical"), store.count_active("other")] == [4, 3, 1]
    assert store.count_active("none") == 0
    close_record(store, c.id, T0 + minutes(10))
    assert (store.count_active(), store.count_active("critical")) == (3, 2)


def test_get_by_incident_lists_its_records_oldest_first(store: BaseEscalationStore) -> None:
    first = create(store, make_record(at=T0))
    close_record(store, first.id, T0 + minutes(5))
    second = create(store, make_record(at=T0 + minutes(6)))
    other_policy = create(store, make_record(policy="other", at=T0 + minutes(1)))
    create(store, make_record("inc-2"))

    assert ids(store.get_by_incident("inc-1")) == [first.id, other_policy.id, second.id]
    assert store.get_by_incident("nothing") == []


def test_find_open_and_last_closed(store: BaseEscalationStore) -> None:
    assert store.find_open("inc-1", "critical") is None
    assert store.last_closed("inc-1", "critical") is None
    older = create(store, make_record(at=T0))
    close_record(store, older.id, T0 + minutes(10))
    newer = create(store, make_record(at=T0 + minutes(11)))
    close_record(store, newer.id, T0 + minutes(20), state="cancelled")
    current = create(store, make_record(at=T0 + minutes(30)))
    create(store, make_record(policy="other", state="resolved", closed_at=T0 + minutes(40)))

    assert store.find_open("inc-1", "critical").id == current.id
    last = store.last_closed("inc-1", "critical")
    assert (last.id, last.state, last.closed_at) == (newer.id, "cancelled", T0 + minutes(20))
    assert store.find_open("inc-1", "other") is None
    assert store.last_closed("inc-2", "critical") is None


def test_list_records_pages_newest_first_with_the_total(store: BaseEscalationStore) -> None:
    records = [
        make_record(
            f"inc-{i % 3}",
            f"p{i % 2}",
            state=state,
            at=T0 + minutes(i % 5),
            context=context,
            closed_at=None if state in OPEN_STATE_VALUES else T0,
        )
        for i, (state, context) in enumerate(
            [
                ("timed_out", {"dag_id": "x" * 300}),
                ("resolved", {"dag_id": "etl"}),
                ("acknowledged", {}),
                ("pending", {"dag_id": "report"}),
                ("resolved", {"dag_id": 7}),
                ("cancelled", {"dag_id": "etl"}),
                ("active", {"dag_id": "etl"}),
                ("escalating", {"dag_id": "etl"}),
            ]
        )
    ]
    reference = InMemoryEscalationStore()
    for record in records:
        create(store, record)
        reference.create(record)

    page, total = store.list_records(dag_id="etl", limit=2)
    assert total == 4 and [r.created_at for r in page] == [T0 + minutes(2), T0 + minutes(1)]
    assert page[0].history == [] and page[0].version == 1
    for states in (None, [], ["active"], ["resolved", "timed_out"], sorted(ACTIVE_STATE_VALUES)):
        for policy, incident, dag in (
            (None, None, None),
            ("p0", None, None),
            (None, "inc-1", None),
            (None, None, "etl"),
            ("p1", "inc-0", "etl"),
            (None, None, "none"),
        ):
            for limit, offset in ((50, 0), (3, 2), (0, 0), (5, 10)):
                query = dict(
                    states=states, policy_name=policy, incident_id=incident, dag_id=dag, limit=limit, offset=offset
                )
                got, got_total = store.list_records(**query)
                want, want_total = reference.list_records(**query)
                assert (ids(got), got_total) == (ids(want), want_total), query


def test_cleanup_resolved_deletes_old_closed_records_with_their_rows(store: BaseEscalationStore) -> None:
    old = make_record("old")
    old.add_history_event("triggered", T0)
    create(store, old, make_delivery(old))
    close_record(store, old.id, T0 + minutes(10))
    recent = create(store, make_record("recent"))
    close_record(store, recent.id, T0 + timedelta(days=5))
    still_open = create(store, make_record("open", due=T0))

    assert store.cleanup_resolved(timedelta(days=3), now=T0 + timedelta(days=6)) == 1
    assert store.get(old.id) is None and store.get_deliveries(old.id) == []
    assert store.last_closed("old", "critical") is None
    assert {r.id for r in store.get_by_incident("recent") + store.get_by_incident("open")} == {recent.id, still_open.id}
    assert store.cleanup_resolved(timedelta(days=3), now=T0 + timedelta(days=6)) == 0
    # the incident is free again, with a clean slate
    create(store, make_record("old"))


def test_save_delete_and_clear(store: BaseEscalationStore) -> None:
    record = make_record(due=T0, notification_count=4)
    record.add_history_event("imported", T0)
    assert store.save(record).version == 1
    assert record.version == 0  # the argument is not changed

    record.current_level = 3
    record.history = [{"event": "rewritten", "at": T0.isoformat()}]
    saved = store.save(record)
    stored = store.get(record.id)
    assert saved.version == stored.version == 2
    assert (stored.current_level, stored.notification_count, stored.history) == (3, 4, record.history)
    assert store.find_open("inc-1", "critical").id == record.id

    assert store.delete(record.id) is True
    assert store.delete(record.id) is False
    assert store.get(record.id) is None and store.find_open("inc-1", "critical") is None

    other = make_record("x", due=T0)
    create(store, other, make_delivery(other))
    store.clear()
    assert store.get(other.id) is None and store.get_deliveries(other.id) == []
    assert (store.next_due_at(), store.next_delivery_at(), store.get_active()) == (None, None, [])


# --------------------------------------------------------------------------- stats


def test_get_stats_of_an_empty_store(store: BaseEscalationStore) -> None:
    stats = store.get_stats()
    assert stats.to_dict() == StatsAccumulator().result().to_dict()


def test_get_stats_counts_like_the_stats_accumulator(store: BaseEscalationStore) -> None:
    s = timedelta(seconds=1)
    records = [
        make_record("a", current_level=1),
        make_record("b", state="acknowledged", current_level=2, acknowledged_at=T0 + 90 * s),
        make_record(
            "c",
            "p2",
            state="resolved",
            current_level=2,
            at=T0 + 60 * s,
            acknowledged_at=T0 + 90 * s,
            resolved_at=T0 + 360 * s,
            closed_at=T0 + 360 * s,
        ),
        make_record(
            "d",
            "p2",
            state="resolved",
            current_level=3,
            resolved_at=T0 + timedelta(seconds=120, microseconds=500_001),
            closed_at=T0 + 121 * s,
        ),
        make_record("e", state="resolved", closed_at=T0),  # resolved without resolved_at
        make_record("f", state="timed_out", current_level=3, closed_at=T0),
        make_record("g", state="cancelled", closed_at=T0, acknowledged_at=T0 + 10 * s),
        make_record("h", "p2", state="failed", closed_at=T0),
        make_record("i", state="pending"),
        make_record("j", state="escalating", current_level=2),
    ]
    a, c = records[0], records[2]
    sent = [
        make_delivery(a, 0),
        make_delivery(a, 1),
        make_delivery(a, 2, target=OPS),
        make_delivery(c, 0, target=EscalationTarget.email("boss@example.com")),
    ]
    failed = [make_delivery(a, 3), make_delivery(c, 1)]
    untouched = [make_delivery(a, 4), make_delivery(c, 2)]
    for record in records:
        create(store, record, *[d for d in sent + failed + untouched if d.record_id == record.id])
    for delivery in sent + failed:
        store.start_delivery(delivery.id, T0, "a", LEASE)
        store.finish_delivery(delivery.id, T0, sent=delivery in sent, error=None if delivery in sent else "x")

    acc = StatsAccumulator()
    for record in records:
        acc.add_record(record)
    for delivery in sent:
        acc.add_delivery(delivery.target.key, DeliveryState.SENT)
    for delivery in failed:
        acc.add_delivery(delivery.target.key, DeliveryState.FAILED)
    expected = acc.result().to_dict()

    stats = store.get_stats()
    got = stats.to_dict()
    for key in ("avg_time_to_acknowledge_seconds", "avg_time_to_resolve_seconds"):
        assert got.pop(key) == pytest.approx(expected.pop(key), abs=1e-6)
    assert got == expected
    # and the numbers themselves
    # counted by state: the counts partition the total (c and g were acknowledged, then closed)
    assert (stats.total_escalations, stats.active_escalations, stats.acknowledged_count) == (10, 3, 1)
    assert (stats.resolved_count, stats.timed_out_count, stats.cancelled_count, stats.failed_count) == (3, 1, 1, 1)
    assert stats.avg_time_to_acknowledge_seconds == pytest.approx((90 + 30 + 10) / 3)
    assert stats.avg_time_to_resolve_seconds == pytest.approx((300 + 120.500001) / 2)
    assert stats.escalations_by_level == {1: 5, 2: 3, 3: 2}
    assert stats.escalations_by_policy == {"critical": 7, "p2": 3}
    counts = ("active_escalations", "acknowledged_count", "resolved_count", "timed_out_count", "cancelled_count")
    assert sum(getattr(stats, name) for name in counts) + stats.failed_count == stats.total_escalations
    assert stats.notifications_by_target == {"user:lead": 2, "channel:#ops": 1, "email:boss@example.com": 1}
    assert (stats.notifications_sent, stats.notifications_failed) == (4, 2)


# --------------------------------------------------------------------------- per DAG


DAG_CONTEXTS = [
    {"dag_id": "A"},
    {"dag_id": "B"},
    {},
    {"dag_id": 7},
    {"dag_id": "C"},
    {"dag_id": "A"},
    {"dag_id": ""},
    {"dag_id": "B"},
]


def test_list_records_and_stats_keep_only_the_dags_asked_for(store: BaseEscalationStore) -> None:
    records = [
        make_record(
            f"inc-{i}",
            state="resolved" if i % 3 == 0 else "active",
            at=T0 + minutes(i),
            context=context,
            closed_at=T0 + minutes(i) if i % 3 == 0 else None,
            resolved_at=T0 + minutes(i) if i % 3 == 0 else None,
        )
        for i, context in enumerate(DAG_CONTEXTS)
    ]
    reference = InMemoryEscalationStore()
    for record in records:
        delivery = make_delivery(record, 0)
        create(store, record, delivery)
        reference.create(record.clone(), [make_delivery(record, 0)])
        for target in (store, reference):
            target.start_delivery(delivery.id, T0, "a", LEASE)
            target.finish_delivery(delivery.id, T0, sent=True)
    for dag_ids in ([], ["A"], ["A", "B"], [None], ["A", None], ["nope"], ["C", "B", None, "nope"]):
        for extra in ({}, {"dag_id": "A"}, {"states": ["active"]}, {"limit": 2, "offset": 1}):
            got, got_total = store.list_records(dag_ids=dag_ids, **extra)
            want, want_total = reference.list_records(dag_ids=dag_ids, **extra)
            assert (ids(got), got_total) == (ids(want), want_total), (dag_ids, extra)
        expected = StatsAccumulator()
        for record in records:
            if record.dag_id in dag_ids:
                expected.add_record(record)
                expected.add_delivery(LEAD.key, DeliveryState.SENT)
        assert store.get_stats(dag_ids=dag_ids).to_dict() == expected.result().to_dict(), dag_ids
    # the records of no DAG: no dag_id, one that is not a string, an empty one
    _, none_total = store.list_records(dag_ids=[None])
    assert none_total == 3
    assert store.get_stats(dag_ids=None).total_escalations == len(records)


def test_an_open_record_belongs_to_its_dag(store: BaseEscalationStore) -> None:
    a = create(store, make_record("B.load", context={"dag_id": "A"}))
    # the same incident id and policy from DAG B is another incident: it opens its own record
    assert store.find_open("B.load", "critical", "B") is None
    assert store.find_open("B.load", "critical") is None
    b = create(store, make_record("B.load", context={"dag_id": "B"}))
    none = create(store, make_record("B.load"))
    assert store.create(make_record("B.load", context={"dag_id": "A"})) is None
    assert store.create(make_record("B.load", context={"dag_id": 5})) is None  # no DAG, like `none`
    assert store.find_open("B.load", "critical", "A").id == a.id
    assert store.find_open("B.load", "critical", "B").id == b.id
    assert store.find_open("B.load", "critical", None).id == none.id
    close_record(store, a.id, T0 + minutes(5))
    assert store.find_open("B.load", "critical", "A") is None
    assert store.find_open("B.load", "critical", "B").id == b.id
    # the cooldown's question: closed records of that DAG only
    assert store.last_closed("B.load", "critical", "A").id == a.id
    assert store.last_closed("B.load", "critical", "B") is None
    assert store.last_closed("B.load", "critical") is None


def _store_under_legacy_key(store: BaseEscalationStore, record: EscalationRecord) -> None:
    """Index ``record`` (stored, open) as a store written before the open key named the DAG."""
    if isinstance(store, InMemoryEscalationStore):
        pytest.skip("the memory store keeps nothing across versions")
    if hasattr(store, "tables"):
        import sqlalchemy as sa

        from airflow_escalation.stores.sql import legacy_open_key

        table = store.tables.record
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.id == record.id)
                .values(open_key=legacy_open_key(record.incident_id, record.policy_name))
            )
        return
    from airflow_escalation.stores.redis import _incident_key

    client, prefix = store.client, store.key_prefix
    client.hdel(prefix + "open_dag", _incident_key(record.incident_id, record.policy_name, record.dag_id))
    client.hset(prefix + "open", f"{record.incident_id}\x1f{record.policy_name}", record.id)


def test_a_record_stored_under_the_legacy_open_key_is_found_for_its_dag_only(store: BaseEscalationStore) -> None:
    old = create(store, make_record("inc", context={"dag_id": "A"}))
    _store_under_legacy_key(store, old)
    assert store.find_open("inc", "critical", "A").id == old.id
    assert store.find_open("inc", "critical", "B") is None
    assert store.find_open("inc", "critical") is None
    b = create(store, make_record("inc", context={"dag_id": "B"}))
    assert store.find_open("inc", "critical", "B").id == b.id
    # its next write moves it to the new key; closing it frees the incident of DAG A
    change(store, old.id, lambda r: setattr(r, "current_level", 2))
    assert store.find_open("inc", "critical", "A").id == old.id
    close_record(store, old.id, T0 + minutes(1))
    assert store.find_open("inc", "critical", "A") is None
    assert store.last_closed("inc", "critical", "A").id == old.id
    assert store.find_open("inc", "critical", "B").id == b.id


# --------------------------------------------------------------------------- time


def test_datetimes_round_trip_as_aware_utc_to_the_microsecond(store: BaseEscalationStore) -> None:
    at = datetime(2025, 7, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    record = make_record(at=at, due=at + timedelta(microseconds=1), acknowledged_at=at, level_fired_at=at)
    delivery = make_delivery(record, next_attempt_at=at + timedelta(days=1, microseconds=7))
    create(store, record, delivery)

    stored = store.get(record.id)
    for name in ("created_at", "updated_at", "next_escalation_at", "acknowledged_at", "level_fired_at"):
        value = getattr(stored, name)
        assert value == getattr(record, name) and value.utcoffset() == timedelta(0), name
    read = store.get_deliveries(record.id)[0]
    assert read.next_attempt_at == delivery.next_attempt_at and read.next_attempt_at.utcoffset() == timedelta(0)
    assert store.next_due_at() == at + timedelta(microseconds=1)
    assert store.next_due_at().utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- concurrency


def run_together(workers: int, job: Callable[[int], Any]) -> list[Any]:
    """Run ``job(0..workers-1)`` in threads released at the same moment."""
    start = threading.Barrier(workers)

    def run(i: int) -> Any:
        start.wait()
        return job(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(workers)))


def test_concurrent_creates_of_one_incident_have_exactly_one_winner(
    store: BaseEscalationStore, store_factory: StoreFactory
) -> None:
    stores = [store, store_factory()]  # two stores on one database: two "processes"
    records = [make_record(at=T0 + timedelta(seconds=i)) for i in range(8)]

    created = run_together(8, lambda i: stores[i % 2].create(records[i], [make_delivery(records[i])]))

    winners = [r for r in created if r is not None]
    assert len(winners) == 1
    assert ids(store.get_by_incident("inc-1")) == [winners[0].id]
    assert store.find_open("inc-1", "critical").id == winners[0].id
    assert len(store.get_deliveries(winners[0].id)) == 1


def test_concurrent_claimers_never_get_the_same_record(store: BaseEscalationStore, store_factory: StoreFactory) -> None:
    stores = [store, store_factory()]
    due = {create(store, make_record(f"inc-{i}", due=T0 - timedelta(seconds=i))).id for i in range(40)}

    def claimer(i: int) -> list[str]:
        mine: list[str] = []
        while claimed := stores[i % 2].claim_due(T0, 3, f"engine-{i}", LEASE):
            for record in claimed:
                mine.append(record.id)
                expected = record.version
                record.next_escalation_at = T0 + minutes(60)  # done with it: no longer due
                assert stores[i % 2].update(record, expected)
        return mine

    claims = [record_id for mine in run_together(4, claimer) for record_id in mine]
    assert len(claims) == len(set(claims)) == 40
    assert set(claims) == due


def test_concurrent_delivery_claimers_never_get_the_same_delivery(
    store: BaseEscalationStore, store_factory: StoreFactory
) -> None:
    stores = [store, store_factory()]
    record = make_record()
    create(store, record, *[make_delivery(record, i) for i in range(30)])

    def claimer(i: int) -> list[str]:
        mine: list[str] = []
        while claimed := stores[i % 2].claim_deliveries(T0, 4, f"sender-{i}", LEASE):
            mine += ids(claimed)
        return mine

    claims = [d for mine in run_together(4, claimer) for d in mine]
    assert len(claims) == len(set(claims)) == 30


# --------------------------------------------------------------------------- SQL store specifics


def test_sqlite_memory_database_is_shared_by_threads() -> None:
    from airflow_escalation.stores.sql import SQLiteEscalationStore

    store = SQLiteEscalationStore(":memory:")
    try:
        created = run_together(8, lambda i: store.create(make_record(f"inc-{i}", due=T0)))
        assert all(created)
        assert len(store.get_pending_escalations(T0)) == 8
    finally:
        store.close()


def test_sql_times_in_other_zones_are_stored_as_the_same_instant_in_utc(tmp_path: Any) -> None:
    from airflow_escalation.stores.sql import SQLiteEscalationStore

    store = SQLiteEscalationStore(str(tmp_path / "zones.db"))
    try:
        seoul = timezone(timedelta(hours=9))
        record = make_record(at=datetime(2025, 3, 3, 18, 0, tzinfo=seoul), due=datetime(2025, 3, 3, 9, 30))
        create(store, record)
        stored = store.get(record.id)
        assert stored.created_at == T0 and stored.created_at.tzinfo == UTC
        assert stored.next_escalation_at == T0 + minutes(30)  # naive is taken as UTC
        assert ids(store.claim_due(T0 + minutes(30), 10, "a", LEASE)) == [record.id]
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        "mysql+pymysql://root@127.0.0.1:1/test",
    ],
)
def test_an_unreachable_database_raises_store_error(url: str) -> None:
    from airflow_escalation.stores.sql import SQLEscalationStore

    with pytest.raises(StoreError, match="cannot reach the database at .*127.0.0.1:1"):
        SQLEscalationStore(url)
    store = SQLEscalationStore(url, create_tables=False)
    try:
        with pytest.raises(StoreError, match="cannot reach"):
            store.get("x")
    finally:
        store.close()


def test_a_batch_gives_each_call_its_own_outcome_and_one_failure_undoes_only_itself(
    store: BaseEscalationStore,
) -> None:
    """``run_batch`` (how the engine sends the calls it makes at once to a SQL store: one SQLite
    transaction with a savepoint per call; on PostgreSQL one pipeline, run again call by call if
    any statement of it fails)."""
    from airflow_escalation.stores.sql import SQLEscalationStore

    if not isinstance(store, SQLEscalationStore):
        pytest.skip("run_batch of the SQL store")
    a = create(store, make_record("a"))
    first = make_record("b")
    taken = make_delivery(first)
    create(store, first, taken)
    new = make_record("c")
    clash = make_record("d")
    clashing = Delivery(id=taken.id, record_id=clash.id, level=1, round=0, target=LEAD, created_at=T0, updated_at=T0)
    acked = store.get(a.id)
    assert acked is not None
    acked.state, acked.updated_at = "acknowledged", T0 + minutes(1)
    acked.add_history_event("acknowledge", T0 + minutes(1), "alice", from_state="active")
    stale = store.get(a.id)
    assert stale is not None

    outcomes = store.run_batch(
        [
            (store.get, (a.id,), {}),
            (store.create, (new,), {}),
            (store.create, (clash, [clashing]), {}),  # the delivery id is taken: this call fails
            (store.create, (make_record("a"),), {}),  # a second open record: refused, not an error
            (store.update, (acked, a.version, acked.history[-1:]), {}),
            (store.update, (stale, a.version), {}),  # lost the race to the update before it
            (store.start_delivery, (taken.id, T0, "me", minutes(2)), {}),
        ]
    )

    results = [result for result, _ in outcomes]
    errors = [error for _, error in outcomes]
    assert [e is None for e in errors] == [True, True, False, True, True, True, True]
    assert isinstance(errors[2], StoreError)
    assert results[0].id == a.id and results[1] is new and results[3] is None
    assert results[4] is True and results[5] is False
    assert results[6] is not None and results[6].state == DeliveryState.SENDING
    assert store.get(new.id) is not None and store.get(clash.id) is None
    stored = store.get(a.id)
    assert stored.state == "acknowledged" and stored.version == a.version + 1
    assert [e["event"] for e in stored.history][-1] == "acknowledge"

    # and a batch where nothing fails (on PostgreSQL: one pipeline, one commit)
    later = make_record("e")
    outcomes = store.run_batch(
        [
            (store.create, (later, [make_delivery(later)]), {}),
            (store.find_open, ("b", "critical"), {}),
            (store.finish_delivery, (taken.id, T0 + minutes(1)), {"sent": True}),
            (store.get, ("nothing",), {}),
        ]
    )
    assert [error for _, error in outcomes] == [None] * 4
    assert outcomes[0][0] is later and outcomes[1][0].id == first.id and outcomes[3][0] is None
    assert outcomes[2][0].state == DeliveryState.SENT
    assert store.get(first.id).notification_count == 1
    assert [d.id for d in store.get_deliveries(later.id)] == [f"{later.id}-0"]


def test_a_batch_finds_and_creates_open_records_per_dag(store: BaseEscalationStore) -> None:
    """The per-DAG identity holds in ``run_batch`` too (on PostgreSQL the pipelined one-statement
    ``find_open`` and ``create``), legacy open keys included."""
    from airflow_escalation.stores.sql import SQLEscalationStore

    if not isinstance(store, SQLEscalationStore):
        pytest.skip("run_batch of the SQL store")
    old = create(store, make_record("inc", context={"dag_id": "A"}))
    _store_under_legacy_key(store, old)
    none = create(store, make_record("inc"))
    b = make_record("inc", context={"dag_id": "B"})
    outcomes = store.run_batch(
        [
            (store.find_open, ("inc", "critical", "A"), {}),
            (store.find_open, ("inc", "critical"), {"dag_id": "B"}),
            (store.find_open, ("inc", "critical", None), {}),
            (store.create, (b,), {}),
            (store.create, (make_record("inc"),), {}),  # a second open record of no DAG: refused
        ]
    )
    assert [error for _, error in outcomes] == [None] * 5
    found = [result for result, _ in outcomes]
    assert found[0].id == old.id and found[1] is None and found[2].id == none.id
    assert found[3] is b and found[4] is None
    outcomes = store.run_batch(
        [
            (store.find_open, ("inc", "critical", "B"), {}),
            (store.find_open, ("inc", "critical", "A"), {}),
        ]
    )
    assert [result.id for result, _ in outcomes] == [b.id, old.id]
