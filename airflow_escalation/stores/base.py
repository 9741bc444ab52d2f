"""The store contract every backend implements.

The store is the truth: each open record carries its next due time, every change is a
compare-and-swap on ``version``, and the notifications a change causes (the outbox) are written in
the same atomic step. A scheduler only wakes the engine; the engine claims what is due here.

Besides the spec's query methods, a backend provides:

- ``create`` — insert a new record unless the incident already has an open record under that
  policy for the same DAG (the open-incident key -- incident, policy, DAG -- is unique), with its
  first deliveries. A record's DAG is ``record.dag_id`` (:func:`~airflow_escalation.core.models.dag_id_of`
  its context): an incident id never joins records of two DAGs;
- ``update`` — write a record only if its stored version is ``expected_version``, appending its
  new history events, inserting new deliveries, and (on acknowledge/close) cancelling the
  record's deliveries still pending;
- ``claim_due`` — lease the records due at ``now`` so other engines skip them while this one
  works (a lease that expires is claimable again: a crashed engine's work is taken over);
- outbox methods: ``claim_deliveries`` / ``start_delivery`` move pending → sending under a lease,
  ``finish_delivery`` records the outcome, ``expire_deliveries`` marks sends whose sender died as
  ``unknown`` (they may have gone out, so they are not re-sent).

Backends that do I/O set ``blocking = True``; the engine then calls them from worker threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Collection, Sequence

from airflow_escalation.core.models import Delivery, EscalationRecord, EscalationStats

#: ``dag_ids`` of :meth:`BaseEscalationStore.list_records` and :meth:`~BaseEscalationStore.get_stats`:
#: None for every record, else only records whose ``dag_id`` is in the collection (``None`` in
#: it stands for records of no DAG)
DagIds = Collection["str | None"]


class StoreError(RuntimeError):
    """A backend failed (connection lost, schema missing...)."""


class BaseEscalationStore(ABC):
    """Abstract base of escalation stores; see the module docstring for the contract."""

    blocking: bool = False

    def __init__(self, name: str = "base") -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    # ------------------------------------------------------------------ spec query API
    @abstractmethod
    def get(self, record_id: str) -> EscalationRecord | None: ...

    @abstractmethod
    def get_by_incident(self, incident_id: str) -> list[EscalationRecord]: ...

    @abstractmethod
    def get_active(self, policy_name: str | None = None) -> list[EscalationRecord]:
        """Records still paging (pending, active, escalating), oldest first."""

    def count_active(self, policy_name: str | None = None) -> int:
        """How many records ``get_active(policy_name)`` would return, counted without loading them.

        Backends count in their indexes; this fallback loads the records.
        """
        return len(self.get_active(policy_name))

    @abstractmethod
    def get_pending_escalations(self, before: datetime) -> list[EscalationRecord]:
        """Open records whose ``next_escalation_at`` is at or before ``before``."""

    @abstractmethod
    def save(self, record: EscalationRecord) -> EscalationRecord:
        """Unconditional upsert (imports, admin repair). The engine itself never uses it."""

    @abstractmethod
    def delete(self, record_id: str) -> bool: ...

    @abstractmethod
    def cleanup_resolved(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Delete closed records (and their history and deliveries) closed before now - older_than."""

    @abstractmethod
    def get_stats(self, dag_ids: DagIds | None = None) -> EscalationStats:
        """Counts over every record, or over the records whose DAG is in ``dag_ids`` (and their
        deliveries)."""

    @abstractmethod
    def clear(self) -> None: ...

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
        """A page of records, newest first, and how many match in all.

        ``dag_id`` matches ``record.dag_id``; ``dag_ids`` (None: no filter) keeps the records
        whose ``dag_id`` is in it, ``None`` in it standing for records of no DAG (the service
        passes the DAGs the caller may read). Both may be given: they combine.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list records yet")

    # ------------------------------------------------------------------ engine contract
    @abstractmethod
    def create(self, record: EscalationRecord, deliveries: Sequence[Delivery] = ()) -> EscalationRecord | None:
        """Insert ``record`` (version 1) with its history and deliveries.

        Returns ``record`` with its stored version set, or ``None`` when the incident already
        has an open record under the same policy and of the same DAG (``record.dag_id``; then
        nothing is written).
        """

    @abstractmethod
    def find_open(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        """The open record of the incident under the policy whose ``dag_id`` is ``dag_id``."""

    @abstractmethod
    def last_closed(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        """The most recently closed record of the incident under the policy and of that DAG
        (for cooldowns)."""

    @abstractmethod
    def update(
        self,
        record: EscalationRecord,
        expected_version: int,
        new_events: Sequence[dict] = (),
        deliveries: Sequence[Delivery] = (),
        cancel_pending: bool = False,
    ) -> bool:
        """Compare-and-swap: store ``record`` as version ``expected_version + 1``.

        Returns False (and writes nothing) if the stored version differs. Clears any claim lease.
        ``record.history`` already holds ``new_events`` at its end.
        """

    @abstractmethod
    def claim_due(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[EscalationRecord]:
        """Lease up to ``limit`` open records due at ``now`` that no live lease holds."""

    @abstractmethod
    def release(self, record_id: str, owner: str) -> None:
        """Drop ``owner``'s lease on a record it claimed but did not change."""

    @abstractmethod
    def next_due_at(self) -> datetime | None:
        """Earliest ``next_escalation_at`` of any open record."""

    # ------------------------------------------------------------------ outbox
    @abstractmethod
    def get_deliveries(self, record_id: str) -> list[Delivery]: ...

    @abstractmethod
    def claim_deliveries(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Delivery]:
        """Move up to ``limit`` pending deliveries due at ``now`` to sending, leased to ``owner``."""

    @abstractmethod
    def start_delivery(self, delivery_id: str, now: datetime, owner: str, lease: timedelta) -> Delivery | None:
        """Move one pending delivery to sending.

        None if it is not pending (someone took it, or it was cancelled) or if it is a retry whose
        ``next_attempt_at`` is still ahead (its backoff is kept).
        """

    @abstractmethod
    def finish_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Delivery | None:
        """Record the outcome of one attempt.

        ``sent`` → sent (and the record's ``notification_count`` grows by one); otherwise
        ``retry_at`` → pending again at that time, or failed for good when it is None.
        """

    @abstractmethod
    def expire_deliveries(self, now: datetime) -> int:
        """Mark deliveries whose sending lease ran out as unknown; return how many."""

    @abstractmethod
    def next_delivery_at(self) -> datetime | None:
        """Earliest ``next_attempt_at`` of any pending delivery."""

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:  # noqa: B027 - optional: stores without connections need nothing
        """Release connections. The store is unusable afterwards."""

    # ------------------------------------------------------------------ on call (docs/oncall.md)
    # Silences, overrides and the record of whom a schedule or user target reached, kept beside
    # the records so that every replica sees them. Items are JSON documents of one ``kind``,
    # keyed by ``item_id``, with a ``scope`` (a schedule name, a record id, or "") and the span
    # ``[starts_at, ends_at)`` they are filtered by. Each backend keeps them in a module of its
    # own (stores/oncall_*.py), found by stores/oncall_items.py; a store it does not know
    # raises NotImplementedError.
    def put_oncall_item(
        self, kind: str, item_id: str, scope: str, starts_at: datetime, ends_at: datetime, data: dict[str, object]
    ) -> None:
        """Insert ``data`` as item ``(kind, item_id)``, or replace it."""
        self._oncall_items().put(kind, item_id, scope, starts_at, ends_at, data)

    def get_oncall_item(self, kind: str, item_id: str) -> dict[str, object] | None:
        return self._oncall_items().get(kind, item_id)

    def list_oncall_items(
        self, kind: str, *, scope: str | None = None, ends_after: datetime | None = None, limit: int = 1000
    ) -> list[dict[str, object]]:
        """Items of ``kind`` (of ``scope``; ending after ``ends_after``), by ``starts_at`` then id."""
        return self._oncall_items().list(kind, scope=scope, ends_after=ends_after, limit=limit)

    def delete_oncall_items(self, kind: str, *, item_id: str | None = None, ends_before: datetime | None = None) -> int:
        """Delete item ``item_id``, or every item of ``kind`` that ended before ``ends_before``."""
        return int(self._oncall_items().delete(kind, item_id=item_id, ends_before=ends_before))

    def _oncall_items(self) -> object:
        items = self.__dict__.get("_oncall")
        if items is None:
            from airflow_escalation.stores.oncall_items import items_for

            items = self.__dict__["_oncall"] = items_for(self)
        return items
