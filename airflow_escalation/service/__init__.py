"""The escalation service: the FastAPI app the plugin mounts in the Airflow API server.

``create_app`` is cheap; the app's lifespan builds and runs the engine. See docs/service.md.
"""

from airflow_escalation.service.app import (
    EscalationService,
    add_engine_setup,
    create_app,
    remove_engine_setup,
)

__all__ = ["EscalationService", "add_engine_setup", "create_app", "remove_engine_setup"]
