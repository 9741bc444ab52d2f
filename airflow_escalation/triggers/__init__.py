"""Triggers: ``EscalationStateTrigger`` and the process-level ``SharedEscalationPoller``."""

from __future__ import annotations

from typing import Any

__all__ = ["EscalationStateTrigger", "SharedEscalationPoller", "shared_poller"]


def __getattr__(name: str) -> Any:
    if name == "EscalationStateTrigger":
        from airflow_escalation.triggers.escalation import EscalationStateTrigger

        return EscalationStateTrigger
    if name in ("SharedEscalationPoller", "shared_poller"):
        from airflow_escalation.triggers import poller

        return getattr(poller, name)
    raise AttributeError(f"module 'airflow_escalation.triggers' has no attribute {name!r}")
