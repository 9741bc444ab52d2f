"""A deferrable sensor waits until the on-call acknowledges a failure's escalation.

``load_orders`` fails and its ``on_failure_callback`` starts the escalation of incident
``"escalation_sensor.load_orders"``. ``wait_for_acknowledgement`` (trigger rule ``all_failed``)
then waits in the triggerer until that escalation is acknowledged or resolved; all waiting
``EscalationSensor``\\ s of a triggerer share one poll of the service. Its XCom is the record
(id, state, acknowledged_by ...), which ``report`` reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_escalation.notifications.escalation import EscalationNotifier
from airflow_escalation.sensors.escalation import EscalationSensor

page_oncall = EscalationNotifier(policy_name="production_critical", severity="critical")

with DAG(
    dag_id="escalation_sensor",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"fail": Param(True, type="boolean", description="make load_orders fail")},
    tags=["escalation", "example"],
) as dag:

    @task(on_failure_callback=page_oncall)
    def load_orders() -> int:
        if get_current_context()["params"]["fail"]:
            raise ValueError("orders feed is empty")
        return 1234

    wait = EscalationSensor(
        task_id="wait_for_acknowledgement",
        incident_id="{dag_id}.load_orders",
        target_states=["acknowledged", "resolved"],
        trigger_rule="all_failed",
        poke_interval=2,
        timeout=timedelta(hours=8),
        deferrable=True,  # without a triggerer: False (pokes from the worker)
    )

    @task
    def report(record: dict) -> str:
        return f"escalation {record['id']} was {record['state']} by {record.get('acknowledged_by')}"

    load_orders() >> wait
    report(wait.output)
