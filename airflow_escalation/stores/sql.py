"""SQL store (SQLAlchemy Core): SQLite, PostgreSQL and MySQL/MariaDB.

Every contract method is one database transaction (``_run``), so each step is atomic across
threads and processes:

- ``create`` relies on the UNIQUE ``open_key`` (set while a record is open) to refuse a second
  open record of an incident under a policy;
- ``update`` is ``UPDATE ... WHERE id = :id AND version = :expected``; its history events, its
  deliveries and the cancelling of pending deliveries commit with it or not at all;
- ``claim_due`` / ``claim_deliveries`` select with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
  MySQL (concurrent claimers take disjoint rows without waiting); SQLite has no row locks, so its
  writes run in ``BEGIN IMMEDIATE`` transactions, which hold the database's single write lock
  from their first statement.

Tables: ``sql_schema``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Iterator, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.pool import StaticPool

from airflow_escalation.core.models import (
    Delivery,
    EscalationRecord,
    EscalationStats,
    EscalationTarget,
    StatsAccumulator,
)
from airflow_escalation.core.timeutil import UTC, ensure_aware, from_iso
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, DeliveryState, EscalationState
from airflow_escalation.stores import sql_schema
from airflow_escalation.stores.base import BaseEscalationStore, StoreError
from airflow_escalation.stores.sql_schema import (
    DEFAULT_PREFIX,
    MYSQL_DIALECTS,
    NAME,
    TARGET_KEY,
    Tables,
    build_tables,
)

T = TypeVar("T")

_RECORD_FIELDS = tuple(name for name in EscalationRecord.__dataclass_fields__ if name != "history")
_UNKNOWN_ERROR = "the sender stopped while sending: outcome unknown, not re-sent"
_SUPPORTED = frozenset({"sqlite", "postgresql"}) | MYSQL_DIALECTS
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")  # index names stay within 63 characters
_CHUNK = 500  # ids per IN (...) list, and records per cleanup transaction
_ATTEMPTS = 3  # runs of a transaction the database rolled back to break a deadlock
_SQLITE_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for the write lock
_CONNECT_TIMEOUT = 10  # seconds to reach a database server before StoreError
_BEGIN_OPTION = "escalation_sqlite_begin"  # execution option read by _sqlite_begin
# record states counted by a field of their own (StatsAccumulator.add_record)
_STATE_COUNTERS = {
    EscalationState.RESOLVED.value: "resolved_count",
    EscalationState.TIMED_OUT.value: "timed_out_count",
    EscalationState.CANCELLED.value: "cancelled_count",
    EscalationState.FAILED.value: "failed_count",
}


def open_key(incident_id: str, policy_name: str) -> str:
    """The unique key of an open record: a fixed-length hash, so any name fits a MySQL index."""
    return hashlib.sha256(f"{incident_id}\x1f{policy_name}".encode()).hexdigest()


class _AlreadyStored(Exception):
    """create(): the record id or the incident's open key is taken."""


# --------------------------------------------------------------------------- engine set-up


def _sqlite_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # pysqlite must not emit BEGIN on its own: _sqlite_begin does (SQLAlchemy's pysqlite recipe)
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe under WAL, far fewer fsyncs
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writes take the write lock up front: a deferred transaction that reads and then writes
    # can fail with SQLITE_BUSY instead of waiting, and a claim must not race another writer.
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(_BEGIN_OPTION, 'DEFERRED')}")


def _install_sqlite_hooks(engine: Engine) -> None:
    for name, hook in (("connect", _sqlite_connect), ("begin", _sqlite_begin)):
        if not sa.event.contains(engine, name, hook):  # two stores may share an engine
            sa.event.listen(engine, name, hook)


def _create_engine(url: str | sa.URL, engine_kwargs: dict[str, Any]) -> Engine:
    url = sa.make_url(url)
    kwargs = dict(engine_kwargs)
    backend = url.get_backend_name()
    connect_args = kwargs["connect_args"] = dict(kwargs.get("connect_args") or {})
    if backend == "sqlite":
        connect_args.setdefault("check_same_thread", False)  # the engine calls us from worker threads
        connect_args.setdefault("timeout", _SQLITE_BUSY_TIMEOUT)  # pysqlite's timeout is busy_timeout
        if url.database in (None, "", ":memory:"):
            # one in-memory database per connection: every thread must share the one connection
            kwargs.setdefault("poolclass", StaticPool)
    else:
        connect_args.setdefault("connect_timeout", _CONNECT_TIMEOUT)  # libpq would wait forever
        kwargs.setdefault("pool_pre_ping", True)  # survive server restarts and idle disconnects
        if backend in MYSQL_DIALECTS:
            # no gap locks: a claim sweep does not hold up concurrent inserts
            kwargs.setdefault("isolation_level", "READ COMMITTED")
    return sa.create_engine(url, **kwargs)


# --------------------------------------------------------------------------- error triage


def _cause(error: Exception) -> str:
    orig = getattr(error, "orig", None)
    return str(orig if orig is not None else error).strip()


def _is_deadlock(error: sa_exc.DBAPIError) -> bool:
    """The database rolled the whole transaction back to break a deadlock: a rerun is safe."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) in ("40P01", "40001"):  # PostgreSQL
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] == 1213  # MySQL ER_LOCK_DEADLOCK


def _is_unique_violation(error: sa_exc.IntegrityError) -> bool:
    orig = error.orig
    if getattr(orig, "sqlstate", None) == "23505":  # PostgreSQL
        return True
    if str(orig).startswith("UNIQUE constraint failed"):  # SQLite, primary keys included
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] == 1062  # MySQL ER_DUP_ENTRY


# --------------------------------------------------------------------------- row mapping


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _record_values(record: EscalationRecord) -> dict[str, Any]:
    """The record's columns, without ``version`` and ``history_len`` (each write sets those)."""
    values = {name: getattr(record, name) for name in _RECORD_FIELDS if name != "version"}
    for name in ("state", "trigger_type", "next_action"):
        values[name] = _value(values[name])
    values["open_key"] = open_key(record.incident_id, record.policy_name) if record.is_open else None
    dag_id = record.context.get("dag_id")
    # a value that is no DAG id (not a string, or too long for one) is not indexed
    values["dag_id"] = dag_id if isinstance(dag_id, str) and len(dag_id) <= NAME else None
    return values


def _record_from_row(row: Row[Any], history: list[dict[str, Any]]) -> EscalationRecord:
    fields = row._mapping
    return EscalationRecord(**{name: fields[name] for name in _RECORD_FIELDS}, history=history)


def _delivery_from_row(row: Row[Any]) -> Delivery:
    fields = row._mapping
    return Delivery(
        id=fields["id"],
        record_id=fields["record_id"],
        level=fields["level"],
        round=fields["round"],
        target=EscalationTarget.from_dict(fields["target"]),
        state=DeliveryState(fields["state"]),
        attempts=fields["attempts"],
        created_at=fields["created_at"],
        updated_at=fields["updated_at"],
        next_attempt_at=fields["next_attempt_at"],
        sent_at=fields["sent_at"],
        last_error=fields["last_error"],
    )


def _event_time(event: Any, fallback: datetime) -> datetime:
    """The event's own ``at`` when it has a readable one, else ``fallback``."""
    try:
        return from_iso(event.get("at")) or fallback
    except (AttributeError, TypeError, ValueError):
        return fallback


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _check_deliveries(record: EscalationRecord, deliveries: Sequence[Delivery]) -> None:
    # deliveries are numbered per record (seq) under the record's row lock
    strays = sorted({d.record_id for d in deliveries if d.record_id != record.id})
    if strays:
        raise ValueError(f"deliveries: record_id must be {record.id!r}, got {strays}")


# --------------------------------------------------------------------------- stores


class SQLEscalationStore(BaseEscalationStore):
    """Escalation store on a SQL database through SQLAlchemy Core.

    ``url`` makes an engine the store owns (``engine_kwargs`` go to ``create_engine``, and
    ``close()`` disposes it); ``engine`` uses an existing one, left open by ``close()`` since its
    owner may still use it. On SQLite the store installs its transaction hooks on the engine
    (``BEGIN`` is then emitted by SQLAlchemy events rather than by pysqlite).
    ``table_prefix`` names the tables (``<prefix>record``, ``<prefix>event``,
    ``<prefix>delivery``); ``create_tables`` creates those missing.
    """

    blocking = True

    def __init__(
        self,
        url: str | sa.URL | None = None,
        *,
        engine: Engine | None = None,
        table_prefix: str = DEFAULT_PREFIX,
        create_tables: bool = True,
        name: str = "sql",
        **engine_kwargs: Any,
    ) -> None:
        super().__init__(name)
        if (url is None) == (engine is None):
            raise ValueError(f"{name} store: pass either url or engine")
        if engine is not None and engine_kwargs:
            raise ValueError(f"{name} store: engine options {sorted(engine_kwargs)} need url, not engine")
        if not _PREFIX.fullmatch(table_prefix):
            raise ValueError(
                f"{name} store: table_prefix must be a letter or _ then up to 39 letters, digits "
                f"or _, got {table_prefix!r}"
            )
        self._owns_engine = engine is None
        self._engine = engine if engine is not None else _create_engine(url, engine_kwargs)
        self._dialect = self._engine.dialect.name
        self._url = self._engine.url.render_as_string(hide_password=True)
        if self._dialect not in _SUPPORTED:
            raise ValueError(
                f"{name} store: unsupported database {self._dialect!r} "
                f"(supported: {', '.join(sorted(_SUPPORTED))})"
            )
        if self._dialect == "sqlite":
            _install_sqlite_hooks(self._engine)
        # a StaticPool hands its one connection to every thread: take turns with it
        self._serial: AbstractContextManager[Any] = (
            threading.Lock() if isinstance(self._engine.pool, StaticPool) else nullcontext()
        )
        if table_prefix == DEFAULT_PREFIX:
            self._metadata, self._tables = sql_schema.metadata, sql_schema.tables
        else:
            self._metadata = sa.MetaData()
            self._tables = build_tables(self._metadata, table_prefix)
        if create_tables:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def tables(self) -> Tables:
        return self._tables

    def create_tables(self) -> None:
        """Create the store's tables and indexes that do not exist yet."""
        self._run(lambda conn: self._metadata.create_all(conn, tables=list(self._tables)), write=True)

    # ------------------------------------------------------------------ helpers
    def _connect(self) -> Connection:
        try:
            return self._engine.connect()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            message = f"{self.name} store: cannot reach the database at {self._url}: {_cause(error)}"
            raise StoreError(message) from error

    def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run ``work`` in one transaction; ``write`` transactions take SQLite's write lock at BEGIN."""
        attempt = 1
        while True:
            with self._serial, self._connect() as conn:
                if write:
                    conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                try:
                    with conn.begin():
                        return work(conn)
                except sa_exc.DBAPIError as error:
                    if attempt < _ATTEMPTS and _is_deadlock(error):
                        attempt += 1
                        continue
                    message = f"{self.name} store: database error at {self._url}: {_cause(error)}"
                    raise StoreError(message) from error

    def _is_open(self) -> sa.ColumnElement[bool]:
        return self._tables.record.c.open_key.isnot(None)

    def _with_history(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[EscalationRecord]:
        """Records from their rows, each with its history read in seq order."""
        event = self._tables.event
        lengths = {row.id: row.history_len for row in rows}
        histories: dict[str, list[dict[str, Any]]] = {row.id: [] for row in rows}
        for chunk in _chunks([row.id for row in rows if row.history_len]):
            query = (
                sa.select(event.c.record_id, event.c.seq, event.c.event)
                .where(event.c.record_id.in_(chunk))
                .order_by(event.c.record_id, event.c.seq)
            )
            for record_id, seq, entry in conn.execute(query):
                if seq < lengths[record_id]:  # a later version's events: not this row's history
                    histories[record_id].append(entry)
        return [_record_from_row(row, histories[row.id]) for row in rows]

    def _records(
        self, *criteria: Any, order_by: Sequence[Any], limit: int | None = None
    ) -> list[EscalationRecord]:
        query = sa.select(self._tables.record).where(*criteria).order_by(*order_by).limit(limit)
        return self._run(lambda conn: self._with_history(conn, conn.execute(query).all()))

    def _first(self, *criteria: Any, order_by: Sequence[Any] = ()) -> EscalationRecord | None:
        found = self._records(*criteria, order_by=order_by, limit=1)
        return found[0] if found else None

    def _insert_events(
        self, conn: Connection, record_id: str, events: Sequence[dict[str, Any]], start: int, fallback: datetime
    ) -> None:
        if events:
            conn.execute(
                sa.insert(self._tables.event),
                [
                    {"record_id": record_id, "seq": start + i, "at": _event_time(e, fallback), "event": e}
                    for i, e in enumerate(events)
                ],
            )

    def _insert_deliveries(self, conn: Connection, deliveries: Sequence[Delivery], start: int) -> None:
        if deliveries:
            conn.execute(
                sa.insert(self._tables.delivery),
                [
                    {
                        "id": d.id,
                        "record_id": d.record_id,
                        "seq": start + i,
                        "level": d.level,
                        "round": d.round,
                        "target": d.target.to_dict(),
                        "target_key": d.target.key[:TARGET_KEY],
                        "state": DeliveryState(d.state).value,
                        "attempts": d.attempts,
                        "created_at": d.created_at,
                        "updated_at": d.updated_at,
                        "next_attempt_at": d.next_attempt_at,
                        "sent_at": d.sent_at,
                        "last_error": d.last_error,
                    }
                    for i, d in enumerate(deliveries)
                ],
            )

    def _delete_records(self, conn: Connection, ids: Sequence[str]) -> int:
        record, event, delivery = self._tables
        removed = 0
        for chunk in _chunks(ids):
            conn.execute(sa.delete(event).where(event.c.record_id.in_(chunk)))
            conn.execute(sa.delete(delivery).where(delivery.c.record_id.in_(chunk)))
            removed += conn.execute(sa.delete(record).where(record.c.id.in_(chunk))).rowcount
        return removed

    def _micros_between(self, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """Exact microseconds from ``start`` to ``end`` in SQL (NULL when either is NULL)."""
        if self._dialect == "postgresql":
            return sa.extract("epoch", end - start) * 1_000_000
        if self._dialect in MYSQL_DIALECTS:
            return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start, end)

        # SQLite keeps fixed-width UTC text (SQLITE_DATETIME_FORMAT): whole seconds through
        # strftime, microseconds from characters 21-26. julianday() would round to milliseconds.
        def micros(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
            seconds = sa.cast(sa.func.strftime("%s", column), sa.Integer)
            return seconds * 1_000_000 + sa.cast(sa.func.substr(column, 21, 6), sa.Integer)

        return micros(end) - micros(start)

    def _start_deliveries(
        self, conn: Connection, rows: Sequence[Row[Any]], now: datetime, owner: str, lease: timedelta
    ) -> list[Delivery]:
        """Move pending deliveries (selected FOR UPDATE) to sending under ``owner``'s lease."""
        delivery = self._tables.delivery
        started = [_delivery_from_row(row) for row in rows]
        if started:
            conn.execute(
                sa.update(delivery)
                .where(delivery.c.id.in_([d.id for d in started]))
                .values(
                    state=DeliveryState.SENDING.value,
                    attempts=delivery.c.attempts + 1,
                    updated_at=now,
                    lease_owner=owner,
                    lease_until=now + lease,
                )
            )
        for d in started:  # as just written
            d.state = DeliveryState.SENDING
            d.attempts += 1
            d.updated_at = now
        return started

    # ------------------------------------------------------------------ spec query API
    def get(self, record_id: str) -> EscalationRecord | None:
        return self._first(self._tables.record.c.id == record_id)

    def get_by_incident(self, incident_id: str) -> list[EscalationRecord]:
        record = self._tables.record
        return self._records(record.c.incident_id == incident_id, order_by=(record.c.created_at, record.c.id))

    def get_active(self, policy_name: str | None = None) -> list[EscalationRecord]:
        record = self._tables.record
        criteria = [record.c.state.in_(sorted(ACTIVE_STATE_VALUES))]
        if policy_name is not None:
            criteria.append(record.c.policy_name == policy_name)
        return self._records(*criteria, order_by=(record.c.created_at, record.c.id))

    def get_pending_escalations(self, before: datetime) -> list[EscalationRecord]:
        record = self._tables.record
        return self._records(
            self._is_open(),
            record.c.next_escalation_at <= before,
            order_by=(record.c.next_escalation_at, record.c.id),
        )

    def list_records(
        self,
        *,
        states: Sequence[str] | None = None,
        policy_name: str | None = None,
        incident_id: str | None = None,
        dag_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[EscalationRecord], int]:
        record = self._tables.record
        criteria = []
        if states:
            criteria.append(record.c.state.in_(sorted({_value(s) for s in states})))
        for column, wanted in ((record.c.policy_name, policy_name), (record.c.incident_id, incident_id),
                               (record.c.dag_id, dag_id)):
            if wanted is not None:
                criteria.append(column == wanted)
        page = (
            sa.select(record)
            .where(*criteria)
            .order_by(record.c.created_at.desc(), record.c.id.desc())
            .limit(max(0, limit))
            .offset(max(0, offset))
        )
        total = sa.select(sa.func.count()).select_from(record).where(*criteria)
        return self._run(lambda conn: (self._with_history(conn, conn.execute(page).all()),
                                       conn.execute(total).scalar_one()))

    def save(self, record: EscalationRecord) -> EscalationRecord:
        table, event = self._tables.record, self._tables.event
        values = _record_values(record)
        values["history_len"] = len(record.history)

        def work(conn: Connection) -> int:
            current = conn.execute(
                sa.select(table.c.version).where(table.c.id == record.id).with_for_update()
            ).scalar()
            version = (current or 0) + 1
            row = {**values, "version": version}
            if current is None:
                conn.execute(sa.insert(table).values(row))
            else:
                conn.execute(sa.update(table).where(table.c.id == record.id).values(row))
                conn.execute(sa.delete(event).where(event.c.record_id == record.id))
            self._insert_events(conn, record.id, record.history, 0, record.updated_at)
            return version

        stored = record.clone()
        stored.version = self._run(work, write=True)
        return stored

    def delete(self, record_id: str) -> bool:
        return self._run(lambda conn: self._delete_records(conn, [record_id]), write=True) > 0

    def cleanup_resolved(self, older_than: timedelta, now: datetime | None = None) -> int:
        record = self._tables.record
        cutoff = (ensure_aware(now) if now is not None else datetime.now(UTC)) - older_than
        old = sa.select(record.c.id).where(record.c.closed_at < cutoff).limit(_CHUNK)

        def work(conn: Connection) -> tuple[int, int]:
            ids = conn.execute(old).scalars().all()
            return len(ids), self._delete_records(conn, ids)

        removed = 0
        while True:  # in batches, so no transaction holds its locks for long
            found, deleted = self._run(work, write=True)
            removed += deleted
            if found < _CHUNK:
                return removed

    def get_stats(self) -> EscalationStats:
        record, delivery = self._tables.record, self._tables.delivery
        resolved = record.c.state == EscalationState.RESOLVED.value
        # grouped in the order of ix_record_active, which covers it
        group = (record.c.state, record.c.policy_name, record.c.current_level)
        by_group = sa.select(*group, sa.func.count()).group_by(*group)
        # NULL durations (not acknowledged, not resolved) drop out of COUNT and SUM
        durations = sa.select(
            sa.func.count(record.c.acknowledged_at),
            sa.func.sum(self._micros_between(record.c.created_at, record.c.acknowledged_at)),
            sa.func.count(sa.case((resolved, record.c.resolved_at))),
            sa.func.sum(sa.case((resolved, self._micros_between(record.c.created_at, record.c.resolved_at)))),
        )
        outcomes = (
            sa.select(delivery.c.state, delivery.c.target_key, sa.func.count())
            .where(delivery.c.state.in_([DeliveryState.SENT.value, DeliveryState.FAILED.value]))
            .group_by(delivery.c.state, delivery.c.target_key)
        )

        def work(conn: Connection) -> tuple[list[Row[Any]], Row[Any], list[Row[Any]]]:
            return conn.execute(by_group).all(), conn.execute(durations).one(), conn.execute(outcomes).all()

        groups, (ack_n, ack_us, res_n, res_us), sends = self._run(work)
        acc = StatsAccumulator()
        for state, target_key, n in sends:
            acc.add_delivery(target_key, state, n)
        stats = acc.result()
        for state, policy, level, n in groups:
            stats.total_escalations += n
            if state in ACTIVE_STATE_VALUES:
                stats.active_escalations += n
            if state in _STATE_COUNTERS:
                setattr(stats, _STATE_COUNTERS[state], getattr(stats, _STATE_COUNTERS[state]) + n)
            stats.escalations_by_level[level] = stats.escalations_by_level.get(level, 0) + n
            stats.escalations_by_policy[policy] = stats.escalations_by_policy.get(policy, 0) + n
        stats.acknowledged_count = ack_n
        stats.avg_time_to_acknowledge_seconds = float(ack_us) / 1e6 / ack_n if ack_n else 0.0
        stats.avg_time_to_resolve_seconds = float(res_us) / 1e6 / res_n if res_n else 0.0
        return stats

    def clear(self) -> None:
        def work(conn: Connection) -> None:
            for table in self._tables:
                conn.execute(sa.delete(table))

        self._run(work, write=True)

    # ------------------------------------------------------------------ engine contract
    def create(self, record: EscalationRecord, deliveries: Sequence[Delivery] = ()) -> EscalationRecord | None:
        _check_deliveries(record, deliveries)
        values = _record_values(record)
        values.update(version=1, history_len=len(record.history))
        table = self._tables.record
        # a closed record has no open_key to collide on: look for the open one (as memory does)
        key = open_key(record.incident_id, record.policy_name)
        open_one = sa.select(table.c.id).where(table.c.open_key == key)

        def work(conn: Connection) -> None:
            if not record.is_open and conn.execute(open_one).first() is not None:
                raise _AlreadyStored
            try:
                conn.execute(sa.insert(table).values(values))
            except sa_exc.IntegrityError as error:
                if _is_unique_violation(error):
                    raise _AlreadyStored from error
                raise
            self._insert_events(conn, record.id, record.history, 0, record.created_at)
            self._insert_deliveries(conn, deliveries, 0)

        try:
            self._run(work, write=True)
        except _AlreadyStored:
            return None
        record.version = 1
        return record

    def find_open(self, incident_id: str, policy_name: str) -> EscalationRecord | None:
        record = self._tables.record
        return self._first(
            record.c.open_key == open_key(incident_id, policy_name),
            record.c.incident_id == incident_id,
            record.c.policy_name == policy_name,
        )

    def last_closed(self, incident_id: str, policy_name: str) -> EscalationRecord | None:
        record = self._tables.record
        return self._first(
            record.c.incident_id == incident_id,
            record.c.policy_name == policy_name,
            record.c.open_key.is_(None),
            # latest closed_at first; a closed record without closed_at counts as the oldest
            order_by=(record.c.closed_at.is_(None), record.c.closed_at.desc(), record.c.updated_at.desc()),
        )

    def update(
        self,
        record: EscalationRecord,
        expected_version: int,
        new_events: Sequence[dict] = (),
        deliveries: Sequence[Delivery] = (),
        cancel_pending: bool = False,
    ) -> bool:
        _check_deliveries(record, deliveries)
        table, delivery = self._tables.record, self._tables.delivery
        values = _record_values(record)
        del values["id"], values["notification_count"]  # counted by finish_delivery alone
        values.update(
            version=expected_version + 1,
            lease_owner=None,
            lease_until=None,
            history_len=table.c.history_len + len(new_events),
        )
        cas = sa.update(table).where(table.c.id == record.id, table.c.version == expected_version).values(values)
        # where the new events and deliveries go: read under the row lock the CAS just took
        ends = sa.select(
            table.c.history_len,
            sa.select(sa.func.max(delivery.c.seq)).where(delivery.c.record_id == record.id).scalar_subquery(),
        ).where(table.c.id == record.id)

        def work(conn: Connection) -> bool:
            if conn.execute(cas).rowcount != 1:
                return False
            history_len, last_seq = conn.execute(ends).one() if new_events or deliveries else (0, None)
            self._insert_events(conn, record.id, new_events, history_len - len(new_events), record.updated_at)
            if cancel_pending:
                conn.execute(
                    sa.update(delivery)
                    .where(delivery.c.record_id == record.id, delivery.c.state == DeliveryState.PENDING.value)
                    .values(state=DeliveryState.CANCELLED.value, updated_at=record.updated_at)
                )
            self._insert_deliveries(conn, deliveries, 0 if last_seq is None else last_seq + 1)
            return True

        if not self._run(work, write=True):
            return False
        record.version = expected_version + 1
        return True

    def claim_due(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[EscalationRecord]:
        if limit <= 0:
            return []
        record = self._tables.record
        free = sa.or_(record.c.lease_until.is_(None), record.c.lease_until <= now, record.c.lease_owner == owner)
        due = (
            sa.select(record)
            .where(self._is_open(), record.c.next_escalation_at <= now, free)
            .order_by(record.c.next_escalation_at)  # index order (a tie-breaker would force a sort)
            .limit(limit)
            .with_for_update(skip_locked=True)  # SQLite: no-op, BEGIN IMMEDIATE serialises claims
        )

        def work(conn: Connection) -> list[EscalationRecord]:
            rows = conn.execute(due).all()
            if rows:
                conn.execute(
                    sa.update(record)
                    .where(record.c.id.in_([row.id for row in rows]))
                    .values(lease_owner=owner, lease_until=now + lease)
                )
            return self._with_history(conn, rows)

        return self._run(work, write=True)

    def release(self, record_id: str, owner: str) -> None:
        record = self._tables.record
        mine = sa.update(record).where(record.c.id == record_id, record.c.lease_owner == owner)
        self._run(lambda conn: conn.execute(mine.values(lease_owner=None, lease_until=None)), write=True)

    def next_due_at(self) -> datetime | None:
        record = self._tables.record
        first = sa.select(sa.func.min(record.c.next_escalation_at)).where(self._is_open())
        return self._run(lambda conn: conn.execute(first).scalar())

    # ------------------------------------------------------------------ outbox
    def get_deliveries(self, record_id: str) -> list[Delivery]:
        delivery = self._tables.delivery
        query = sa.select(delivery).where(delivery.c.record_id == record_id).order_by(delivery.c.seq)
        return self._run(lambda conn: [_delivery_from_row(row) for row in conn.execute(query)])

    def claim_deliveries(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Delivery]:
        if limit <= 0:
            return []
        delivery = self._tables.delivery
        pending = sa.select(delivery).where(delivery.c.state == DeliveryState.PENDING.value)
        # first the new ones (no next_attempt_at: due at once), then the retries whose time has
        # come; two queries, so each walks the (state, next_attempt_at, created_at) index in order
        fresh = pending.where(delivery.c.next_attempt_at.is_(None)).order_by(delivery.c.created_at)
        retries = pending.where(delivery.c.next_attempt_at <= now).order_by(delivery.c.next_attempt_at)

        def work(conn: Connection) -> list[Delivery]:
            rows: list[Row[Any]] = []
            for query in (fresh, retries):
                if len(rows) < limit:
                    rows += conn.execute(query.limit(limit - len(rows)).with_for_update(skip_locked=True)).all()
            return self._start_deliveries(conn, rows, now, owner, lease)

        return self._run(work, write=True)

    def start_delivery(self, delivery_id: str, now: datetime, owner: str, lease: timedelta) -> Delivery | None:
        delivery = self._tables.delivery
        pending = (
            sa.select(delivery)
            .where(delivery.c.id == delivery_id, delivery.c.state == DeliveryState.PENDING.value)
            .with_for_update()
        )
        started = self._run(
            lambda conn: self._start_deliveries(conn, conn.execute(pending).all(), now, owner, lease), write=True
        )
        return started[0] if started else None

    def finish_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Delivery | None:
        record, delivery = self._tables.record, self._tables.delivery
        sending = (
            sa.select(delivery)
            .where(delivery.c.id == delivery_id, delivery.c.state == DeliveryState.SENDING.value)
            .with_for_update()
        )

        def work(conn: Connection) -> Delivery | None:
            row = conn.execute(sending).first()
            if row is None:
                return None
            done = _delivery_from_row(row)
            done.updated_at, done.last_error = now, error
            if sent:
                done.state, done.sent_at = DeliveryState.SENT, now
            elif retry_at is not None:
                done.state, done.next_attempt_at = DeliveryState.PENDING, retry_at
            else:
                done.state = DeliveryState.FAILED
            conn.execute(
                sa.update(delivery)
                .where(delivery.c.id == delivery_id)
                .values(
                    state=done.state.value,
                    updated_at=now,
                    last_error=error,
                    sent_at=done.sent_at,
                    next_attempt_at=done.next_attempt_at,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            if sent:
                conn.execute(
                    sa.update(record)
                    .where(record.c.id == done.record_id)
                    .values(notification_count=record.c.notification_count + 1)
                )
            return done

        return self._run(work, write=True)

    def expire_deliveries(self, now: datetime) -> int:
        delivery = self._tables.delivery
        expired = (
            sa.update(delivery)
            .where(delivery.c.state == DeliveryState.SENDING.value, delivery.c.lease_until <= now)
            .values(
                state=DeliveryState.UNKNOWN.value,
                last_error=_UNKNOWN_ERROR,
                updated_at=now,
                lease_owner=None,
                lease_until=None,
            )
        )
        return self._run(lambda conn: conn.execute(expired).rowcount, write=True)

    def next_delivery_at(self) -> datetime | None:
        delivery = self._tables.delivery
        pending = delivery.c.state == DeliveryState.PENDING.value
        # two index-only MINs rather than MIN(COALESCE(...)) over every pending row
        new = delivery.c.next_attempt_at.is_(None)
        first_new = sa.select(sa.func.min(delivery.c.created_at)).where(pending, new)
        first_retry = sa.select(sa.func.min(delivery.c.next_attempt_at)).where(pending)
        times = self._run(
            lambda conn: [conn.execute(first_new).scalar(), conn.execute(first_retry).scalar()]
        )
        return min((t for t in times if t is not None), default=None)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()


class SQLiteEscalationStore(SQLEscalationStore):
    """The embedded store: one SQLite file in WAL mode, safe across threads and processes.

    ``":memory:"`` keeps one in-memory database that the store's threads share. ``busy_timeout``
    is how long (seconds) a writer waits for another connection's write transaction.
    """

    def __init__(
        self,
        db_path: str = "./escalations.db",
        *,
        busy_timeout: float = _SQLITE_BUSY_TIMEOUT,
        name: str = "sqlite",
        **kwargs: Any,
    ) -> None:
        connect_args = dict(kwargs.pop("connect_args", None) or {})
        connect_args.setdefault("timeout", busy_timeout)
        url = sa.URL.create("sqlite", database=None if db_path in ("", ":memory:") else db_path)
        super().__init__(url, name=name, connect_args=connect_args, **kwargs)
