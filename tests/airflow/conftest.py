"""Airflow-layer tests: provider info, config, the service in-process, and a real API server.

Airflow is imported with a throw-away AIRFLOW_HOME (never ~/airflow) unless one is set.
"""

from __future__ import annotations

import os
import tempfile

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="escalation-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
