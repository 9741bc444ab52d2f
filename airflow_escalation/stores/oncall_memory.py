"""On-call items (silences, overrides, resolutions) in process memory: see stores/base.py."""

from __future__ import annotations

import copy
import threading
from datetime import datetime
from typing import Any


class InMemoryOnCallItems:
    """The in-memory store's on-call items, under their own lock."""

    _oncall_lock = threading.Lock()

    def _oncall(self) -> dict[tuple[str, str], tuple[str, datetime, datetime, dict[str, Any]]]:
        items = self.__dict__.get("_oncall_items")
        if items is None:
            with self._oncall_lock:
                items = self.__dict__.setdefault("_oncall_items", {})
        return items

    def put_oncall_item(
        self, kind: str, item_id: str, scope: str, starts_at: datetime, ends_at: datetime, data: dict[str, Any]
    ) -> None:
        self._oncall()[(kind, item_id)] = (scope, starts_at, ends_at, copy.deepcopy(data))

    def get_oncall_item(self, kind: str, item_id: str) -> dict[str, Any] | None:
        found = self._oncall().get((kind, item_id))
        return copy.deepcopy(found[3]) if found is not None else None

    def list_oncall_items(
        self, kind: str, *, scope: str | None = None, ends_after: datetime | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        rows = [
            (starts, item_id, data)
            for (k, item_id), (s, starts, ends, data) in list(self._oncall().items())
            if k == kind and (scope is None or s == scope) and (ends_after is None or ends > ends_after)
        ]
        rows.sort(key=lambda row: (row[0], row[1]))
        return [copy.deepcopy(data) for _, _, data in rows[:limit]]

    def delete_oncall_items(self, kind: str, *, item_id: str | None = None, ends_before: datetime | None = None) -> int:
        items = self._oncall()
        doomed = [
            key
            for key, (_, _, ends, _) in list(items.items())
            if key[0] == kind
            and (item_id is None or key[1] == item_id)
            and (ends_before is None or ends < ends_before)
            and (item_id is not None or ends_before is not None)
        ]
        for key in doomed:
            items.pop(key, None)
        return len(doomed)
