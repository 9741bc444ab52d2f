"""The domain: models, types, the state machine, the planner, business hours, clock, bounds.

Imports nothing above it (``runtime/``, ``stores/``, ``scheduling/``, ``service/``) and nothing
from Airflow; the runtime (``airflow_escalation.runtime``) runs it.
"""
