"""``make demo``: a real local Airflow with the example DAGs, a failing task, the escalation
climbing (:mod:`airflow_escalation.demo.run`). ``python -m airflow_escalation.demo.fake_clock``
prints the spec's example on a fake clock without starting Airflow."""

from pathlib import Path

# the demos run from a checkout of the repository: its example DAGs and policies file
EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
POLICY_FILE = EXAMPLES / "policies" / "production_critical.yaml"
