"""Sensors: ``EscalationSensor`` (deferrable)."""

from __future__ import annotations

from typing import Any

__all__ = ["EscalationSensor"]


def __getattr__(name: str) -> Any:
    if name == "EscalationSensor":
        from airflow_escalation.sensors.escalation import EscalationSensor

        return EscalationSensor
    raise AttributeError(f"module 'airflow_escalation.sensors' has no attribute {name!r}")
