"""In-memory store: single process, no persistence; the reference for the store contract."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from airflow_escalation.core.models import Delivery, EscalationRecord, EscalationStats
from airflow_escalation.core.timeutil import UTC
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, DeliveryState, EscalationState
from airflow_escalation.stores.base import BaseEscalationStore, DagIds

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COUNT_AT = 10_000  # records written since the tallies were brought up to date: count them now
_RESOLVED = EscalationState.RESOLVED.value
_COUNTED = (
    # EscalationStats fields that count the records in one state
    ("acknowledged_count", EscalationState.ACKNOWLEDGED.value),
    ("resolved_count", _RESOLVED),
    ("timed_out_count", EscalationState.TIMED_OUT.value),
    ("cancelled_count", EscalationState.CANCELLED.value),
    ("failed_count", EscalationState.FAILED.value),
)


class _Tally:
    """The stats of one Dag's records, kept as they change (what the SQL store's aggregates and
    the Redis store's counters count), so that ``get_stats`` costs the number of Dags, not of
    records. Durations are summed in integer microseconds: adding and taking back is exact.
    States are keys as records hold them (``EscalationState`` is a ``str``: one key per state)."""

    __slots__ = ("ack_n", "ack_us", "failed", "levels", "policies", "res_n", "res_us", "sent", "states")

    def __init__(self) -> None:
        self.states: Counter[str] = Counter()
        self.levels: Counter[int] = Counter()
        self.policies: Counter[str] = Counter()
        self.ack_n = self.ack_us = self.res_n = self.res_us = 0
        self.sent: Counter[str] = Counter()  # by target key
        self.failed = 0

    def count(self, record: EscalationRecord, one: int) -> None:
        """Add the record (``one=1``) or take it back (``-1``)."""
        states, levels, policies = self.states, self.levels, self.policies
        states[record.state] = states.get(record.state, 0) + one
        levels[record.current_level] = levels.get(record.current_level, 0) + one
        policies[record.policy_name] = policies.get(record.policy_name, 0) + one
        self._durations(record, one)

    def _durations(self, record: EscalationRecord, one: int) -> None:
        if record.acknowledged_at is not None:
            self.ack_n += one
            self.ack_us += one * ((record.acknowledged_at - record.created_at) // _MICROSECOND)
        if record.resolved_at is not None and record.state == _RESOLVED:
            self.res_n += one
            self.res_us += one * ((record.resolved_at - record.created_at) // _MICROSECOND)

    def count_delivery(self, delivery: Delivery, one: int) -> None:
        if delivery.state == DeliveryState.SENT:
            self.sent[delivery.target.key] += one
        elif delivery.state == DeliveryState.FAILED:
            self.failed += one


def _stats(tallies: Iterable[_Tally]) -> EscalationStats:
    states: Counter[str] = Counter()
    levels: Counter[int] = Counter()
    policies: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    ack_n = ack_us = res_n = res_us = failed = 0
    for tally in tallies:
        states.update(tally.states)
        levels.update(tally.levels)
        policies.update(tally.policies)
        sent.update(tally.sent)
        ack_n, ack_us, res_n, res_us = (
            ack_n + tally.ack_n,
            ack_us + tally.ack_us,
            res_n + tally.res_n,
            res_us + tally.res_us,
        )
        failed += tally.failed
    stats = EscalationStats(
        total_escalations=sum(states.values()),
        active_escalations=sum(n for state, n in states.items() if state in ACTIVE_STATE_VALUES),
        avg_time_to_acknowledge_seconds=ack_us / 1e6 / ack_n if ack_n else 0.0,
        avg_time_to_resolve_seconds=res_us / 1e6 / res_n if res_n else 0.0,
        escalations_by_level={level: n for level, n in levels.items() if n},
        escalations_by_policy={policy: n for policy, n in policies.items() if n},
        notifications_sent=sum(sent.values()),
        notifications_by_target={key: n for key, n in sent.items() if n},
        notifications_failed=failed,
    )
    for field, state in _COUNTED:
        setattr(stats, field, states[state])
    return stats


class InMemoryEscalationStore(BaseEscalationStore):
    """Keeps records in dictionaries guarded by one short lock (safe across threads).

    Reads return clones. ``create`` and ``update`` take ownership of the record they are given
    (the engine hands over records it no longer changes), which saves a copy per write.

    Due times are kept in a heap and pending deliveries in their own index, so that the engine's
    sweep (``claim_due``, ``next_due_at``, ``claim_deliveries``, ``next_delivery_at``) costs what
    is due, not what is stored.
    """

    def __init__(self, name: str = "memory") -> None:
        super().__init__(name)
        self._lock = threading.RLock()
        self._records: dict[str, EscalationRecord] = {}
        # (incident, policy, dag) -> open record id / latest closed record id
        self._open: dict[tuple[str, str, str | None], str] = {}
        self._last_closed: dict[tuple[str, str, str | None], str] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._deliveries_by_record: dict[str, list[str]] = {}
        self._delivery_leases: dict[str, datetime] = {}
        # (due, seq, record id); an entry stands while _due_at[record id] is still that time.
        # Writes only note the record (_moved); the sweep's reads push what still stands, so a
        # record opened and closed between two sweeps never reaches the heap.
        self._due_heap: list[tuple[datetime, int, str]] = []
        self._due_at: dict[str, datetime] = {}
        self._moved: set[str] = set()
        self._seq = itertools.count()
        self._pending: dict[str, Delivery] = {}  # pending deliveries, in the order they became so
        # kept as records change, so that counts cost what they find, not what is stored
        self._active_by_policy: dict[str, dict[str, None]] = {}  # paging record ids per policy
        self._tallies: dict[str | None, _Tally] = {}  # per Dag
        # Records are counted in the tallies when stats are asked for (or when many wait): a
        # write only notes the record's version last counted (None: none), so a record opened
        # and closed in between is counted once, not at every transition.
        self._uncounted: dict[str, EscalationRecord | None] = {}
        self._dag_of: dict[str, str | None] = {}  # record id -> its Dag (for its deliveries' counts)

    def _track(self, old: EscalationRecord | None, new: EscalationRecord | None) -> None:
        """Move a record's entry in the active index from ``old`` (None: a new record) to ``new``
        (None: deleted), and note it for the tallies."""
        old_key = old.policy_name if old is not None and old.state in ACTIVE_STATE_VALUES else None
        new_key = new.policy_name if new is not None and new.state in ACTIVE_STATE_VALUES else None
        record_id = new.id if new is not None else old.id if old is not None else ""
        if old_key != new_key:
            if old_key is not None:
                self._active_by_policy[old_key].pop(record_id, None)
            if new_key is not None:
                ids = self._active_by_policy.get(new_key)
                if ids is None:
                    ids = self._active_by_policy[new_key] = {}
                ids[record_id] = None
        if record_id not in self._uncounted:
            self._uncounted[record_id] = old  # the version the tallies hold (old: a stored one)
            if len(self._uncounted) >= _COUNT_AT:
                self._count()

    def _count(self) -> None:
        """Bring the tallies up to date with the records written since they last were."""
        for record_id, counted in self._uncounted.items():
            if counted is not None:
                self._tallies[counted.dag_id].count(counted, -1)
            current = self._records.get(record_id)
            if current is not None:
                self._tally(current.dag_id).count(current, 1)
        self._uncounted.clear()

    def _tally(self, dag_id: str | None) -> _Tally:
        tally = self._tallies.get(dag_id)
        if tally is None:
            tally = self._tallies[dag_id] = _Tally()
        return tally

    # ------------------------------------------------------------------ helpers
    def _index(self, record: EscalationRecord) -> None:
        key = _incident_key(record)
        due = record.next_escalation_at if record.is_open else None
        if due is None:
            self._due_at.pop(record.id, None)
        elif self._due_at.get(record.id) != due:
            self._due_at[record.id] = due
            self._moved.add(record.id)
        if record.is_open:
            self._open[key] = record.id
        else:
            if self._open.get(key) == record.id:
                del self._open[key]
            previous = self._records.get(self._last_closed.get(key, ""))
            if previous is None or (record.closed_at or _EPOCH) >= (previous.closed_at or _EPOCH):
                self._last_closed[key] = record.id

    def _due_heap_now(self) -> list[tuple[datetime, int, str]]:
        """The due heap with the records moved since the last read pushed (under the lock)."""
        due_at, heap = self._due_at, self._due_heap
        for record_id in self._moved:
            due = due_at.get(record_id)
            if due is not None:
                heapq.heappush(heap, (due, next(self._seq), record_id))
        self._moved.clear()
        if len(heap) > 2 * len(due_at) + 1024:  # mostly entries that no longer stand
            heap = self._due_heap = [(when, next(self._seq), rid) for rid, when in due_at.items()]
            heapq.heapify(heap)
        return heap

    def _add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.state in (DeliveryState.SENT, DeliveryState.FAILED):
                self._tally(self._dag_of.get(delivery.record_id)).count_delivery(delivery, 1)
            self._deliveries[delivery.id] = delivery
            self._deliveries_by_record.setdefault(delivery.record_id, []).append(delivery.id)
            if delivery.state == DeliveryState.PENDING:
                self._pending[delivery.id] = delivery

    # ------------------------------------------------------------------ spec query API
    def get(self, record_id: str) -> EscalationRecord | None:
        record = self._records.get(record_id)
        return record.clone() if record is not None else None

    def get_by_incident(self, incident_id: str) -> list[EscalationRecord]:
        with self._lock:
            found = [r.clone() for r in self._records.values() if r.incident_id == incident_id]
        return sorted(found, key=lambda r: r.created_at)

    def _active_ids(self, policy_name: str | None) -> list[str]:
        if policy_name is not None:
            return list(self._active_by_policy.get(policy_name, ()))
        return [record_id for ids in self._active_by_policy.values() for record_id in ids]

    def get_active(self, policy_name: str | None = None, *, with_history: bool = True) -> list[EscalationRecord]:
        with self._lock:
            found = [self._records[record_id] for record_id in self._active_ids(policy_name)]
        return sorted((r.clone() if with_history else _without_history(r) for r in found), key=lambda r: r.created_at)

    def count_active(self, policy_name: str | None = None) -> int:
        with self._lock:
            if policy_name is not None:
                return len(self._active_by_policy.get(policy_name, ()))
            return sum(len(ids) for ids in self._active_by_policy.values())

    def list_records(
        self,
        *,
        states: Sequence[str] | None = None,
        policy_name: str | None = None,
        incident_id: str | None = None,
        dag_id: str | None = None,
        dag_ids: DagIds | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[EscalationRecord], int]:
        wanted = set(states) if states else None
        dags = set(dag_ids) if dag_ids is not None else None
        with self._lock:
            found = [
                r
                for r in self._records.values()
                if (wanted is None or r.state in wanted)
                and (policy_name is None or r.policy_name == policy_name)
                and (incident_id is None or r.incident_id == incident_id)
                and (dag_id is None or r.dag_id == dag_id)
                and (dags is None or r.dag_id in dags)
            ]
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return [r.clone() for r in found[offset : offset + limit]], len(found)

    def delete(self, record_id: str) -> bool:
        with self._lock:
            record = self._records.pop(record_id, None)
            if record is None:
                return False
            tally = self._tally(self._dag_of.pop(record_id, None))
            self._track(record, None)
            key = _incident_key(record)
            for index in (self._open, self._last_closed):
                if index.get(key) == record_id:
                    del index[key]
            self._leases.pop(record_id, None)
            self._due_at.pop(record_id, None)
            for delivery_id in self._deliveries_by_record.pop(record_id, []):
                tally.count_delivery(self._deliveries.pop(delivery_id), -1)
                self._delivery_leases.pop(delivery_id, None)
                self._pending.pop(delivery_id, None)
            return True

    def cleanup_resolved(self, older_than: timedelta, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - older_than
        with self._lock:
            old = [r.id for r in self._records.values() if r.closed_at is not None and r.closed_at < cutoff]
            for record_id in old:
                self.delete(record_id)
        return len(old)

    def get_stats(self, dag_ids: DagIds | None = None) -> EscalationStats:
        with self._lock:
            self._count()
            if dag_ids is None:
                return _stats(self._tallies.values())
            return _stats(self._tallies[dag] for dag in set(dag_ids) if dag in self._tallies)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._open.clear()
            self._last_closed.clear()
            self._leases.clear()
            self._deliveries.clear()
            self._deliveries_by_record.clear()
            self._delivery_leases.clear()
            self._due_heap.clear()
            self._due_at.clear()
            self._moved.clear()
            self._pending.clear()
            self._active_by_policy.clear()
            self._tallies.clear()
            self._uncounted.clear()
            self._dag_of.clear()

    # ------------------------------------------------------------------ engine contract
    def create(self, record: EscalationRecord, deliveries: Sequence[Delivery] = ()) -> EscalationRecord | None:
        with self._lock:
            if _incident_key(record) in self._open or record.id in self._records:
                return None
            record.version = 1
            self._records[record.id] = record
            self._index(record)
            self._dag_of[record.id] = record.dag_id
            self._track(None, record)
            self._add_deliveries(deliveries)
        return record

    def find_open(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        record_id = self._open.get((incident_id, policy_name, dag_id))
        return self.get(record_id) if record_id else None

    def last_closed(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        record_id = self._last_closed.get((incident_id, policy_name, dag_id))
        return self.get(record_id) if record_id else None

    def update(
        self,
        record: EscalationRecord,
        expected_version: int,
        new_events: Sequence[dict] = (),
        deliveries: Sequence[Delivery] = (),
        cancel_pending: bool = False,
    ) -> bool:
        with self._lock:
            current = self._records.get(record.id)
            if current is None or current.version != expected_version:
                return False
            record.version = expected_version + 1
            record.notification_count = current.notification_count  # counted by finish_delivery
            self._records[record.id] = record
            self._index(record)
            self._track(current, record)
            self._leases.pop(record.id, None)
            if cancel_pending:
                for delivery_id in self._deliveries_by_record.get(record.id, ()):
                    delivery = self._deliveries[delivery_id]
                    if delivery.state == DeliveryState.PENDING:
                        delivery.state = DeliveryState.CANCELLED
                        delivery.updated_at = record.updated_at
                        del self._pending[delivery_id]
            self._add_deliveries(deliveries)
        return True

    def claim_due(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[EscalationRecord]:
        claimed: list[EscalationRecord] = []
        with self._lock:
            heap, due_at = self._due_heap_now(), self._due_at
            still_due = []  # entries taken off the heap that stand: back on when done
            seen = set()  # a record moved away and back has two entries that stand
            while heap and heap[0][0] <= now and len(claimed) < limit:
                entry = heapq.heappop(heap)
                record_id = entry[2]
                if due_at.get(record_id) != entry[0] or record_id in seen:
                    continue  # the record moved on or closed since, or was just seen
                seen.add(record_id)
                still_due.append(entry)
                holder = self._leases.get(record_id)
                if holder is not None and holder[1] > now and holder[0] != owner:
                    continue
                self._leases[record_id] = (owner, now + lease)
                claimed.append(self._records[record_id].clone())
            for entry in still_due:  # due until an update moves the record on
                heapq.heappush(heap, entry)
        return claimed

    def release(self, record_id: str, owner: str) -> None:
        with self._lock:
            holder = self._leases.get(record_id)
            if holder is not None and holder[0] == owner:
                del self._leases[record_id]

    def next_due_at(self) -> datetime | None:
        with self._lock:
            heap, due_at = self._due_heap_now(), self._due_at
            while heap and due_at.get(heap[0][2]) != heap[0][0]:
                heapq.heappop(heap)  # drop what no longer stands
            return heap[0][0] if heap else None

    # ------------------------------------------------------------------ outbox
    def get_deliveries(self, record_id: str) -> list[Delivery]:
        with self._lock:
            return [_copy_delivery(self._deliveries[i]) for i in self._deliveries_by_record.get(record_id, ())]

    def claim_deliveries(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Delivery]:
        claimed: list[Delivery] = []
        with self._lock:
            for delivery in list(self._pending.values()):
                if delivery.next_attempt_at is None or delivery.next_attempt_at <= now:
                    self._start(delivery, now, lease)
                    claimed.append(_copy_delivery(delivery))
                    if len(claimed) >= limit:
                        break
        return claimed

    def _start(self, delivery: Delivery, now: datetime, lease: timedelta) -> None:
        del self._pending[delivery.id]
        delivery.state = DeliveryState.SENDING
        delivery.attempts += 1
        delivery.updated_at = now
        self._delivery_leases[delivery.id] = now + lease

    def start_delivery(self, delivery_id: str, now: datetime, owner: str, lease: timedelta) -> Delivery | None:
        with self._lock:
            delivery = self._deliveries.get(delivery_id)
            if delivery is None or delivery.state != DeliveryState.PENDING:
                return None
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                return None  # a retry booked by another sender waits for its time
            self._start(delivery, now, lease)
            return _copy_delivery(delivery)

    def finish_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Delivery | None:
        with self._lock:
            delivery = self._deliveries.get(delivery_id)
            if delivery is None or delivery.state != DeliveryState.SENDING:
                return None
            self._delivery_leases.pop(delivery_id, None)
            delivery.updated_at = now
            delivery.last_error = error
            record = self._records.get(delivery.record_id)
            if sent:
                delivery.state = DeliveryState.SENT
                delivery.sent_at = now
                if record is not None:
                    record.notification_count += 1
            elif retry_at is not None:
                delivery.state = DeliveryState.PENDING
                delivery.next_attempt_at = retry_at
                self._pending[delivery_id] = delivery
            else:
                delivery.state = DeliveryState.FAILED
            if record is not None:
                self._tally(self._dag_of.get(record.id)).count_delivery(delivery, 1)
            return _copy_delivery(delivery)

    def expire_deliveries(self, now: datetime) -> int:
        expired = 0
        with self._lock:
            for delivery_id, until in list(self._delivery_leases.items()):
                if until <= now:
                    delivery = self._deliveries[delivery_id]
                    delivery.state = DeliveryState.UNKNOWN
                    delivery.last_error = "the sender stopped while sending: outcome unknown, not re-sent"
                    delivery.updated_at = now
                    del self._delivery_leases[delivery_id]
                    expired += 1
        return expired

    def next_delivery_at(self) -> datetime | None:
        with self._lock:
            times = [d.next_attempt_at or d.created_at for d in self._pending.values()]
        return min(times) if times else None


def _incident_key(record: EscalationRecord) -> tuple[str, str, str | None]:
    """One open record per incident, policy and DAG."""
    return record.incident_id, record.policy_name, record.dag_id


def _without_history(record: EscalationRecord) -> EscalationRecord:
    twin = EscalationRecord.__new__(EscalationRecord)
    twin.__dict__.update(record.__dict__)
    twin.history, twin.metadata = [], dict(record.metadata)
    return twin


def _copy_delivery(delivery: Delivery) -> Delivery:
    twin = Delivery.__new__(Delivery)
    twin.__dict__.update(delivery.__dict__)
    return twin
