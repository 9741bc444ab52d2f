"""A task's failure starts an escalation; the task's next success resolves it.

``EscalationNotifier`` runs as the task's ``on_failure_callback`` in the task process: it hands
the trigger to the escalation service (in the Airflow API server) in well under a second, or
spools it locally when the service is unreachable, and never fails the task's finalisation.

The incident key defaults to ``"{dag_id}.{task_id}"``: a task that fails again while its
escalation is open joins it instead of paging again. ``resolver()`` is the matching
``on_success_callback``: when the task succeeds (a retry, a re-run, tomorrow's run) it resolves
the open escalation of the same incident.

Run it failing (the default) or succeeding: ``airflow dags trigger escalation_on_failure
--conf '{"fail": false}'``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_escalation.notifications.escalation import EscalationNotifier

page_oncall = EscalationNotifier(
    policy_name="production_critical",  # dags_examples/policies/production_critical.yaml
    severity="critical",
    message="{{ ti.task_id }} failed in {{ run_id }} (try {{ ti.try_number }})",
)

with DAG(
    dag_id="escalation_on_failure",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"fail": Param(True, type="boolean", description="make load_orders fail")},
    tags=["escalation", "example"],
) as dag:

    @task(on_failure_callback=page_oncall, on_success_callback=page_oncall.resolver())
    def load_orders() -> int:
        if get_current_context()["params"]["fail"]:
            raise ValueError("orders feed is empty: 0 rows for the last hour")
        return 1234

    load_orders()
