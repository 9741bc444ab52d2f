"""The import graph is one-way (docs/architecture.md).

- The domain (``airflow_escalation/core``: models, types, states, planner, …) imports only the
  domain: not the runtime, the stores, the scheduling, the service, the channels, nor Airflow.
  Every import statement counts, also those inside functions and ``TYPE_CHECKING`` blocks.
- The task side (the notifier, the spool, the hand-off, the hook, the operator, sensor and
  trigger) loads no store, no scheduler and no engine: checked statically (the module-level
  imports, followed transitively) and for real, in a fresh interpreter, through ``sys.modules``.

Every module of ``core/`` is domain: a new one is checked as soon as it exists.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "airflow_escalation"

#: the domain: every module of core/ (each imports nothing above it)
DOMAIN = tuple(sorted(path.stem for path in (PACKAGE / "core").glob("*.py") if path.stem != "__init__"))
DOMAIN_MODULES = {f"airflow_escalation.core.{name}" for name in DOMAIN} | {"airflow_escalation.core"}

#: what the task side must never load
HEAVY = (
    "airflow_escalation.stores",
    "airflow_escalation.scheduling",
    "airflow_escalation.runtime",
    "airflow_escalation.service",
)
#: the task side: what runs in a task, a callback, the triggerer or a cron job
TASK_SIDE = (
    "airflow_escalation",
    "airflow_escalation.notifications",
    "airflow_escalation.notifications.escalation",
    "airflow_escalation.spool",
    "airflow_escalation.handoff.steps",
    "airflow_escalation.handoff.sender",
    "airflow_escalation.hooks.escalation",
    "airflow_escalation.operators.escalation",
    "airflow_escalation.sensors.escalation",
    "airflow_escalation.triggers.escalation",
    "airflow_escalation.triggers.poller",
)


def _path_of(module: str) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (ROOT / relative.with_suffix(".py"), ROOT / relative / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if _is_package(path) else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, *, top_level_only: bool) -> set[str]:
    """Modules ``module`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    path = _path_of(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if top_level_only:
        nodes: list[ast.stmt] = []
        for stmt in tree.body:
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue  # typing only: never imported at run time
            nodes.append(stmt)
        walk = [n for stmt in nodes for n in ast.walk(stmt) if not _inside_function(stmt, n)]
    else:
        walk = list(ast.walk(tree))
    found: set[str] = set()
    for node in walk:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            found.add(base)
            for alias in node.names:
                if _path_of(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    return found


def _inside_function(stmt: ast.stmt, node: ast.AST) -> bool:
    """Whether ``node`` sits in a function body of ``stmt`` (run only when called)."""
    for func in ast.walk(stmt):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) and func is not node:
            if any(child is node for child in ast.walk(func)) and node is not func:
                return True
    return False


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _heavy(name: str) -> bool:
    return any(name == h or name.startswith(h + ".") for h in HEAVY)


def test_the_domain_holds_the_rules_and_no_runtime():
    expected = {"models", "types", "states", "planner", "severity", "bounds", "business_hours", "clock"}
    assert expected <= set(DOMAIN), f"domain modules missing from airflow_escalation/core: {expected - set(DOMAIN)}"
    assert not {"engine", "manager", "worker_pool"} & set(DOMAIN), "the runtime lives in airflow_escalation/runtime"


@pytest.mark.parametrize("name", DOMAIN)
def test_the_domain_imports_only_the_domain(name):
    module = f"airflow_escalation.core.{name}"
    bad = sorted(
        imported
        for imported in _imports(module, top_level_only=False)
        if imported == "airflow"
        or imported.startswith("airflow.")
        or (imported.startswith("airflow_escalation") and imported not in DOMAIN_MODULES)
    )
    assert not bad, f"{module} imports {bad}: the domain imports nothing above it (docs/architecture.md)"


def test_the_task_side_reaches_no_store_scheduler_or_engine_statically():
    """Module-level imports, followed transitively from every task-side module."""
    seen: dict[str, str] = {}
    frontier = [(m, m) for m in TASK_SIDE]
    while frontier:
        module, via = frontier.pop()
        if module in seen or not module.startswith("airflow_escalation") or _path_of(module) is None:
            continue
        seen[module] = via
        for imported in [*_imports(module, top_level_only=True), *_parents(module)]:
            frontier.append((imported, f"{via} -> {imported}"))
    reached = {m: via for m, via in seen.items() if _heavy(m)}
    assert not reached, "the task side imports: " + "; ".join(reached.values())


def test_the_task_side_loads_no_store_scheduler_or_engine(tmp_path):
    """For real: import the task side and hand a trigger off (the service is down, so it is
    spooled) in a fresh interpreter, then look at ``sys.modules``."""
    script = f"""
import json, sys
for name in {list(TASK_SIDE)!r}:
    __import__(name)
from airflow_escalation.handoff.sender import HandoffSender, drain_local_spool
from airflow_escalation.spool import EscalationSpool
with HandoffSender(timeout=0.5) as sender:
    outcome = sender.send("trigger", "escalation_default", {{"incident_id": "i", "context": {{}}}})[0]
EscalationSpool({str(tmp_path)!r}).put("trigger", {{"incident_id": "j"}}, conn_id="escalation_default")
report = drain_local_spool(budget_seconds=1.0, timeout=0.5, spool_dir={str(tmp_path)!r})
print(json.dumps({{"outcome": outcome, "left": report.left, "modules": sorted(sys.modules)}}))
"""
    env = {
        **os.environ,
        # a service that is not there: the hand-off fails fast and keeps the request
        "AIRFLOW_CONN_ESCALATION_DEFAULT": "escalation://127.0.0.1:9/",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["outcome"] == "retry" and answer["left"] == 1
    loaded = sorted(m for m in answer["modules"] if _heavy(m))
    assert not loaded, f"the task side loaded {loaded}"


def test_migrations_are_frozen():
    """A revision writes its column types out: importing the live schema would let a later change
    there rewrite what an applied revision did."""
    for path in sorted((PACKAGE / "migrations" / "versions").glob("0*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        live = sorted(name for name in imported if name.startswith("airflow_escalation"))
        assert not live, f"{path.name} imports {live}"
