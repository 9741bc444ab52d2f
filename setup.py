"""Everything is declared in pyproject.toml except one mapping pyproject cannot express next to
package discovery: the top-level ``dags_examples/`` folder (where users look for the example
DAGs in the repository) ships in the wheel as ``airflow_escalation/dags_examples``, so the
examples and ``python -m airflow_escalation.demo`` work from an installed package."""

from setuptools import find_packages, setup

EXAMPLES_PACKAGE = "airflow_escalation.dags_examples"

setup(
    packages=[*find_packages(include=["airflow_escalation", "airflow_escalation.*"]), EXAMPLES_PACKAGE],
    package_dir={EXAMPLES_PACKAGE: "dags_examples"},
)
