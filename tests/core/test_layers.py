"""The domain imports nothing above it: no runtime, store, scheduler, service or Airflow module."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_escalation

CORE = Path(airflow_escalation.__file__).parent / "core"
ABOVE = ("airflow_escalation.runtime", "airflow_escalation.stores", "airflow_escalation.scheduling")
ABOVE += ("airflow_escalation.service", "airflow_escalation.routing", "airflow")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_module_of_the_domain_imports_the_runtime_stores_scheduling_service_or_airflow():
    offenders = {
        f"{path.name}: {name}"
        for path in CORE.glob("*.py")
        for name in imported(path)
        if any(name == above or name.startswith(above + ".") for above in ABOVE)
    }
    assert offenders == set()
    assert {p.name for p in CORE.glob("*.py")} >= {"models.py", "types.py", "states.py", "planner.py"}
    assert not {"engine.py", "manager.py", "worker_pool.py"} & {p.name for p in CORE.glob("*.py")}
