"""Constants and helpers shared by the channel tests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow_escalation.demo.local_airflow import free_port  # noqa: F401  (re-exported)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
BASE_URL = "http://airflow.example.com:8080"
SECRET = "test-action-secret"


def policy(*level_targets: list[dict[str, Any]], name: str = "pipeline", **kw: Any) -> dict[str, Any]:
    """A policy dict: level N notifies ``level_targets[N-1]``, 15 minutes after the one before."""
    return {
        "name": name,
        **kw,
        "levels": [
            {"level": i + 1, "delay_minutes": 0 if i == 0 else 15, "targets": targets}
            for i, targets in enumerate(level_targets)
        ],
    }


FAILURE_CONTEXT = {
    "dag_id": "orders_etl",
    "run_id": "scheduled__2026-03-02T09:00:00+00:00",
    "task_id": "load",
    "try_number": 2,
    "severity": "critical",
    "exception": "ValueError: bad row <script>alert('x')</script> & more",
}
