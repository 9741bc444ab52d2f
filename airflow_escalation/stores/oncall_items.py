"""Which module keeps a store's on-call items (``BaseEscalationStore.put_oncall_item`` etc.).

Each backend keeps silences, overrides and resolutions in a module of its own, beside the store
rather than inside it: ``oncall_memory`` (a dict under a lock), ``oncall_sql`` (the
``<prefix>oncall`` table), ``oncall_redis`` (hashes under the store's key prefix).
"""

from __future__ import annotations

from typing import Any


def items_for(store: Any) -> Any:
    """The on-call items of ``store``; ``NotImplementedError`` for a store none keeps them for."""
    from airflow_escalation.stores.memory import InMemoryEscalationStore

    if isinstance(store, InMemoryEscalationStore):
        from airflow_escalation.stores.oncall_memory import InMemoryOnCallItems

        return InMemoryOnCallItems()
    try:
        from airflow_escalation.stores.sql import SQLEscalationStore
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        SQLEscalationStore = None  # type: ignore[assignment,misc]
    if SQLEscalationStore is not None and isinstance(store, SQLEscalationStore):
        from airflow_escalation.stores.oncall_sql import SQLOnCallItems

        return SQLOnCallItems(store)
    try:
        from airflow_escalation.stores.redis import RedisEscalationStore
    except ImportError:  # the redis extra is not installed
        RedisEscalationStore = None  # type: ignore[assignment,misc]
    if RedisEscalationStore is not None and isinstance(store, RedisEscalationStore):
        from airflow_escalation.stores.oncall_redis import RedisOnCallItems

        return RedisOnCallItems(store)
    raise NotImplementedError(f"{type(store).__name__} keeps no on-call items (silences, overrides)")
