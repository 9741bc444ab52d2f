"""On-call items (silences, overrides, resolutions) in process memory: see stores/base.py."""

from __future__ import annotations

import copy
import threading
from datetime import datetime
from typing import Any


class InMemoryOnCallItems:
    """The in-memory store's on-call items, under their own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], tuple[str, datetime, datetime, dict[str, Any]]] = {}

    def put(
        self, kind: str, item_id: str, scope: str, starts_at: datetime, ends_at: datetime, data: dict[str, Any]
    ) -> None:
        with self._lock:
            self._items[(kind, item_id)] = (scope, starts_at, ends_at, copy.deepcopy(data))

    def get(self, kind: str, item_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._items.get((kind, item_id))
            return copy.deepcopy(found[3]) if found is not None else None

    def list(
        self, kind: str, *, scope: str | None = None, ends_after: datetime | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        with self._lock:
            rows = [
                (starts, item_id, data)
                for (k, item_id), (s, starts, ends, data) in self._items.items()
                if k == kind and (scope is None or s == scope) and (ends_after is None or ends > ends_after)
            ]
            rows.sort(key=lambda row: (row[0], row[1]))
            return [copy.deepcopy(data) for _, _, data in rows[:limit]]

    def delete(self, kind: str, *, item_id: str | None = None, ends_before: datetime | None = None) -> int:
        if item_id is None and ends_before is None:
            return 0
        with self._lock:
            doomed = [
                key
                for key, (_, _, ends, _) in self._items.items()
                if key[0] == kind
                and (item_id is None or key[1] == item_id)
                and (ends_before is None or ends < ends_before)
            ]
            for key in doomed:
                del self._items[key]
            return len(doomed)
