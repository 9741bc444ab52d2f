"""Tables of the SQL escalation store (SQLAlchemy Core; SQLite, PostgreSQL, MySQL/MariaDB).

The module-level tables use the default prefix ``escalation_`` and live on their own
``metadata``; the Airflow metadata-database migration builds on that ``MetaData``.
``build_tables`` makes the same tables under another prefix (tests, several stores in one
database).

- ``<prefix>record``: one row per escalation record. ``open_key`` (sha256 of incident,
  policy and DAG; ``sql.open_key``) is set while the record is open and NULL once it is closed;
  its UNIQUE constraint is what refuses a second open record for the same incident, policy and
  DAG, across processes (records written before keys named the DAG keep a key without the DAG until their next
  write: ``sql.legacy_open_key``).
  ``lease_owner``/``lease_until`` hold a ``claim_due`` lease; ``history_len`` counts the
  record's rows in ``<prefix>event``; ``dag_id`` is the record's DAG
  (``EscalationRecord.dag_id``) so listings, stats and the open key can filter on it.
- ``<prefix>event``: the append-only history, ``seq`` 0.. per record.
- ``<prefix>delivery``: the outbox, ``seq`` 0.. per record (insertion order).

There are no foreign keys: the store deletes a record's rows itself, and on MySQL a foreign key
check would share-lock the record row inside every outbox write.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple

from sqlalchemy import JSON, Column, DateTime, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from airflow_escalation.core.timeutil import UTC, ensure_aware

DEFAULT_PREFIX = "escalation_"
MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})

RECORD_ID = 64  # uuid4().hex is 32 characters; room for imported ids
DELIVERY_ID = 255
NAME = 255  # incident ids, policy names, actors, lease owners, dag ids (Airflow: at most 250)
OPEN_KEY = 64  # sha256 hex: short enough for a unique index on MySQL whatever the names' length
# stats group deliveries by target key: longer keys (very long webhook URLs) are cut to this, which
# keeps (state, target_key) indexable on MySQL and its GROUP BY in an in-memory temporary table
TARGET_KEY = 512

# SQLite keeps datetimes as text; this fixed-width UTC format sorts in time order and puts the
# microseconds at characters 21-26, which the store's duration arithmetic relies on.
SQLITE_DATETIME_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend; naive input is taken as UTC.

    PostgreSQL stores ``timestamptz``. SQLite and MySQL keep no zone, so values are written as UTC
    wall-clock time and made aware again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))  # plain DATETIME drops microseconds
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sqlite.DATETIME(storage_format=SQLITE_DATETIME_FORMAT))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = ensure_aware(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # PostgreSQL answers in the session's zone, the others naive: both become aware UTC
        return ensure_aware(value) if value is not None else None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class JSONDocument(TypeDecorator):
    """JSON whatever the engine's ``json_serializer``: values JSON cannot hold (datetimes, enums,
    sets, other objects) are written as ISO strings, values, lists or ``str()``."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(json.dumps(value, default=_json_default))


class Tables(NamedTuple):
    record: Table
    event: Table
    delivery: Table


def build_tables(metadata: MetaData, prefix: str = DEFAULT_PREFIX) -> Tables:
    """Define the store's three tables on ``metadata``, named ``<prefix>record`` etc."""
    record = Table(
        f"{prefix}record",
        metadata,
        Column("id", String(RECORD_ID), primary_key=True),
        Column("incident_id", String(NAME), nullable=False),
        Column("policy_name", String(NAME), nullable=False),
        Column("current_level", Integer, nullable=False),
        Column("state", String(32), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("acknowledged_at", UTCDateTime),
        Column("acknowledged_by", String(NAME)),
        Column("resolved_at", UTCDateTime),
        Column("resolved_by", String(NAME)),
        Column("next_escalation_at", UTCDateTime),
        Column("escalation_count", Integer, nullable=False),
        Column("notification_count", Integer, nullable=False),
        Column("context", JSONDocument, nullable=False),
        Column("metadata", JSONDocument, nullable=False),
        Column("version", Integer, nullable=False),
        Column("trigger_type", String(64), nullable=False),
        Column("policy_snapshot", JSONDocument, nullable=False),
        Column("level_fired_at", UTCDateTime),
        Column("repeats_sent", Integer, nullable=False),
        Column("next_action", String(64)),
        Column("notify_rounds", Integer, nullable=False),
        Column("closed_at", UTCDateTime),
        # store bookkeeping, not fields of EscalationRecord
        Column("open_key", String(OPEN_KEY), unique=True),
        Column("lease_owner", String(NAME)),
        Column("lease_until", UTCDateTime),
        Column("history_len", Integer, nullable=False),
        Column("dag_id", String(NAME)),
    )
    is_open = record.c.open_key.isnot(None)
    Index(
        # the due sweep: PostgreSQL and SQLite index only open records; on MySQL open_key in
        # the index lets the sweep skip closed rows without reading them
        f"ix_{prefix}record_due",
        record.c.next_escalation_at,
        record.c.open_key,
        postgresql_where=is_open,
        sqlite_where=is_open,
    )
    # active records of a policy; with current_level it also covers the stats' GROUP BY
    Index(
        f"ix_{prefix}record_active",
        record.c.state,
        record.c.policy_name,
        record.c.current_level,
        record.c.created_at,
    )
    Index(f"ix_{prefix}record_incident", record.c.incident_id, record.c.policy_name, record.c.closed_at)
    Index(f"ix_{prefix}record_closed", record.c.closed_at)
    # listings, newest first: all records, or those of one DAG
    Index(f"ix_{prefix}record_created", record.c.created_at, record.c.id)
    Index(f"ix_{prefix}record_dag", record.c.dag_id, record.c.created_at)

    event = Table(
        f"{prefix}event",
        metadata,
        Column("record_id", String(RECORD_ID), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("at", UTCDateTime),
        Column("event", JSONDocument, nullable=False),
    )

    delivery = Table(
        f"{prefix}delivery",
        metadata,
        Column("id", String(DELIVERY_ID), primary_key=True),
        Column("record_id", String(RECORD_ID), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("level", Integer, nullable=False),
        Column("round", Integer, nullable=False),
        Column("target", JSONDocument, nullable=False),
        Column("target_key", String(TARGET_KEY), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("next_attempt_at", UTCDateTime),
        Column("sent_at", UTCDateTime),
        Column("lease_owner", String(NAME)),
        Column("lease_until", UTCDateTime),
        Column("last_error", Text),
    )
    Index(f"ix_{prefix}delivery_record", delivery.c.record_id, delivery.c.seq, unique=True)
    # pending deliveries: due now (no next_attempt_at) by created_at, retries by next_attempt_at;
    # sending ones (expire_deliveries) through the state prefix
    Index(f"ix_{prefix}delivery_due", delivery.c.state, delivery.c.next_attempt_at, delivery.c.created_at)
    Index(f"ix_{prefix}delivery_outcome", delivery.c.state, delivery.c.target_key)  # covers the stats
    return Tables(record, event, delivery)


metadata = MetaData()
tables = build_tables(metadata)
record_table, event_table, delivery_table = tables


# ------------------------------------------------------------------ on call (docs/oncall.md)
ONCALL_KIND = 32
ONCALL_ID = 255


def build_oncall_table(metadata: MetaData, prefix: str = DEFAULT_PREFIX) -> Table:
    """``<prefix>oncall``: silences, overrides and delivery resolutions as JSON documents
    (``stores.base.BaseEscalationStore.put_oncall_item``)."""
    table = Table(
        f"{prefix}oncall",
        metadata,
        Column("kind", String(ONCALL_KIND), primary_key=True),
        Column("id", String(ONCALL_ID), primary_key=True),
        Column("scope", String(NAME), nullable=False),
        Column("starts_at", UTCDateTime, nullable=False),
        Column("ends_at", UTCDateTime, nullable=False),
        Column("data", JSONDocument, nullable=False),
    )
    Index(f"ix_{prefix}oncall_ends", table.c.kind, table.c.ends_at)
    Index(f"ix_{prefix}oncall_scope", table.c.kind, table.c.scope, table.c.starts_at)
    return table


oncall_table = build_oncall_table(metadata)
