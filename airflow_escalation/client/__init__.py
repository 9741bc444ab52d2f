"""Client of the escalation service REST API. Imports nothing from Airflow.

>>> from airflow_escalation.client import EscalationClient
>>> client = EscalationClient("http://localhost:8080", username="admin", password="...")
>>> client.trigger("orders-etl:2024-06-01", {"dag_id": "orders_etl"}, severity="critical")
"""

from airflow_escalation.client.errors import (
    EscalationAPIError,
    EscalationAuthError,
    EscalationClientError,
    EscalationConflict,
    EscalationNotFound,
    EscalationServiceUnavailable,
)
from airflow_escalation.client.http import (
    DEFAULT_API_PATH,
    EscalationClient,
    as_deliveries,
    as_policy,
    as_record,
    as_result,
    as_stats,
    split_base_url,
)

__all__ = [
    "DEFAULT_API_PATH",
    "EscalationAPIError",
    "EscalationAuthError",
    "EscalationClient",
    "EscalationClientError",
    "EscalationConflict",
    "EscalationNotFound",
    "EscalationServiceUnavailable",
    "as_deliveries",
    "as_policy",
    "as_record",
    "as_result",
    "as_stats",
    "split_base_url",
]
