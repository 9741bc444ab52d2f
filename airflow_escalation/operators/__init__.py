"""Operators: ``EscalationOperator``."""

from __future__ import annotations

from typing import Any

__all__ = ["EscalationOperator"]


def __getattr__(name: str) -> Any:
    if name == "EscalationOperator":
        from airflow_escalation.operators.escalation import EscalationOperator

        return EscalationOperator
    raise AttributeError(f"module 'airflow_escalation.operators' has no attribute {name!r}")
