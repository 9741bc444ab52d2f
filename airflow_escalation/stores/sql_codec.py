"""How the SQL store's values travel between the models and each dialect's driver: one codec per
dialect, used by both the SQLAlchemy column types (``sql_schema.UTCDateTime``,
``sql_schema.JSONDocument``) and the store's direct path (``sql._Codec``).

- Datetimes are aware UTC in the models. PostgreSQL stores ``timestamptz`` and takes and returns
  aware values; MySQL/MariaDB keep no zone, so they take naive UTC wall-clock time and it is made
  aware again when read; SQLite keeps fixed-width UTC text (:data:`SQLITE_DATETIME_FORMAT`), which
  sorts in time order. Naive input is taken as UTC everywhere.
- JSON documents are written as compact text (``json_documents``: the same as the Redis store's).
  A driver that parses JSON columns itself (psycopg on the SQLAlchemy path) hands back objects,
  which are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from airflow_escalation.core.timeutil import UTC, ensure_aware
from airflow_escalation.stores.json_documents import dump_json, load_json

MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})

# SQLite keeps datetimes as text; this fixed-width UTC format sorts in time order and puts the
# microseconds at characters 21-26, which the store's duration arithmetic relies on.
SQLITE_DATETIME_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def _sqlite_time(value: datetime) -> str:
    # SQLITE_DATETIME_FORMAT: isoformat pads the year to 4 digits and, with
    # timespec="microseconds", always writes 6 digits of microseconds
    if value.tzinfo is UTC:  # the engine's own times: drop the "+00:00"
        return value.isoformat(" ", "microseconds")[:-6]
    return ensure_aware(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_load_time(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return ensure_aware(value)


def _naive_utc(value: datetime) -> datetime:
    return ensure_aware(value).replace(tzinfo=None)


@dataclass(frozen=True)
class DialectCodec:
    """The conversions of one dialect (None is handled by the callers: it stays None)."""

    dialect: str
    dump_time: Callable[[datetime], Any]
    load_time: Callable[[Any], datetime]
    dump_json: Callable[[Any], str] = dump_json
    load_json: Callable[[Any], Any] = load_json


_SQLITE = DialectCodec("sqlite", _sqlite_time, _sqlite_load_time)
_POSTGRESQL = DialectCodec("postgresql", ensure_aware, ensure_aware)
_MYSQL = DialectCodec("mysql", _naive_utc, ensure_aware)


def codec_for(dialect: str) -> DialectCodec:
    """The codec of a SQLAlchemy dialect name (``sqlite``, ``postgresql``, ``mysql``, ``mariadb``)."""
    if dialect == "sqlite":
        return _SQLITE
    if dialect in MYSQL_DIALECTS:
        return _MYSQL
    return _POSTGRESQL
