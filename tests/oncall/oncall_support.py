"""Shared constants of the on-call suite."""

from __future__ import annotations

from datetime import datetime, timezone

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)  # Monday 08:00 in Berlin
