"""Timezone-aware UTC helpers shared by models and stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

UTC = timezone.utc


def ensure_aware(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def from_iso(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return ensure_aware(value)
    return ensure_aware(datetime.fromisoformat(value))


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)
