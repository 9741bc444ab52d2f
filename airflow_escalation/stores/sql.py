"""SQL store (SQLAlchemy Core): SQLite, PostgreSQL and MySQL/MariaDB.

Every contract method is one database transaction (``_run``), so each step is atomic across
threads and processes:

- ``create`` relies on the UNIQUE ``open_key`` (set while a record is open) to refuse a second
  open record of an incident under a policy for the same DAG;
- ``update`` is ``UPDATE ... WHERE id = :id AND version = :expected``; its history events, its
  deliveries and the cancelling of pending deliveries commit with it or not at all;
- ``claim_due`` / ``claim_deliveries`` select with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
  MySQL (concurrent claimers take disjoint rows without waiting); SQLite has no row locks, so its
  writes run in ``BEGIN IMMEDIATE`` transactions, which hold the database's single write lock
  from their first statement.

The engine's hot calls (``create``, ``find_open``, ``get``, ``update``, ``start_delivery``,
``finish_delivery``) take a direct path: Core statements compiled once per store
(``_Statements``), run on a pooled DBAPI connection, with the schema's type conversions done here
(``_Codec``). For such small statements SQLAlchemy's per-execution work (cache lookup, parameter
and result processing, result objects) cost several times what the database spends on them. On
SQLite, writers of one store also queue on an in-process lock rather than in SQLite's busy
handler, which polls with sleeps of up to 100 ms. The other methods run through SQLAlchemy.

Tables: ``sql_schema``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Iterator, NamedTuple, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect, Engine, Row
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
from airflow_escalation.stores.base import BaseEscalationStore, DagIds, StoreError
from airflow_escalation.stores.sql_schema import (
    DEFAULT_PREFIX,
    MYSQL_DIALECTS,
    TARGET_KEY,
    JSONDocument,
    Tables,
    UTCDateTime,
    _json_default,
    build_tables,
)

T = TypeVar("T")
_NO_LOCK = nullcontext()

_RECORD_FIELDS = tuple(name for name in EscalationRecord.__dataclass_fields__ if name != "history")
_DELIVERY_FIELDS = tuple(Delivery.__dataclass_fields__)
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
    EscalationState.ACKNOWLEDGED.value: "acknowledged_count",
    EscalationState.RESOLVED.value: "resolved_count",
    EscalationState.TIMED_OUT.value: "timed_out_count",
    EscalationState.CANCELLED.value: "cancelled_count",
    EscalationState.FAILED.value: "failed_count",
}


def open_key(incident_id: str, policy_name: str, dag_id: str | None = None) -> str:
    """The unique key of an open record -- incident, policy and DAG: a fixed-length hash, so any
    name fits a MySQL index. (JSON keeps it unambiguous, and apart from :func:`legacy_open_key`,
    which always holds a raw ``\\x1f``.)"""
    return hashlib.sha256(json.dumps([incident_id, policy_name, dag_id]).encode()).hexdigest()


def legacy_open_key(incident_id: str, policy_name: str) -> str:
    """The open key of records written before the key named the DAG. Such a record keeps it until
    its next write; ``find_open`` also matches it, for a record of the same DAG."""
    return hashlib.sha256(f"{incident_id}\x1f{policy_name}".encode()).hexdigest()


class _AlreadyStored(Exception):
    """create(): the record id or the incident's open key is taken."""


class _PipelineFailed(Exception):
    """A statement of a pipelined batch failed: the server rolled the whole batch back."""


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
        # no pool_pre_ping (a SELECT 1 round trip per transaction): a transaction that fails on a
        # connection the server dropped (restart, idle timeout) is run again on a new one instead
        if backend in MYSQL_DIALECTS:
            # no gap locks: a claim sweep does not hold up concurrent inserts
            kwargs.setdefault("isolation_level", "READ COMMITTED")
        if backend == "postgresql":
            # The store finds rows by key, and its connections keep their statements prepared
            # (psycopg) with the plan made while the tables were small: a sequential scan then,
            # and still one, row by row, once they have grown until autovacuum's next ANALYZE.
            # Without sequential scans every such plan uses the key. get_stats, which reads
            # every row, turns them back on for its transaction.
            # (first: an `enable_seqscan` in the caller's own options comes later and wins)
            connect_args["options"] = f"-c enable_seqscan=off {connect_args.get('options', '')}".strip()
    return sa.create_engine(url, **kwargs)


# --------------------------------------------------------------------------- error triage


def _cause(error: Exception) -> str:
    orig = getattr(error, "orig", None)
    return str(orig if orig is not None else error).strip()


def _driver_error(error: Exception) -> Exception:
    """The DBAPI driver's exception (SQLAlchemy wraps it as ``orig``)."""
    orig = getattr(error, "orig", None)
    return orig if isinstance(orig, Exception) else error


def _sqlstate(error: Exception) -> str | None:
    # psycopg 3 calls it sqlstate, psycopg2 pgcode
    return getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


def _is_deadlock(error: Exception) -> bool:
    """The database rolled the whole transaction back to break a deadlock: a rerun is safe."""
    orig = _driver_error(error)
    if _sqlstate(orig) in ("40P01", "40001"):  # PostgreSQL
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] == 1213  # MySQL ER_LOCK_DEADLOCK


def _may_rerun(error: Exception, connection_lost: bool, committing: bool) -> bool:
    """Whether a failed transaction can be run again: the database rolled it back to break a
    deadlock, or the connection was lost before COMMIT was sent (a server rolls back the open
    transaction of a connection it lost; a lost COMMIT may or may not have taken effect)."""
    return _is_deadlock(error) or (connection_lost and not committing)


def _is_unique_violation(error: Exception) -> bool:
    orig = _driver_error(error)
    if _sqlstate(orig) == "23505":  # PostgreSQL
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
    dag_id = record.dag_id
    values["open_key"] = open_key(record.incident_id, record.policy_name, dag_id) if record.is_open else None
    values["dag_id"] = dag_id
    return values


def _event_time(event: Any, fallback: datetime) -> datetime:
    """The event's own ``at`` when it has a readable one, else ``fallback``."""
    try:
        return from_iso(event.get("at")) or fallback
    except (AttributeError, TypeError, ValueError):
        return fallback


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_deliveries(record: EscalationRecord, deliveries: Sequence[Delivery]) -> None:
    # deliveries are numbered per record (seq) under the record's row lock
    strays = sorted({d.record_id for d in deliveries if d.record_id != record.id})
    if strays:
        raise ValueError(f"deliveries: record_id must be {record.id!r}, got {strays}")


# --------------------------------------------------------------------------- the direct path


def _sqlite_time(value: datetime) -> str:
    # SQLITE_DATETIME_FORMAT, as UTCDateTime writes it: isoformat pads the year to 4 digits and,
    # with timespec="microseconds", always writes 6 digits of microseconds
    return ensure_aware(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_load_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _naive_utc(value: datetime) -> datetime:
    return ensure_aware(value).replace(tzinfo=None)


def _dump_json(value: Any) -> str | None:
    # the conversions of JSONDocument (datetimes, enums, sets, other objects)
    return None if value is None else json.dumps(value, separators=(",", ":"), default=_json_default)


class _Codec:
    """Values between the models and the driver, for the direct path and the listings.

    Does what UTCDateTime and JSONDocument do on the SQLAlchemy path, without its per-value
    processing: SQLite keeps datetimes as fixed-width UTC text; PostgreSQL takes aware datetimes
    and returns them aware; MySQL takes and returns naive UTC. JSON is written and read as text
    (PostgreSQL's is selected as text: psycopg would otherwise parse a record's documents again in
    each of its history rows). Record and delivery rows are selected in model field order
    (``record_reads``, ``delivery_reads``) and made models by ``record`` and ``delivery``.
    """

    def __init__(self, tables: Tables, backend: str) -> None:
        record, event, delivery = tables
        self.backend = backend
        self.dump_json = _dump_json
        self.load_json: Callable[[Any], Any] = json.loads
        if backend == "sqlite":
            self.dump_time: Callable[[datetime], Any] = _sqlite_time
            self.load_time: Callable[[Any], datetime] = _sqlite_load_time
        elif backend == "postgresql":
            self.dump_time, self.load_time = ensure_aware, ensure_aware
        else:
            self.dump_time, self.load_time = _naive_utc, ensure_aware
        self.record_columns = [record.c[name] for name in _RECORD_FIELDS]
        self.record_reads = [self.read(column) for column in self.record_columns]
        self._record_loaders = [self.loader(column) for column in self.record_columns]
        self.delivery_columns = [delivery.c[name] for name in _DELIVERY_FIELDS]
        self.delivery_reads = [self.read(column) for column in self.delivery_columns]
        self._delivery_loaders = [self.loader(column) for column in self.delivery_columns]
        self.event_read = self.read(event.c.event)

    def read(self, column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        """``column`` as selected: as the driver returns it (JSON as text), converted by ``loader``."""
        if self.backend == "postgresql" and isinstance(column.type, JSONDocument):
            return sa.cast(column, sa.Text).label(column.name)
        if isinstance(column.type, (JSONDocument, UTCDateTime)):
            return sa.type_coerce(column, sa.types.NullType()).label(column.name)  # no processing
        return column

    def time(self, value: datetime | None) -> Any:
        return None if value is None else self.dump_time(value)

    def loader(self, column: sa.Column[Any]) -> Callable[[Any], Any] | None:
        """How to read ``column``'s values from the driver (None: as they come)."""
        if isinstance(column.type, UTCDateTime):
            return self.load_time
        if isinstance(column.type, JSONDocument):
            return self.load_json
        return None

    def dumper(self, column: sa.Column[Any]) -> Callable[[Any], Any] | None:
        """How to hand ``column``'s values to the driver (None: as they are)."""
        if isinstance(column.type, UTCDateTime):
            return self.dump_time
        if isinstance(column.type, JSONDocument):
            return self.dump_json
        return None

    def record(self, row: Sequence[Any], history: list[dict[str, Any]]) -> EscalationRecord:
        """A record from a row that starts with the ``record_reads`` columns."""
        values = {
            column.name: value if load is None or value is None else load(value)
            for column, load, value in zip(self.record_columns, self._record_loaders, row)
        }
        return EscalationRecord(**values, history=history)

    def delivery(self, row: Sequence[Any]) -> Delivery:
        """A delivery from a row of the ``delivery_reads`` columns."""
        values = {
            column.name: value if load is None or value is None else load(value)
            for column, load, value in zip(self.delivery_columns, self._delivery_loaders, row)
        }
        values["target"] = EscalationTarget.from_dict(values["target"])
        values["state"] = DeliveryState(values["state"])
        return Delivery(**values)


class _Statement:
    """A Core statement compiled once for the store's database, run straight on a DBAPI cursor.

    Compiling from Core keeps the SQL portable (quoting, placeholders, casts, RETURNING, FOR
    UPDATE); parameters are passed by name and arranged for the driver's paramstyle here.
    """

    __slots__ = ("_fixed", "_order", "sql")

    def __init__(self, statement: sa.Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        # the statement's own literals (states, increments) are bound parameters too
        self._fixed = {name: bind.effective_value for bind, name in compiled.bind_names.items() if not bind.required}
        self._order = tuple(compiled.positiontup or ()) if dialect.positional else None

    def params(self, values: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        if self._fixed:
            values = {**self._fixed, **values}
        return values if self._order is None else tuple(values[name] for name in self._order)

    def around(self, before: str, after: str) -> "_Statement":
        """This statement inside ``before`` ... ``after`` (a CTE), with the same parameters."""
        wrapped = object.__new__(_Statement)
        wrapped.sql, wrapped._fixed, wrapped._order = f"{before}{self.sql}{after}", self._fixed, self._order
        return wrapped

    def run(self, cursor: Any, values: dict[str, Any]) -> int:
        """Execute; the number of rows changed."""
        cursor.execute(self.sql, self.params(values))
        return cursor.rowcount

    def rows(self, cursor: Any, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        cursor.execute(self.sql, self.params(values))
        return cursor.fetchall()

    def many(self, cursor: Any, rows: Sequence[dict[str, Any]]) -> None:
        cursor.executemany(self.sql, [self.params(values) for values in rows])


class _Plan(NamedTuple):
    """A call as one statement (PostgreSQL): run ``statement`` with ``values``, then ``result(rows)``
    is the call's result, or ``_ALONE`` when the call must be made again on its own."""

    statement: _Statement
    values: dict[str, Any]
    result: Callable[[list[tuple[Any, ...]]], Any]


_ALONE = object()

_W = "w_"  # prefix of WHERE parameters (SQLAlchemy reserves column names for the SET values)


class _Statements:
    """The direct path's statements for one store's tables and database, and its row mapping."""

    def __init__(self, tables: Tables, dialect: Dialect, codec: _Codec) -> None:
        record, event, delivery = tables
        self.codec = codec
        self.returning = bool(dialect.update_returning)
        bind = sa.bindparam
        # Conditions that should not choose the index: the hot statements find their rows by key,
        # but when the statistics are stale (a table that filled up since its last ANALYZE, as
        # in a fresh deployment or a benchmark) PostgreSQL's planner rates an index on state, or
        # the due index (open_key second), as good as the key's, and then scans all of it.
        delivery_state = delivery.c.state + ""

        def compiled(statement: sa.Executable) -> _Statement:
            return _Statement(statement, dialect)

        # ---- records: a record and its history in one SELECT (one row per event, in seq order;
        # events past history_len belong to a later version than the row read)
        with_history = record.outerjoin(
            event, sa.and_(event.c.record_id == record.c.id, event.c.seq < record.c.history_len)
        )
        one = sa.select(*codec.record_reads, event.c.seq, codec.event_read).select_from(with_history)
        self.get = compiled(one.where(record.c.id == bind(_W + "id")).order_by(event.c.seq))
        key, legacy = bind(_W + "open_key"), bind(_W + "legacy_key")
        self.find_open = compiled(
            one.where(
                # through ix_record_incident (incident, policy, closed_at): an open record has
                # no closed_at; its open_key is checked on the rows found (``+ ""`` keeps the
                # planner off the open_key index). A record still under its legacy key is this
                # one only if it is of this DAG.
                record.c.incident_id == bind(_W + "incident_id"),
                record.c.policy_name == bind(_W + "policy_name"),
                record.c.closed_at.is_(None),
                sa.or_(
                    record.c.open_key + "" == key,
                    sa.and_(
                        record.c.open_key + "" == legacy,
                        record.c.dag_id.is_not_distinct_from(bind(_W + "dag_id", type_=sa.String)),
                    ),
                ),
            ).order_by(event.c.seq)
        )
        self.open_id = compiled(sa.select(record.c.id).where(record.c.open_key == bind(_W + "open_key")))
        self.record_dumpers = {column.name: codec.dumper(column) for column in record.c}
        self.insert_record = compiled(sa.insert(record).values({c.name: bind(c.name) for c in record.c}))
        # compare-and-swap; history_len in the WHERE too, so the new events' place is known
        # without reading it back (update() falls back to reading it when that guess is wrong)
        self.update_columns = [c.name for c in record.c if c.name not in ("id", "notification_count")]
        self.cas = compiled(
            sa.update(record)
            .where(
                record.c.id == bind(_W + "id"),
                record.c.version == bind(_W + "version"),
                record.c.history_len == bind(_W + "history_len"),
            )
            .values({name: bind(name) for name in self.update_columns})
        )
        self.version_of = compiled(
            sa.select(record.c.version, record.c.history_len).where(record.c.id == bind(_W + "id")).with_for_update()
        )
        self.count_sent = compiled(
            sa.update(record)
            .where(record.c.id == bind(_W + "id"))
            .values(notification_count=record.c.notification_count + 1)
        )
        self.insert_event = compiled(sa.insert(event).values({c.name: bind(c.name) for c in event.c}))

        # ---- deliveries
        self.insert_delivery = compiled(
            sa.insert(delivery).values(
                {c.name: bind(c.name) for c in delivery.c if c.name not in ("lease_owner", "lease_until")}
            )
        )
        self.last_seq = compiled(
            sa.select(sa.func.max(delivery.c.seq)).where(delivery.c.record_id == bind(_W + "record_id"))
        )
        self.cancel_pending = compiled(
            sa.update(delivery)
            .where(delivery.c.record_id == bind(_W + "record_id"), delivery_state == DeliveryState.PENDING.value)
            .values(state=DeliveryState.CANCELLED.value, updated_at=bind("updated_at"))
        )
        self.delivery_by_id = compiled(sa.select(*codec.delivery_reads).where(delivery.c.id == bind(_W + "id")))

        def move(from_state: DeliveryState, *criteria: Any, **values: Any) -> _Statement:
            """One delivery from ``from_state`` to the given values; its new row where RETURNING is."""
            statement = (
                sa.update(delivery)
                .where(delivery.c.id == bind(_W + "id"), delivery_state == from_state.value, *criteria)
                .values(updated_at=bind("updated_at"), **values)
            )
            return compiled(statement.returning(*codec.delivery_reads) if self.returning else statement)

        self.start_delivery = move(
            DeliveryState.PENDING,
            # a retry keeps its backoff: not before its next_attempt_at
            sa.or_(delivery.c.next_attempt_at.is_(None), delivery.c.next_attempt_at <= bind(_W + "now")),
            state=DeliveryState.SENDING.value,
            attempts=delivery.c.attempts + 1,
            lease_owner=bind("lease_owner"),
            lease_until=bind("lease_until"),
        )
        released = {"last_error": bind("last_error"), "lease_owner": None, "lease_until": None}
        self.finish_sent = move(
            DeliveryState.SENDING, state=DeliveryState.SENT.value, sent_at=bind("sent_at"), **released
        )
        self.finish_retry = move(
            DeliveryState.SENDING,
            state=DeliveryState.PENDING.value,
            next_attempt_at=bind("next_attempt_at"),
            **released,
        )
        self.finish_failed = move(DeliveryState.SENDING, state=DeliveryState.FAILED.value, **released)
        self.one_statement = dialect.name == "postgresql"
        if self.one_statement:
            self._postgres_writes(tables, dialect)

    def _postgres_writes(self, tables: Tables, dialect: Dialect) -> None:
        """PostgreSQL: ``create``, ``update`` and a sent ``finish_delivery`` as one statement each
        (data-modifying CTEs; new history events and deliveries passed as one JSON document
        each), run in autocommit: one round trip and no BEGIN/COMMIT, where the multi-statement
        transaction took five or more. The rows a statement inserts go in only if its record row
        was written (they select FROM it), so a lost compare-and-swap writes nothing."""
        record, event, delivery = (dialect.identifier_preparer.format_table(t) for t in tables)
        events = (
            f"INSERT INTO {event} (record_id, seq, at, event) "
            "SELECT w.id, %(e_start)s::integer + x.n::integer - 1, (x.doc->>'at')::timestamptz, x.doc->'event' "
            "FROM w, json_array_elements(%(e_docs)s::json) WITH ORDINALITY AS x(doc, n)"
        )
        columns = {
            "i": "integer",
            "id": "text",
            "level": "integer",
            "round": "integer",
            "target": "json",
            "target_key": "text",
            "state": "text",
            "attempts": "integer",
            "created_at": "timestamptz",
            "updated_at": "timestamptz",
            "next_attempt_at": "timestamptz",
            "sent_at": "timestamptz",
            "last_error": "text",
        }
        names = [name for name in columns if name != "i"]
        shape = ", ".join(f"{name} {kind}" for name, kind in columns.items())

        def deliveries(first_seq: str, source: str) -> str:
            return (
                f"INSERT INTO {delivery} (record_id, seq, {', '.join(names)}) "
                f"SELECT w.id, {first_seq} + x.i, {', '.join('x.' + name for name in names)} FROM {source}, "
                f"json_to_recordset(%(d_docs)s::json) AS x({shape})"
            )

        self.create_one = self.insert_record.around(
            "WITH w AS (",
            f" ON CONFLICT DO NOTHING RETURNING id), e AS ({events}), d AS ({deliveries('0', 'w')}) "
            "SELECT count(*) FROM w",
        )
        # new deliveries are numbered after the record's last one: any write that adds deliveries
        # changes the version, so that number cannot change once the swap has the row
        last = f"(SELECT coalesce(max(seq), -1) + 1 AS first FROM {delivery} WHERE record_id = %(w_id)s) AS s"
        cancel = (
            f"UPDATE {delivery} SET state = '{DeliveryState.CANCELLED.value}', "
            "updated_at = %(updated_at)s::timestamptz "
            f"FROM w WHERE {delivery}.record_id = w.id AND {delivery}.state || '' = '{DeliveryState.PENDING.value}' "
            "AND %(cancel)s::boolean"
        )
        self.update_one = self.cas.around(
            "WITH w AS (",
            f" RETURNING {record}.id), e AS ({events}), c AS ({cancel}), "
            f"d AS ({deliveries('s.first', 'w, ' + last)}) SELECT count(*) FROM w",
        )
        self.finish_sent_one = self.finish_sent.around(
            "WITH w AS (",
            f"), n AS (UPDATE {record} SET notification_count = {record}.notification_count + 1 "
            f"FROM w WHERE {record}.id = w.record_id) SELECT * FROM w",
        )

    def event_docs(self, events: Sequence[dict[str, Any]], start: int, fallback: datetime) -> dict[str, Any]:
        """``events`` as the one-statement writes take them."""
        time = self.codec.time  # aware: a naive time would be read in the session's zone
        docs = [{"at": time(_event_time(e, fallback)), "event": e} for e in events]
        return {"e_start": start, "e_docs": self.codec.dump_json(docs)}

    def delivery_docs(self, deliveries: Sequence[Delivery]) -> dict[str, Any]:
        """``deliveries`` as the one-statement writes take them."""
        docs = [{"i": i, **self._delivery_values(d, d.target.to_dict())} for i, d in enumerate(deliveries)]
        return {"d_docs": self.codec.dump_json(docs)}

    def _delivery_values(self, d: Delivery, target: Any) -> dict[str, Any]:
        time = self.codec.time
        return {
            "id": d.id,
            "level": d.level,
            "round": d.round,
            "target": target,
            "target_key": d.target.key[:TARGET_KEY],
            "state": DeliveryState(d.state).value,
            "attempts": d.attempts,
            "created_at": time(d.created_at),
            "updated_at": time(d.updated_at),
            "next_attempt_at": time(d.next_attempt_at),
            "sent_at": time(d.sent_at),
            "last_error": d.last_error,
        }

    # ------------------------------------------------------------------ values in and out
    def record_params(self, record: EscalationRecord) -> dict[str, Any]:
        values = _record_values(record)
        for name, dump in self.record_dumpers.items():
            if dump is not None and values.get(name) is not None:
                values[name] = dump(values[name])
        return values

    def event_params(
        self, record_id: str, events: Sequence[dict[str, Any]], start: int, fallback: datetime
    ) -> list[dict[str, Any]]:
        time, dump = self.codec.time, self.codec.dump_json
        return [
            {"record_id": record_id, "seq": start + i, "at": time(_event_time(e, fallback)), "event": dump(e)}
            for i, e in enumerate(events)
        ]

    def delivery_params(self, deliveries: Sequence[Delivery], start: int) -> list[dict[str, Any]]:
        dump = self.codec.dump_json
        return [
            {"record_id": d.record_id, "seq": start + i, **self._delivery_values(d, dump(d.target.to_dict()))}
            for i, d in enumerate(deliveries)
        ]

    def record(self, rows: Sequence[tuple[Any, ...]]) -> EscalationRecord | None:
        """The record of a ``get``/``find_open`` result: its columns, then (seq, event) per row."""
        if not rows:
            return None
        n = len(self.codec.record_reads)
        load_json = self.codec.load_json
        return self.codec.record(rows[0], [load_json(row[n + 1]) for row in rows if row[n] is not None])

    def moved(self, cursor: Any, statement: _Statement, values: dict[str, Any]) -> Delivery | None:
        """Run a ``move`` statement; the delivery as it now is, or None if it was not in the state."""
        if self.returning:
            rows = statement.rows(cursor, values)  # fetch all: SQLite finishes the statement
        elif statement.run(cursor, values) == 1:
            rows = self.delivery_by_id.rows(cursor, {_W + "id": values[_W + "id"]})
        else:
            rows = []
        return self.codec.delivery(rows[0]) if rows else None


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
                f"{name} store: unsupported database {self._dialect!r} (supported: {', '.join(sorted(_SUPPORTED))})"
            )
        self._sqlite = self._dialect == "sqlite"
        if self._sqlite:
            _install_sqlite_hooks(self._engine)
        # a StaticPool hands its one connection to every thread: take turns with it
        shared = isinstance(self._engine.pool, StaticPool)
        self._serial: AbstractContextManager[Any] = threading.Lock() if shared else nullcontext()
        # SQLite has one writer at a time; the store's own writers wait here, woken as soon as the
        # lock is free, rather than in SQLite's busy handler (other processes still wait there)
        self._writer: AbstractContextManager[Any] = threading.Lock() if self._sqlite and not shared else nullcontext()
        self._dbapi = self._engine.dialect.loaded_dbapi
        self._statements: _Statements | None = None  # compiled at first use, once the dialect knows the server
        self._local = threading.local()  # .batch: the Connection of the thread's open batch()
        # SQLite commits one writer at a time: batching calls costs no concurrency there.
        # PostgreSQL runs a batch's one-statement calls in a pipeline (_pipelined): one round
        # trip and one commit for all of them, on each of two threads. MySQL serves concurrent
        # transactions better than one long one.
        self.prefers_batches = self._sqlite or self._dialect == "postgresql"
        self.batch_threads = 2 if self._dialect == "postgresql" else 1
        if table_prefix == DEFAULT_PREFIX:
            self._metadata, self._tables = sql_schema.metadata, sql_schema.tables
        else:
            self._metadata = sa.MetaData()
            self._tables = build_tables(self._metadata, table_prefix)
        self._codec = _Codec(self._tables, self._dialect)
        if create_tables:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def tables(self) -> Tables:
        return self._tables

    def create_tables(self) -> None:
        """Create the store's tables and indexes that do not exist yet.

        Replicas starting together on a fresh database race here: the loser's CREATE fails with
        "already exists" (PostgreSQL reports it as a duplicate in pg_type). That is the outcome
        it wanted, so look again and carry on.
        """
        for attempt in range(1, 4):
            try:
                self._run(lambda conn: self._metadata.create_all(conn, tables=list(self._tables)), write=True)
                return
            except StoreError as error:
                if attempt == 3 or not _already_exists(error):
                    raise
                time.sleep(0.05 * attempt)

    # ------------------------------------------------------------------ helpers
    def _connect(self) -> Connection:
        try:
            return self._engine.connect()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            message = f"{self.name} store: cannot reach the database at {self._url}: {_cause(error)}"
            raise StoreError(message) from error

    def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run ``work`` in one transaction; ``write`` transactions take SQLite's write lock at BEGIN."""
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            try:
                with batch.begin_nested():
                    return work(batch)
            except sa_exc.DBAPIError as error:
                raise StoreError(f"{self.name} store: database error at {self._url}: {_cause(error)}") from error
        attempt = 1
        while True:
            with self._serial, self._writer if write else _NO_LOCK, self._connect() as conn:
                if write:
                    conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                committing = False
                try:
                    with conn.begin():
                        result = work(conn)
                        committing = True  # what fails from here on is the commit
                    return result
                except sa_exc.DBAPIError as error:
                    if attempt < _ATTEMPTS and _may_rerun(error, error.connection_invalidated, committing):
                        attempt += 1
                        continue
                    message = f"{self.name} store: database error at {self._url}: {_cause(error)}"
                    raise StoreError(message) from error

    def _direct(self, work: Callable[[Any, _Statements], T], *, write: bool = True, single: bool = False) -> T:
        """Run ``work(cursor, statements)`` in one transaction on a pooled DBAPI connection.

        ``write=False`` is for a single SELECT, which on SQLite runs without BEGIN (one statement
        reads one snapshot); ``single=True`` for work that is one statement on PostgreSQL (see
        ``_Statements._postgres_writes``). Errors are handled as in ``_run``.
        """
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            return self._in_batch(batch, work, savepoint=not single)
        # PostgreSQL: a lone statement in autocommit is one round trip instead of BEGIN, it, COMMIT
        # (psycopg switches autocommit without a round trip; MySQL drivers would spend one)
        autocommit = (not write or single) and self._dialect == "postgresql"
        # a write in autocommit commits as it runs: if the connection drops meanwhile, whether it
        # took effect is unknown, so it is not run again
        commits_as_it_runs = autocommit and write
        attempt = 1
        while True:
            with self._serial, self._writer if write else _NO_LOCK:
                try:
                    connection = self._engine.raw_connection()
                except (sa_exc.DBAPIError, sa_exc.TimeoutError, self._dbapi.Error) as error:
                    message = f"{self.name} store: cannot reach the database at {self._url}: {_cause(error)}"
                    raise StoreError(message) from error
                cursor = connection.cursor()
                committing = commits_as_it_runs
                try:
                    if self._statements is None:
                        self._statements = _Statements(self._tables, self._engine.dialect, self._codec)
                    if autocommit:
                        connection.dbapi_connection.autocommit = True
                    if write and self._sqlite:
                        cursor.execute("BEGIN IMMEDIATE")  # as _sqlite_begin does for _run's writes
                    result = work(cursor, self._statements)
                    committing = True  # what fails from here on is the commit
                    connection.commit()
                    return result
                except self._dbapi.Error as error:
                    dropped = self._abandon(connection, cursor, error)
                    if attempt < _ATTEMPTS and _may_rerun(error, dropped, committing):
                        attempt += 1
                        continue
                    message = f"{self.name} store: database error at {self._url}: {_cause(error)}"
                    raise StoreError(message) from error
                except BaseException:
                    self._abandon(connection, cursor, None)
                    raise
                finally:
                    cursor.close()
                    if autocommit and connection.is_valid:
                        try:  # the pool's other users expect transactions
                            connection.dbapi_connection.autocommit = False
                        except self._dbapi.Error as error:
                            connection.invalidate(error)
                    connection.close()  # back to the pool (unless invalidated)

    def _in_batch(self, batch: Connection, work: Callable[[Any, _Statements], T], *, savepoint: bool = True) -> T:
        """``work`` in a savepoint of the thread's batch transaction: undone alone if it fails.

        Work that is one statement needs none: a statement that fails changes nothing."""
        if self._statements is None:
            self._statements = _Statements(self._tables, self._engine.dialect, self._codec)
        cursor = batch.connection.dbapi_connection.cursor()
        if not savepoint:
            try:
                return work(cursor, self._statements)
            except self._dbapi.Error as error:
                raise StoreError(f"{self.name} store: database error at {self._url}: {_cause(error)}") from error
            finally:
                cursor.close()
        try:
            cursor.execute("SAVEPOINT escalation_call")
            try:
                result = work(cursor, self._statements)
            except BaseException:
                cursor.execute("ROLLBACK TO SAVEPOINT escalation_call")
                cursor.execute("RELEASE SAVEPOINT escalation_call")
                raise
            cursor.execute("RELEASE SAVEPOINT escalation_call")
            return result
        except self._dbapi.Error as error:
            raise StoreError(f"{self.name} store: database error at {self._url}: {_cause(error)}") from error
        finally:
            cursor.close()

    def run_batch(self, calls: Sequence[tuple[Callable[..., Any], tuple, dict]]) -> list[tuple[Any, Exception | None]]:
        """Run ``calls`` (this store's bound methods, args, kwargs) as one transaction; their
        outcomes in order, ``(result, None)`` or ``(None, error)``.

        Each call runs in a savepoint: one that fails is undone alone. Raises ``StoreError`` if
        the transaction does not commit: then none of the calls took effect. The engine runs the
        calls that queue up for a store that ``prefers_batches`` (SQLite) this way: one commit
        instead of one per call, and the calls' changes to the same pages (index leaves, table
        ends) reach the WAL once.
        """
        if self._dialect == "postgresql":
            return self._pipelined(calls)
        outcomes: list[tuple[Any, Exception | None]] = []
        with self._batch():
            for fn, args, kwargs in calls:
                try:
                    outcomes.append((fn(*args, **kwargs), None))
                except Exception as exc:  # noqa: BLE001 - that call's outcome
                    outcomes.append((None, exc))
        return outcomes

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """The store calls this thread makes inside the block run as one transaction (see run_batch).

        Other threads' writes wait for the block (reads do not, on SQLite's WAL).
        """
        if getattr(self._local, "batch", None) is not None:
            yield  # nested: the outer block commits
            return
        with self._serial, self._writer:
            conn = self._connect()
            try:
                conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                try:
                    with conn.begin():
                        self._local.batch = conn
                        try:
                            yield
                        finally:
                            self._local.batch = None
                except sa_exc.DBAPIError as error:
                    message = f"{self.name} store: database error at {self._url}: {_cause(error)}"
                    raise StoreError(message) from error
            finally:
                conn.close()

    def _abandon(self, connection: Any, cursor: Any, error: Exception | None) -> bool:
        """Roll back; a connection the error shows is dead is dropped from the pool (True)."""
        try:
            connection.rollback()
        except self._dbapi.Error:
            pass
        if error is not None and self._engine.dialect.is_disconnect(error, connection.dbapi_connection, cursor):
            connection.invalidate(error)
            return True
        return False

    def _one_statement(self) -> bool:
        """Whether create/update run as one statement (PostgreSQL; see _Statements)."""
        return self._dialect == "postgresql" and getattr(self._local, "batch", None) is None

    def _is_open(self) -> sa.ColumnElement[bool]:
        return self._tables.record.c.open_key.isnot(None)

    def _record_query(self) -> sa.Select[Any]:
        """Records as ``_with_history`` reads them: the codec's record columns, then history_len."""
        return sa.select(*self._codec.record_reads, self._tables.record.c.history_len)

    def _with_history(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[EscalationRecord]:
        """Records from ``_record_query`` rows, each with its history read in seq order."""
        event, codec = self._tables.event, self._codec
        lengths = {row[0]: row[-1] for row in rows}  # id, history_len
        histories: dict[str, list[dict[str, Any]]] = {row[0]: [] for row in rows}
        for chunk in _chunks([row[0] for row in rows if row[-1]]):
            query = (
                sa.select(event.c.record_id, event.c.seq, codec.event_read)
                .where(event.c.record_id.in_(chunk))
                .order_by(event.c.record_id, event.c.seq)
            )
            for record_id, seq, entry in conn.execute(query):
                if seq < lengths[record_id]:  # a later version's events: not this row's history
                    histories[record_id].append(codec.load_json(entry))
        return [codec.record(row, histories[row[0]]) for row in rows]

    def _records(self, *criteria: Any, order_by: Sequence[Any], limit: int | None = None) -> list[EscalationRecord]:
        query = self._record_query().where(*criteria).order_by(*order_by).limit(limit)
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
        started = [self._codec.delivery(row) for row in rows]
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

    # ------------------------------------------------------------------ calls as plans
    def _sql(self) -> _Statements:
        if self._statements is None:
            self._statements = _Statements(self._tables, self._engine.dialect, self._codec)
        return self._statements

    def _run_plan(self, plan: _Plan, *, write: bool = True) -> Any:
        """One plan alone: its statement in autocommit on PostgreSQL (a transaction elsewhere)."""
        return self._direct(
            lambda cursor, _: plan.result(plan.statement.rows(cursor, plan.values)), write=write, single=True
        )

    def _plan_get(self, record_id: str) -> _Plan:
        sql = self._sql()
        return _Plan(sql.get, {_W + "id": record_id}, sql.record)

    def _plan_find_open(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> _Plan:
        sql = self._sql()
        where = {
            _W + "open_key": open_key(incident_id, policy_name, dag_id),
            _W + "legacy_key": legacy_open_key(incident_id, policy_name),
            _W + "dag_id": dag_id,
            _W + "incident_id": incident_id,
            _W + "policy_name": policy_name,
        }
        return _Plan(sql.find_open, where, sql.record)

    def _plan_create(self, record: EscalationRecord, deliveries: Sequence[Delivery] = ()) -> _Plan | None:
        """PostgreSQL, an open record: one INSERT ... ON CONFLICT DO NOTHING with its history and
        deliveries (None otherwise)."""
        if not (record.is_open and self._one_statement()):
            return None
        _check_deliveries(record, deliveries)
        sql = self._sql()
        values = sql.record_params(record)
        values.update(version=1, history_len=len(record.history), lease_owner=None, lease_until=None)
        values.update(sql.event_docs(record.history, 0, record.created_at), **sql.delivery_docs(deliveries))

        def result(rows: list[tuple[Any, ...]]) -> EscalationRecord | None:
            if rows[0][0] != 1:
                return None  # the record id or the incident's open key is taken
            record.version = 1
            return record

        return _Plan(sql.create_one, values, result)

    def _plan_update(
        self,
        record: EscalationRecord,
        expected_version: int,
        new_events: Sequence[dict] = (),
        deliveries: Sequence[Delivery] = (),
        cancel_pending: bool = False,
    ) -> _Plan:
        """PostgreSQL: the compare-and-swap with its events, cancelling and deliveries in one
        statement; ``_ALONE`` when it wrote nothing (``update`` then finds out why)."""
        _check_deliveries(record, deliveries)
        sql = self._sql()
        new_events = list(new_events)
        start = len(record.history) - len(new_events)
        values = sql.record_params(record)
        values.update(
            {_W + "id": record.id, _W + "version": expected_version, _W + "history_len": start},
            version=expected_version + 1,
            lease_owner=None,
            lease_until=None,
            history_len=len(record.history),
            cancel=cancel_pending,
        )
        del values["id"], values["notification_count"]  # counted by finish_delivery alone
        values.update(sql.event_docs(new_events, start, record.updated_at), **sql.delivery_docs(deliveries))

        def result(rows: list[tuple[Any, ...]]) -> Any:
            if rows[0][0] != 1:
                return _ALONE
            record.version = expected_version + 1
            return True

        return _Plan(sql.update_one, values, result)

    def _plan_start_delivery(self, delivery_id: str, now: datetime, owner: str, lease: timedelta) -> _Plan:
        sql, time = self._sql(), self._codec.time
        values = {
            _W + "id": delivery_id,
            _W + "now": time(now),
            "updated_at": time(now),
            "lease_owner": owner,
            "lease_until": time(now + lease),
        }
        return _Plan(sql.start_delivery, values, self._moved)

    def _plan_finish_delivery(
        self,
        delivery_id: str,
        now: datetime,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> _Plan:
        sql, time = self._sql(), self._codec.time
        values = {_W + "id": delivery_id, "updated_at": time(now), "last_error": error}
        if sent:
            statement = sql.finish_sent_one  # counts the send on the record too
            values["sent_at"] = time(now)
        elif retry_at is not None:
            statement = sql.finish_retry
            values["next_attempt_at"] = time(retry_at)
        else:
            statement = sql.finish_failed
        return _Plan(statement, values, self._moved)

    def _moved(self, rows: list[tuple[Any, ...]]) -> Delivery | None:
        return self._codec.delivery(rows[0]) if rows else None

    def _planner(self, fn: Callable[..., Any]) -> Callable[..., _Plan | None] | None:
        """The planner of one of this store's bound methods, if it has one."""
        if getattr(fn, "__self__", None) is not self:
            return None
        return self._PLANNERS.get(getattr(fn, "__name__", ""))

    _PLANNERS: dict[str, Callable[..., _Plan | None]] = {}

    def _pipelined(self, calls: Sequence[tuple[Callable[..., Any], tuple, dict]]) -> list[tuple[Any, Exception | None]]:
        """PostgreSQL's ``run_batch``: the calls that are one statement each go to the server in
        one pipeline (one round trip, one implicit transaction, one commit); the others, and any
        that a plan sends back (``_ALONE``), run on their own afterwards.

        If the pipeline fails, the server rolled all of it back: each of its calls is then run
        on its own, so one call's error is that call's alone. If the connection is lost on the
        way, whether it committed is unknown: every pipelined call gets the error.
        """
        outcomes: list[Any] = [None] * len(calls)
        planned: list[tuple[int, _Plan]] = []
        alone: list[int] = []
        for index, (fn, args, kwargs) in enumerate(calls):
            planner = self._planner(fn)
            try:
                plan = planner(self, *args, **kwargs) if planner is not None else None
            except Exception as exc:  # noqa: BLE001 - that call's outcome (bad arguments)
                outcomes[index] = (None, exc)
                continue
            if plan is None:
                alone.append(index)
            else:
                planned.append((index, plan))
        if len(planned) == 1:
            alone.append(planned.pop()[0])
        if planned:
            try:
                rows = self._pipeline([plan for _, plan in planned])
            except _PipelineFailed:
                alone += [index for index, _ in planned]
            except Exception as exc:  # noqa: BLE001 - the connection was lost: outcome unknown
                for index, _ in planned:
                    outcomes[index] = (None, exc)
            else:
                for (index, plan), found in zip(planned, rows):
                    try:
                        result = plan.result(found)
                    except Exception as exc:  # noqa: BLE001 - that call's outcome
                        outcomes[index] = (None, exc)
                        continue
                    if result is _ALONE:
                        alone.append(index)
                    else:
                        outcomes[index] = (result, None)
        for index in sorted(alone):
            fn, args, kwargs = calls[index]
            try:
                outcomes[index] = (fn(*args, **kwargs), None)
            except Exception as exc:  # noqa: BLE001 - that call's outcome
                outcomes[index] = (None, exc)
        return outcomes

    def _pipeline(self, plans: Sequence[_Plan]) -> list[list[tuple[Any, ...]]]:
        """Run ``plans`` in one psycopg pipeline in autocommit; their rows, in order."""
        try:
            connection = self._engine.raw_connection()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, self._dbapi.Error) as error:
            raise StoreError(f"{self.name} store: cannot reach the database at {self._url}: {_cause(error)}") from error
        driver = connection.dbapi_connection
        cursors = []
        try:
            driver.autocommit = True
            try:
                with driver.pipeline():
                    for plan in plans:
                        cursor = driver.cursor()
                        cursors.append(cursor)
                        cursor.execute(plan.statement.sql, plan.statement.params(plan.values))
                return [cursor.fetchall() for cursor in cursors]
            except self._dbapi.Error as error:
                if self._engine.dialect.is_disconnect(error, driver, None) or driver.closed:
                    connection.invalidate(error)
                    raise StoreError(f"{self.name} store: database error at {self._url}: {_cause(error)}") from error
                raise _PipelineFailed from error
        finally:
            for cursor in cursors:
                cursor.close()
            if connection.is_valid:
                try:  # the pool's other users expect transactions
                    driver.autocommit = False
                except self._dbapi.Error as error:
                    connection.invalidate(error)
            connection.close()

    # ------------------------------------------------------------------ spec query API
    def get(self, record_id: str) -> EscalationRecord | None:
        return self._run_plan(self._plan_get(record_id), write=False)

    def get_by_incident(self, incident_id: str) -> list[EscalationRecord]:
        record = self._tables.record
        return self._records(record.c.incident_id == incident_id, order_by=(record.c.created_at, record.c.id))

    def get_active(self, policy_name: str | None = None) -> list[EscalationRecord]:
        record = self._tables.record
        criteria = [record.c.state.in_(sorted(ACTIVE_STATE_VALUES))]
        if policy_name is not None:
            criteria.append(record.c.policy_name == policy_name)
        return self._records(*criteria, order_by=(record.c.created_at, record.c.id))

    def count_active(self, policy_name: str | None = None) -> int:
        record = self._tables.record
        criteria = [record.c.state.in_(sorted(ACTIVE_STATE_VALUES))]
        if policy_name is not None:
            criteria.append(record.c.policy_name == policy_name)
        # ix_record_active (state, policy_name, ...) answers it without reading the rows
        query = sa.select(sa.func.count()).select_from(record).where(*criteria)
        return self._run(lambda conn: conn.execute(query).scalar_one())

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
        dag_ids: DagIds | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[EscalationRecord], int]:
        record = self._tables.record
        criteria = [] if dag_ids is None else [self._of_dags(dag_ids)]
        if states:
            criteria.append(record.c.state.in_(sorted({_value(s) for s in states})))
        for column, wanted in (
            (record.c.policy_name, policy_name),
            (record.c.incident_id, incident_id),
            (record.c.dag_id, dag_id),
        ):
            if wanted is not None:
                criteria.append(column == wanted)
        newest_first = (record.c.created_at.desc(), record.c.id.desc())
        # the page's ids first, then their rows: sorting every match's whole row (JSON documents
        # included) to keep a page of them costs far more (a derived table, not IN: MySQL allows
        # no LIMIT in an IN subquery)
        ids = sa.select(record.c.id).where(*criteria).order_by(*newest_first)
        ids = ids.limit(max(0, limit)).offset(max(0, offset)).subquery("page")
        page = self._record_query().join_from(record, ids, ids.c.id == record.c.id).order_by(*newest_first)
        total = sa.select(sa.func.count()).select_from(record).where(*criteria)
        return self._run(
            lambda conn: (self._with_history(conn, conn.execute(page).all()), conn.execute(total).scalar_one())
        )

    def save(self, record: EscalationRecord) -> EscalationRecord:
        table, event = self._tables.record, self._tables.event
        values = _record_values(record)
        values["history_len"] = len(record.history)

        def work(conn: Connection) -> int:
            current = conn.execute(sa.select(table.c.version).where(table.c.id == record.id).with_for_update()).scalar()
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

    def _of_dags(self, dag_ids: DagIds) -> sa.ColumnElement[bool]:
        """Records whose ``dag_id`` is in ``dag_ids`` (None in it: records of no DAG)."""
        column = self._tables.record.c.dag_id
        named = sorted({d for d in dag_ids if d is not None})
        criteria = [column.in_(named)] if named else []
        if None in dag_ids:
            criteria.append(column.is_(None))
        return sa.or_(sa.false(), *criteria)

    def get_stats(self, dag_ids: DagIds | None = None) -> EscalationStats:
        record, delivery = self._tables.record, self._tables.delivery
        resolved = record.c.state == EscalationState.RESOLVED.value
        scope = [] if dag_ids is None else [self._of_dags(dag_ids)]
        # grouped in the order of ix_record_active, which covers it
        group = (record.c.state, record.c.policy_name, record.c.current_level)
        by_group = sa.select(*group, sa.func.count()).where(*scope).group_by(*group)
        # NULL durations (not acknowledged, not resolved) drop out of COUNT and SUM
        durations = sa.select(
            sa.func.count(record.c.acknowledged_at),
            sa.func.sum(self._micros_between(record.c.created_at, record.c.acknowledged_at)),
            sa.func.count(sa.case((resolved, record.c.resolved_at))),
            sa.func.sum(sa.case((resolved, self._micros_between(record.c.created_at, record.c.resolved_at)))),
        ).where(*scope)
        outcomes = (
            sa.select(delivery.c.state, delivery.c.target_key, sa.func.count())
            .where(delivery.c.state.in_([DeliveryState.SENT.value, DeliveryState.FAILED.value]))
            .group_by(delivery.c.state, delivery.c.target_key)
        )
        if scope:
            outcomes = outcomes.where(delivery.c.record_id.in_(sa.select(record.c.id).where(*scope)))

        def work(conn: Connection) -> tuple[list[Row[Any]], Row[Any], list[Row[Any]]]:
            if self._dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL enable_seqscan = on")  # see _create_engine
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

        plan = self._plan_create(record, deliveries)
        if plan is not None:
            return self._run_plan(plan)

        def work(cursor: Any, sql: _Statements) -> None:
            # a closed record has no open_key to collide on: look for the open one (as memory does)
            key = open_key(record.incident_id, record.policy_name, record.dag_id)
            if not record.is_open and sql.open_id.rows(cursor, {_W + "open_key": key}):
                raise _AlreadyStored
            values = sql.record_params(record)
            values.update(version=1, history_len=len(record.history), lease_owner=None, lease_until=None)
            try:
                sql.insert_record.run(cursor, values)
            except self._dbapi.IntegrityError as error:
                if _is_unique_violation(error):
                    raise _AlreadyStored from error
                raise
            if record.history:
                sql.insert_event.many(cursor, sql.event_params(record.id, record.history, 0, record.created_at))
            if deliveries:
                sql.insert_delivery.many(cursor, sql.delivery_params(deliveries, 0))

        try:
            self._direct(work)
        except _AlreadyStored:
            return None
        record.version = 1
        return record

    def find_open(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        return self._run_plan(self._plan_find_open(incident_id, policy_name, dag_id), write=False)

    def last_closed(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        record = self._tables.record
        return self._first(
            record.c.incident_id == incident_id,
            record.c.policy_name == policy_name,
            record.c.dag_id.is_(None) if dag_id is None else record.c.dag_id == dag_id,
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
        new_events = list(new_events)

        def work(cursor: Any, sql: _Statements) -> bool:
            values = sql.record_params(record)
            values.update(
                {_W + "id": record.id, _W + "version": expected_version},
                version=expected_version + 1,
                lease_owner=None,
                lease_until=None,
            )
            del values["id"], values["notification_count"]  # counted by finish_delivery alone

            def swap(stored_len: int) -> bool:
                values.update({_W + "history_len": stored_len}, history_len=stored_len + len(new_events))
                return sql.cas.run(cursor, values) == 1

            # the stored history is record.history without new_events, unless the caller's record
            # says otherwise: then read where it ends (the row lock keeps it there)
            start = len(record.history) - len(new_events)
            if not swap(start):
                found = sql.version_of.rows(cursor, {_W + "id": record.id})
                if not found or found[0][0] != expected_version:
                    return False
                start = found[0][1]
                if not swap(start):
                    return False
            if new_events:
                sql.insert_event.many(cursor, sql.event_params(record.id, new_events, start, record.updated_at))
            if cancel_pending:
                sql.cancel_pending.run(
                    cursor, {_W + "record_id": record.id, "updated_at": self._codec.time(record.updated_at)}
                )
            if deliveries:
                # numbered after the record's last delivery, read under the row lock the swap took
                last = sql.last_seq.rows(cursor, {_W + "record_id": record.id})[0][0]
                sql.insert_delivery.many(cursor, sql.delivery_params(deliveries, 0 if last is None else last + 1))
            return True

        if self._one_statement():
            # one statement when the stored history is as the caller's record says (the usual
            # case); otherwise, or when the version moved on, the transaction below finds out which
            written = self._run_plan(
                self._plan_update(record, expected_version, new_events, deliveries, cancel_pending)
            )
            if written is not _ALONE:
                return True
        if not self._direct(work):
            return False
        record.version = expected_version + 1
        return True

    def claim_due(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[EscalationRecord]:
        if limit <= 0:
            return []
        record = self._tables.record
        free = sa.or_(record.c.lease_until.is_(None), record.c.lease_until <= now, record.c.lease_owner == owner)
        due = (
            self._record_query()
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
                    .where(record.c.id.in_([row[0] for row in rows]))
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
        # the first entry of the due index, rather than MIN(): MySQL, whose due index is not
        # partial, would compute MIN over every open record instead of stopping at the first
        first = (
            sa.select(record.c.next_escalation_at)
            .where(self._is_open(), record.c.next_escalation_at.isnot(None))
            .order_by(record.c.next_escalation_at)
            .limit(1)
        )
        return self._run(lambda conn: conn.execute(first).scalar())

    # ------------------------------------------------------------------ outbox
    def get_deliveries(self, record_id: str) -> list[Delivery]:
        delivery = self._tables.delivery
        query = sa.select(*self._codec.delivery_reads).where(delivery.c.record_id == record_id).order_by(delivery.c.seq)
        return self._run(lambda conn: [self._codec.delivery(row) for row in conn.execute(query)])

    def claim_deliveries(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Delivery]:
        if limit <= 0:
            return []
        delivery = self._tables.delivery
        pending = sa.select(*self._codec.delivery_reads).where(delivery.c.state == DeliveryState.PENDING.value)
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
        if self._one_statement():
            return self._run_plan(self._plan_start_delivery(delivery_id, now, owner, lease))
        time = self._codec.time
        values = {
            _W + "id": delivery_id,
            _W + "now": time(now),
            "updated_at": time(now),
            "lease_owner": owner,
            "lease_until": time(now + lease),
        }
        return self._direct(lambda cursor, sql: sql.moved(cursor, sql.start_delivery, values))

    def finish_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Delivery | None:
        if self._one_statement():
            return self._run_plan(self._plan_finish_delivery(delivery_id, now, sent, error, retry_at))
        time = self._codec.time
        values = {_W + "id": delivery_id, "updated_at": time(now), "last_error": error}

        def work(cursor: Any, sql: _Statements) -> Delivery | None:
            if sent:
                statement = sql.finish_sent
                values["sent_at"] = time(now)
            elif retry_at is not None:
                statement = sql.finish_retry
                values["next_attempt_at"] = time(retry_at)
            else:
                statement = sql.finish_failed
            done = sql.moved(cursor, statement, values)
            if done is not None and sent:
                sql.count_sent.run(cursor, {_W + "id": done.record_id})
            return done

        return self._direct(work)

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
        times = self._run(lambda conn: [conn.execute(first_new).scalar(), conn.execute(first_retry).scalar()])
        return min((t for t in times if t is not None), default=None)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()


SQLEscalationStore._PLANNERS.update(
    get=SQLEscalationStore._plan_get,
    find_open=SQLEscalationStore._plan_find_open,
    create=SQLEscalationStore._plan_create,
    update=SQLEscalationStore._plan_update,
    start_delivery=SQLEscalationStore._plan_start_delivery,
    finish_delivery=SQLEscalationStore._plan_finish_delivery,
)


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


def _already_exists(error: BaseException) -> bool:
    text = str(error.__cause__ or error).lower()
    return "already exists" in text or "pg_type_typname_nsp_index" in text or "1050" in text
