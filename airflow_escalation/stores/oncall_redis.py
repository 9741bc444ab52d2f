"""On-call items (silences, overrides, resolutions) on Redis.

One hash per kind and scope, ``<prefix>oncall:<kind>:<scope>`` (field: item id, value: JSON of
``{scope, starts, ends, data}``), and a set of the scopes of each kind. Item counts are bounded
(core/bounds.py: silences, overrides) or per record (resolutions), so reads take a whole hash.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, ContextManager

from airflow_escalation.core.timeutil import from_iso


class RedisOnCallItems:
    """A Redis store's on-call items, on its client under its key prefix."""

    def __init__(self, store: Any) -> None:
        self._client = store.client
        # the store's key scheme and its Redis-error wording (stores/redis.py), not copies
        self._key: Callable[..., str] = store._key
        self._errors: Callable[[str], ContextManager[None]] = store._errors

    def _oncall_hash(self, kind: str, scope: str) -> str:
        return self._key("oncall:", kind, ":", scope)

    def _oncall_scopes(self, kind: str) -> str:
        return self._key("oncall_scopes:", kind)

    def _oncall_where(self, kind: str) -> str:
        return self._key("oncall_where:", kind)  # item id -> its scope

    def put(
        self, kind: str, item_id: str, scope: str, starts_at: datetime, ends_at: datetime, data: dict[str, Any]
    ) -> None:
        value = json.dumps(
            {"scope": scope, "starts": starts_at.isoformat(), "ends": ends_at.isoformat(), "data": data}, default=str
        )
        with self._errors("put_oncall_item"):
            old_scope = self._client.hget(self._oncall_where(kind), item_id)
            pipe = self._client.pipeline(transaction=True)
            if old_scope is not None and old_scope != scope:
                pipe.hdel(self._oncall_hash(kind, old_scope), item_id)
            pipe.hset(self._oncall_hash(kind, scope), item_id, value)
            pipe.hset(self._oncall_where(kind), item_id, scope)
            pipe.sadd(self._oncall_scopes(kind), scope)
            pipe.execute()

    def get(self, kind: str, item_id: str) -> dict[str, Any] | None:
        with self._errors("get_oncall_item"):
            scope = self._client.hget(self._oncall_where(kind), item_id)
            raw = self._client.hget(self._oncall_hash(kind, scope), item_id) if scope is not None else None
        return dict(json.loads(raw)["data"]) if raw else None

    def _oncall_rows(self, kind: str, scope: str | None) -> list[tuple[str, dict[str, Any]]]:
        with self._errors("list_oncall_items"):
            scopes = [scope] if scope is not None else sorted(self._client.smembers(self._oncall_scopes(kind)))
            pipe = self._client.pipeline(transaction=False)
            for name in scopes:
                pipe.hgetall(self._oncall_hash(kind, name))
            hashes = pipe.execute()
        return [(item_id, json.loads(raw)) for found in hashes for item_id, raw in found.items()]

    def list(
        self, kind: str, *, scope: str | None = None, ends_after: datetime | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        rows = []
        for item_id, row in self._oncall_rows(kind, scope):
            ends = from_iso(row["ends"])
            if ends_after is None or (ends is not None and ends > ends_after):
                rows.append((from_iso(row["starts"]), item_id, row["data"]))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [dict(data) for _, _, data in rows[:limit]]

    def delete(self, kind: str, *, item_id: str | None = None, ends_before: datetime | None = None) -> int:
        if item_id is None and ends_before is None:
            return 0
        doomed = []
        for found_id, row in self._oncall_rows(kind, None):
            ends = from_iso(row["ends"])
            if (item_id is None or found_id == item_id) and (
                ends_before is None or (ends is not None and ends < ends_before)
            ):
                doomed.append((found_id, row["scope"]))
        if doomed:
            with self._errors("delete_oncall_items"):
                pipe = self._client.pipeline(transaction=True)
                for found_id, scope in doomed:
                    pipe.hdel(self._oncall_hash(kind, scope), found_id)
                    pipe.hdel(self._oncall_where(kind), found_id)
                pipe.execute()
        return len(doomed)
