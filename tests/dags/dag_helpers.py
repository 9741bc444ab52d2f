"""Helpers of the DAG-layer tests (a module of its own: ``conftest`` names collide across dirs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags_examples"


def load_example(name: str):
    """Import ``dags_examples/<name>.py`` and return its DAG."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dags_examples_{name}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    from airflow.sdk import DAG

    (dag,) = [v for v in vars(module).values() if isinstance(v, DAG)]
    return dag
