"""On-call items (silences, overrides, resolutions) in the SQL store's ``<prefix>oncall`` table.

The table is created with the others by ``airflow db migrate`` (migration 0002); a store that
creates its own tables creates it on first use.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Callable, TypeVar

import sqlalchemy as sa

from airflow_escalation.stores import sql_schema

T = TypeVar("T")
_TABLES_LOCK = threading.Lock()


class SQLOnCallItems:
    """A SQL store's on-call items, in its transactions (``store._run``), beside its tables."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._table: sa.Table | None = None

    def _run(self, work: Callable[[sa.Connection], T], *, write: bool = False) -> T:
        return self._store._run(work, write=write)  # type: ignore[no-any-return]

    def table(self) -> sa.Table:
        """``<prefix>oncall``, created on first use when missing (checked once per store)."""
        table = self._table
        if table is not None:
            return table
        with _TABLES_LOCK:
            if self._table is None:
                records = self._store.tables.record
                prefix = records.name[: -len("record")]
                metadata = records.metadata
                made = metadata.tables.get(f"{prefix}oncall")
                if made is None:
                    made = sql_schema.build_oncall_table(metadata, prefix)
                self._run(lambda conn: made.create(conn, checkfirst=True), write=True)
                self._table = made
            return self._table

    def put(
        self, kind: str, item_id: str, scope: str, starts_at: datetime, ends_at: datetime, data: dict[str, Any]
    ) -> None:
        table = self.table()
        key = (table.c.kind == kind) & (table.c.id == item_id)
        values = {"scope": scope, "starts_at": starts_at, "ends_at": ends_at, "data": data}

        def upsert(conn: sa.Connection) -> None:
            if conn.execute(sa.update(table).where(key).values(**values)).rowcount == 0:
                conn.execute(sa.insert(table).values(kind=kind, id=item_id, **values))

        self._run(upsert, write=True)

    def get(self, kind: str, item_id: str) -> dict[str, Any] | None:
        table = self.table()
        query = sa.select(table.c.data).where((table.c.kind == kind) & (table.c.id == item_id))
        found = self._run(lambda conn: conn.execute(query).scalar_one_or_none())
        return dict(found) if found is not None else None

    def list(
        self, kind: str, *, scope: str | None = None, ends_after: datetime | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        table = self.table()
        query = sa.select(table.c.data).where(table.c.kind == kind)
        if scope is not None:
            query = query.where(table.c.scope == scope)
        if ends_after is not None:
            query = query.where(table.c.ends_at > ends_after)
        query = query.order_by(table.c.starts_at, table.c.id).limit(limit)
        return [dict(row) for row in self._run(lambda conn: conn.execute(query).scalars().all())]

    def delete(self, kind: str, *, item_id: str | None = None, ends_before: datetime | None = None) -> int:
        if item_id is None and ends_before is None:
            return 0
        table = self.table()
        statement = sa.delete(table).where(table.c.kind == kind)
        if item_id is not None:
            statement = statement.where(table.c.id == item_id)
        if ends_before is not None:
            statement = statement.where(table.c.ends_at < ends_before)
        return int(self._run(lambda conn: conn.execute(statement).rowcount, write=True))
