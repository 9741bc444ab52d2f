"""A Deadline Alert escalates when a run is still not done 30 minutes after it was queued.

The Deadline Alert's ``AsyncCallback`` runs ``EscalationNotifier.async_notify`` in the
triggerer. Its context has only the DAG run and the deadline, so the default incident key is
``"{dag_id}.deadline"``. ``kwargs`` must be JSON-serialisable (they are stored with the DAG).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, Param, get_current_context, task

from airflow_escalation.notifications.escalation import EscalationNotifier

with DAG(
    dag_id="escalation_deadline",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"work_seconds": Param(1, type="integer", minimum=0)},
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=30),
        callback=AsyncCallback(
            EscalationNotifier,
            kwargs={
                "policy_name": "production_critical",
                "severity": "high",
                "message": "orders_daily is still running 30 minutes after it was queued",
            },
        ),
    ),
    tags=["escalation", "example"],
) as dag:

    @task
    def build_orders_mart() -> None:
        time.sleep(int(get_current_context()["params"]["work_seconds"]))

    build_orders_mart()
