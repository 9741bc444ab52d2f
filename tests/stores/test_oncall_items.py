"""The on-call part of the store contract (silences, overrides, resolutions), on every backend,
and two store instances on one storage (two API-server replicas) seeing each other's writes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _kind() -> str:
    return f"k{uuid.uuid4().hex[:8]}"  # SQL tables outlive a test: each test has kinds of its own


def test_put_get_replace_list_delete(store):
    kind = _kind()
    store.put_oncall_item(kind, "b", "", T0 + timedelta(hours=1), T0 + timedelta(hours=3), {"id": "b", "n": 1})
    store.put_oncall_item(kind, "a", "", T0, T0 + timedelta(hours=2), {"id": "a", "nested": {"x": [1, 2]}})
    assert store.get_oncall_item(kind, "a") == {"id": "a", "nested": {"x": [1, 2]}}
    assert store.get_oncall_item(kind, "missing") is None
    assert store.get_oncall_item(_kind(), "a") is None  # kinds do not mix
    assert [d["id"] for d in store.list_oncall_items(kind)] == ["a", "b"]  # by starts_at
    # replacing keeps one item, with the new values
    store.put_oncall_item(
        kind, "b", "", T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=30), {"id": "b", "n": 2}
    )
    assert store.get_oncall_item(kind, "b") == {"id": "b", "n": 2}
    assert len(store.list_oncall_items(kind)) == 2
    # ends_after is strict: an item ending exactly then is over
    assert [d["id"] for d in store.list_oncall_items(kind, ends_after=T0 + timedelta(hours=1, minutes=30))] == ["a"]
    assert store.list_oncall_items(kind, ends_after=T0 + timedelta(hours=2)) == []
    assert [d["id"] for d in store.list_oncall_items(kind, limit=1)] == ["a"]
    assert store.delete_oncall_items(kind, item_id="a") == 1
    assert store.delete_oncall_items(kind, item_id="a") == 0
    assert [d["id"] for d in store.list_oncall_items(kind)] == ["b"]
    assert store.delete_oncall_items(kind) == 0  # neither an id nor a time: deletes nothing
    assert store.delete_oncall_items(kind, ends_before=T0 + timedelta(hours=2)) == 1
    assert store.list_oncall_items(kind) == []


def test_scopes(store):
    kind = _kind()
    store.put_oncall_item(kind, "o1", "primary", T0, T0 + timedelta(hours=1), {"id": "o1"})
    store.put_oncall_item(kind, "o2", "secondary", T0, T0 + timedelta(hours=1), {"id": "o2"})
    assert [d["id"] for d in store.list_oncall_items(kind, scope="primary")] == ["o1"]
    assert [d["id"] for d in store.list_oncall_items(kind)] == ["o1", "o2"]
    # an item moved to another scope leaves the first
    store.put_oncall_item(kind, "o1", "secondary", T0, T0 + timedelta(hours=1), {"id": "o1", "moved": True})
    assert store.list_oncall_items(kind, scope="primary") == []
    assert [d["id"] for d in store.list_oncall_items(kind, scope="secondary")] == ["o1", "o2"]
    store.delete_oncall_items(kind, ends_before=T0 + timedelta(days=1))


def test_replicas_see_each_others_items(store_factory):
    one, two = store_factory(), store_factory()
    kind = _kind()
    one.put_oncall_item(kind, "s1", "", T0, T0 + timedelta(hours=1), {"id": "s1", "comment": "deploy"})
    assert two.get_oncall_item(kind, "s1") == {"id": "s1", "comment": "deploy"}
    two.put_oncall_item(kind, "s1", "", T0, T0 + timedelta(minutes=5), {"id": "s1", "comment": "expired"})
    assert one.list_oncall_items(kind, ends_after=T0 + timedelta(minutes=10)) == []
    two.delete_oncall_items(kind, item_id="s1")
    assert one.get_oncall_item(kind, "s1") is None
