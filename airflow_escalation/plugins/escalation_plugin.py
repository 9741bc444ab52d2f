"""The Airflow plugin: mounts the escalation service in the API server at ``/escalation``.

Registered through the ``airflow.plugins`` entry point (loaded by default) and listed in the
provider info (loaded when ``[core] lazy_discover_providers = False``).

Every Airflow process that loads plugins imports this module (task processes too), so it stays
cheap: ``create_app()`` builds the FastAPI object and its routes only; the engine, the store and
the clock start in the app's lifespan, which only the API server runs.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_escalation.service.app import create_app

URL_PREFIX = "/escalation"


class EscalationPlugin(AirflowPlugin):
    """Escalation service (REST API under ``/escalation/api/v1``)."""

    name = "escalation"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Escalation service"},
    ]
