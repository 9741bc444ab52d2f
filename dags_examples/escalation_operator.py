"""A data-quality check escalates to a human and waits until someone acknowledges.

``EscalationOperator`` triggers (or joins) the escalation of incident
``"{dag_id}.orders_quality"`` and returns the record id as its XCom. With
``wait_for="acknowledged"`` it then defers: the task frees its worker slot and waits in the
triggerer until the escalation is acknowledged (or resolved), then succeeds; it fails if the
escalation ends otherwise or ``timeout`` passes first. ``publish`` runs only once a human has
looked at the bad data.

Try it with ``--conf '{"null_rate": 0.2}'`` (escalates) or ``'{"null_rate": 0.0}'`` (skips).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_escalation.operators.escalation import EscalationOperator

MAX_NULL_RATE = 0.01

with DAG(
    dag_id="escalation_operator",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"null_rate": Param(0.05, type="number", description="simulated share of NULL amounts")},
    tags=["escalation", "example"],
) as dag:

    @task
    def check_orders() -> list[str]:
        null_rate = float(get_current_context()["params"]["null_rate"])
        return [f"null_rate {null_rate:.1%} > {MAX_NULL_RATE:.0%}"] if null_rate > MAX_NULL_RATE else []

    @task.short_circuit
    def has_failures(failures: list[str]) -> bool:
        return bool(failures)

    failures = check_orders()
    escalate = EscalationOperator(
        task_id="escalate_bad_data",
        incident_id="{dag_id}.orders_quality",
        policy_name="production_critical",
        severity="critical",
        escalation_context={"failed_checks": "{{ ti.xcom_pull(task_ids='check_orders') }}"},
        wait_for="acknowledged",
        timeout=timedelta(hours=4),
        poll_interval=10,
        deferrable=True,  # without a triggerer: False (polls from the worker)
    )

    @task
    def publish(record_id: str) -> str:
        return f"published after escalation {record_id} was acknowledged"

    has_failures(failures) >> escalate
    publish(escalate.output)
