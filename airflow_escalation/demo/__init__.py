"""``make demo``: a real local Airflow with the example DAGs, a failing task, the escalation
climbing (:mod:`airflow_escalation.demo.run`). ``python -m airflow_escalation.demo.fake_clock``
prints the spec's example on a fake clock without starting Airflow."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

# The example DAGs and policies file live in the repository's top-level dags_examples/; the wheel
# ships the same folder as airflow_escalation/dags_examples (setup.py maps it), and an editable
# install maps that name back to the checkout.
EXAMPLES_PACKAGE = "airflow_escalation.dags_examples"


def examples_dir() -> Path:
    """The folder with the example DAGs and ``policies/``, installed or in a checkout."""
    spec = find_spec(EXAMPLES_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "policies").is_dir():
            return Path(location)
    return Path(__file__).resolve().parents[2] / "dags_examples"


EXAMPLES = examples_dir()
POLICY_FILE = EXAMPLES / "policies" / "production_critical.yaml"
