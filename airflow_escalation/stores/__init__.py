"""Escalation stores: the durable truth of every escalation."""

from airflow_escalation.stores.base import BaseEscalationStore, StoreError
from airflow_escalation.stores.factory import create_store
from airflow_escalation.stores.memory import InMemoryEscalationStore

__all__ = ["BaseEscalationStore", "InMemoryEscalationStore", "StoreError", "create_store"]
