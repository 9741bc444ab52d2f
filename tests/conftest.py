"""Fixtures shared across test directories.

``stack``: one real ``airflow api-server`` per test session (tests/airflow_stack.py), used by
tests/airflow and tests/ui; it starts only when a test asks for it.
"""

from airflow_stack import stack  # noqa: F401  (session fixture)
