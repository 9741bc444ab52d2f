"""DAG-level callbacks: the run's failure starts an escalation, a successful run resolves it.

DAG callbacks run in the dag-processor (``dag.test()`` runs them inline), with the context of the
run's last task instance and a ``reason``. The notifier's default incident key there is
``"{dag_id}"``: one incident per DAG, whichever task failed (the failed task, its exception and
log URL are in the escalation's context).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_escalation.notifications.escalation import EscalationNotifier

run_failed = EscalationNotifier(
    policy_name="production_critical",
    severity="high",
    extra_context={"team": "data-platform", "runbook": "https://wiki.example.com/runbooks/orders"},
)

with DAG(
    dag_id="escalation_dag_callback",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"fail": Param(True, type="boolean", description="make transform fail")},
    on_failure_callback=run_failed,
    on_success_callback=run_failed.resolver(),
    tags=["escalation", "example"],
) as dag:

    @task
    def extract() -> list[int]:
        return [1, 2, 3]

    @task
    def transform(rows: list[int]) -> int:
        if get_current_context()["params"]["fail"]:
            raise RuntimeError("schema drift: column 'amount' is missing")
        return sum(rows)

    transform(extract())
