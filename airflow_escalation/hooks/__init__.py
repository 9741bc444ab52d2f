"""Hooks of the escalation provider.

``EscalationHook`` is loaded on first access so that importing ``airflow_escalation.hooks``
(e.g. for :mod:`airflow_escalation.hooks.connection_info` from provider info) stays free of Airflow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AirflowJWTTokenProvider", "EscalationHook"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from airflow_escalation.hooks import escalation

        return getattr(escalation, name)
    raise AttributeError(f"module 'airflow_escalation.hooks' has no attribute {name!r}")
