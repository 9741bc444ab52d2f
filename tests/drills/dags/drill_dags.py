"""The drills' failing DAG: ``load`` fails and its ``on_failure_callback`` escalates the
incident ``drill_failing.load.<run_id>`` (one per run, so runs do not join one record) under
policy ``drill``; ``wait`` (deferrable, trigger rule ``all_failed``) waits in the triggerer until
that escalation is acknowledged or resolved. It is retried every 10 s (8 times): a sensor that
starts while the service is down fails that try, and a later try drains the worker's spool (what
the failed callback could not hand over) before it looks for the escalation."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_escalation.notifications.escalation import EscalationNotifier
from airflow_escalation.sensors.escalation import EscalationSensor

with DAG(
    dag_id="drill_failing", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["escalation", "drill"]
) as dag:

    @task(
        on_failure_callback=EscalationNotifier(
            policy_name="drill", severity="critical", incident_key="{dag_id}.{task_id}.{run_id}"
        )
    )
    def load() -> None:
        raise ValueError("drill: the feed is empty")

    wait = EscalationSensor(
        task_id="wait",
        incident_id="{dag_id}.load.{run_id}",
        target_states=["acknowledged", "resolved"],
        trigger_rule="all_failed",
        poke_interval=1,
        deferrable=True,  # drill 5 restarts the triggerer under it
        timeout=timedelta(minutes=10),
        retries=8,
        retry_delay=timedelta(seconds=10),
    )

    load() >> wait
