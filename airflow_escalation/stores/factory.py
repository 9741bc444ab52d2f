"""``create_store``: a store by alias."""

from __future__ import annotations

from typing import Any

from airflow_escalation.stores.base import BaseEscalationStore


def create_store(store_type: str = "memory", **config: Any) -> BaseEscalationStore:
    """Create a store: ``memory``, ``sqlite`` (``db_path``), ``sql`` (``url``), ``redis`` (``redis_url``)."""
    kind = (store_type or "memory").lower()
    if kind in ("memory", "inmemory", "in_memory"):
        from airflow_escalation.stores.memory import InMemoryEscalationStore

        return InMemoryEscalationStore(**config)
    if kind == "sqlite":
        from airflow_escalation.stores.sql import SQLiteEscalationStore

        return SQLiteEscalationStore(**config)
    if kind in ("sql", "sqlalchemy", "postgresql", "postgres", "mysql"):
        from airflow_escalation.stores.sql import SQLEscalationStore

        return SQLEscalationStore(**config)
    if kind == "redis":
        from airflow_escalation.stores.redis import RedisEscalationStore

        return RedisEscalationStore(**config)
    raise ValueError(f"store_type: unknown store {store_type!r} (allowed: memory, sqlite, sql, redis)")
