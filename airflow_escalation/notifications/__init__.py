"""Notifiers: ``EscalationNotifier`` for task/DAG callbacks and Deadline Alerts.

Loaded lazily: the hand-off itself (:mod:`airflow_escalation.handoff`, used by the spool's
command line) does not import Airflow's notifier machinery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EscalationNotifier", "send_escalation_notification"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from airflow_escalation.notifications import escalation

        return getattr(escalation, name)
    raise AttributeError(f"module 'airflow_escalation.notifications' has no attribute {name!r}")
