"""Where the policies document's revisions live: a table beside the escalation records.

``<prefix>policy_revision`` (``escalation_policy_revision`` in the metadata database, created by
``airflow db migrate``, migration 0002): one row per saved revision, numbered 1, 2, 3, … The
number is the primary key, so saving is a compare-and-swap: a writer inserts ``latest + 1`` as
it last read it, and a second writer with the same number loses (:class:`RevisionConflict`)
instead of overwriting. Replicas poll :meth:`latest_revision` (one indexed ``max()``) to notice
a change. :class:`MemoryPolicyRevisionStore` is the same contract in one process.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from airflow_escalation.core.policy_doc import PolicyRevision, RevisionConflict
from airflow_escalation.stores import sql_schema
from airflow_escalation.stores.sql_schema import NAME, JSONDocument, UTCDateTime

SOURCE = 32


def build_table(metadata: sa.MetaData, prefix: str = sql_schema.DEFAULT_PREFIX) -> sa.Table:
    return sa.Table(
        f"{prefix}policy_revision",
        metadata,
        sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("document", JSONDocument, nullable=False),
        sa.Column("author", sa.String(NAME), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("source", sa.String(SOURCE), nullable=False),
        sa.Column("changes", JSONDocument, nullable=False),
    )


#: on the escalation tables' MetaData, so `airflow db` (EscalationDBManager) knows it
table = build_table(sql_schema.metadata)


class PolicyRevisionStore(Protocol):
    def latest_revision(self) -> int: ...

    def latest(self) -> PolicyRevision | None: ...

    def get(self, revision: int) -> PolicyRevision | None: ...

    def history(self, limit: int = 50, offset: int = 0) -> tuple[list[PolicyRevision], int]: ...

    def append(self, expected: int, revision: PolicyRevision) -> PolicyRevision: ...


class MemoryPolicyRevisionStore:
    """Revisions in this process (an engine on the memory store; tests)."""

    def __init__(self) -> None:
        self._revisions: list[PolicyRevision] = []
        self._lock = threading.Lock()

    def latest_revision(self) -> int:
        return len(self._revisions)

    def latest(self) -> PolicyRevision | None:
        return self._revisions[-1] if self._revisions else None

    def get(self, revision: int) -> PolicyRevision | None:
        return self._revisions[revision - 1] if 0 < revision <= len(self._revisions) else None

    def history(self, limit: int = 50, offset: int = 0) -> tuple[list[PolicyRevision], int]:
        newest_first = self._revisions[::-1]
        return newest_first[offset : offset + limit], len(newest_first)

    def append(self, expected: int, revision: PolicyRevision) -> PolicyRevision:
        with self._lock:
            if expected != len(self._revisions):
                raise RevisionConflict(expected, len(self._revisions))
            saved = _numbered(revision, expected + 1)
            self._revisions.append(saved)
            return saved


class SQLPolicyRevisionStore:
    """Revisions in an SQL database (PostgreSQL, MySQL, SQLite), beside the escalation store."""

    def __init__(self, engine: Engine, prefix: str = sql_schema.DEFAULT_PREFIX, create_table: bool = False) -> None:
        self._engine = engine
        if prefix == sql_schema.DEFAULT_PREFIX:
            self._table = table
        else:
            self._table = build_table(sa.MetaData(), prefix)
        if create_table:
            try:
                self._table.create(engine, checkfirst=True)
            except sa.exc.DBAPIError as exc:  # a replica starting at the same time created it
                if "already exists" not in str(exc).lower() and "1050" not in str(exc):
                    raise

    @classmethod
    def beside(cls, store: Any, create_table: bool = False) -> "SQLPolicyRevisionStore":
        """The revisions of an ``SQLEscalationStore``: same database, same table prefix."""
        prefix = store.tables.record.name[: -len("record")]
        return cls(store.engine, prefix, create_table=create_table)

    def latest_revision(self) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(self._table.c.revision))).scalar()
        return int(value or 0)

    def latest(self) -> PolicyRevision | None:
        return self._one(sa.select(self._table).order_by(self._table.c.revision.desc()).limit(1))

    def get(self, revision: int) -> PolicyRevision | None:
        return self._one(sa.select(self._table).where(self._table.c.revision == revision))

    def history(self, limit: int = 50, offset: int = 0) -> tuple[list[PolicyRevision], int]:
        t = self._table
        with self._engine.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)
            rows = conn.execute(sa.select(t).order_by(t.c.revision.desc()).limit(limit).offset(offset)).mappings()
            return [_revision(row) for row in rows], total

    def append(self, expected: int, revision: PolicyRevision) -> PolicyRevision:
        saved = _numbered(revision, expected + 1)
        try:
            with self._engine.begin() as conn:
                latest = int(conn.execute(sa.select(sa.func.max(self._table.c.revision))).scalar() or 0)
                if latest != expected:
                    raise RevisionConflict(expected, latest)
                conn.execute(
                    self._table.insert().values(
                        revision=saved.revision,
                        document=saved.document,
                        author=saved.author[:NAME],
                        created_at=saved.created_at,
                        comment=saved.comment,
                        source=saved.source[:SOURCE],
                        changes=saved.changes,
                    )
                )
        except IntegrityError:  # another writer inserted expected + 1 between our read and insert
            raise RevisionConflict(expected, self.latest_revision()) from None
        return saved

    def _one(self, query: Any) -> PolicyRevision | None:
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _revision(row) if row is not None else None


def _numbered(revision: PolicyRevision, number: int) -> PolicyRevision:
    return PolicyRevision(
        revision=number,
        document=revision.document,
        author=revision.author,
        created_at=revision.created_at,
        comment=revision.comment,
        source=revision.source,
        changes=list(revision.changes),
    )


def _revision(row: Any) -> PolicyRevision:
    created: datetime = row["created_at"]
    return PolicyRevision(
        revision=int(row["revision"]),
        document=dict(row["document"] or {}),
        author=str(row["author"]),
        created_at=created,
        comment=str(row["comment"] or ""),
        source=str(row["source"]),
        changes=list(row["changes"] or []),
    )
