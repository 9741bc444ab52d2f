"""The ``escalation`` connection type, declared without importing Airflow.

Airflow 3.2+ reads connection forms from provider info (``conn-fields`` and
``ui-field-behaviour``) and deprecates the hook methods ``get_connection_form_widgets`` and
``get_ui_field_behaviour``; ``get_provider_info()`` should list :data:`CONNECTION_TYPE`. The hook
keeps both methods for older Airflow versions, built from the same data.
"""

from __future__ import annotations

from typing import Any

CONN_TYPE = "escalation"
HOOK_CLASS_NAME = "airflow_escalation.hooks.escalation.EscalationHook"
HOOK_NAME = "Escalation service"
DEFAULT_CONN_NAME = "escalation_default"

#: extras shown as form fields: name -> (label, JSON-schema type, default, description)
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 5},
        "description": "Timeout of each HTTP request to the escalation service.",
    },
    "retries": {
        "label": "Retries",
        "schema": {"type": ["integer", "null"], "default": 3},
        "description": "Retries on connection errors, HTTP 5xx and 429 (exponential backoff).",
    },
    "verify": {
        "label": "Verify TLS certificate",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": [],
    "relabeling": {
        "host": "API server URL or host",
        "schema": "Scheme (http or https)",
        "login": "Username (service account)",
        "password": "Password",
    },
    "placeholders": {
        "host": "http://localhost:8080",
        "schema": "http",
        "port": "8080",
        "login": "a service account with role USER (exchanged for a token at POST /auth/token)",
        "password": "the service account's password",
        "extra": '{"timeout": 5, "retries": 3, "verify": true}',
    },
}

#: the entry of ``get_provider_info()["connection-types"]`` for this connection type
CONNECTION_TYPE: dict[str, Any] = {
    "connection-type": CONN_TYPE,
    "hook-class-name": HOOK_CLASS_NAME,
    "hook-name": HOOK_NAME,
    "conn-fields": CONN_FIELDS,
    "ui-field-behaviour": {
        "hidden-fields": UI_FIELD_BEHAVIOUR["hidden_fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    },
}
