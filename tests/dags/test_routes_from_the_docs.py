"""Failure routes written only from docs/routes.md, on a real Airflow stack.

The checker issue 16 asks for: its own Dags (no callbacks at all) and its own routes, each
assertion a promise of docs/routes.md (or docs/api.md, docs/client.md, docs/channels.md for the
webhook body). One stack (api-server with two workers, scheduler, dag-processor; SQLite;
LocalExecutor), every Dag run at once; two policies, each paging a webhook at a local HTTP sink
through an ``http`` connection, so the sink's path says which policy paged.

- ``docs_finance`` (tags finance, payments) fails three tries: the ``task_up_for_retry`` route
  with ``min_try: 2`` pages on try 2, not try 1; the final failure, caught by a ``task_failed``
  route with the same default key, joins that one incident (one record, one page); a route for
  scheduled runs only never matches these manual runs; a rerun that succeeds resolves it;
- ``docs_run_fail``: its run's failure pages the ``dag_run_failed`` route with a templated
  incident key and its severity, the task's failure the catch-all;
- ``docs_overlap``: two routes match ``load_orders``; the first in the file wins (its templated
  key and severity), the other task falls through to the catch-all; no route for its run;
- ``docs_slow`` runs over its route's ``over_minutes``: it pages, and its success resolves;
- ``GET /routes/explain`` and ``airflow escalation routes explain`` say the same; bad routes
  are refused naming the field, and a catch-all is flagged.

Under ``CI=true`` nothing here is skipped; every process is killed in teardown.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from airflow_escalation.cli import main
from airflow_escalation.demo.sinks import HttpSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from airflow_stack import AirflowStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

API = "/escalation/api/v1"

POLICIES_YAML = """\
escalation:
  default_policy: pager_b
  policies:
    - name: pager_a
      levels:
        - level: 1
          targets: [{type: webhook, identifier: /hooks/a, conn_id: docs_sink}]
        - level: 2
          delay_minutes: 30
          targets: [{type: user, identifier: boss}]
    - name: pager_b
      levels:
        - level: 1
          targets: [{type: webhook, identifier: /hooks/b, conn_id: docs_sink}]
  routes:
    - name: finance-scheduled
      tags: [finance]
      run_types: [scheduled]
      kind: [task_up_for_retry, task_failed]
      policy: pager_b
    - name: finance-retries
      tags: [finance]
      run_types: [manual]
      kind: task_up_for_retry
      min_try: 2
      policy: pager_a
    - name: finance-final
      tags: [finance, payments]
      run_types: [manual]
      kind: task_failed
      policy: pager_a
    - name: slow-task
      dag_id: docs_slow
      kind: task_over_duration
      over_minutes: 0.1
      policy: pager_a
    - name: run-failures
      dag_id: "docs_run_*"
      kind: dag_run_failed
      policy: pager_b
      severity: critical
      incident_key: "run:{dag_id}:{kind}:{severity}:{task_id}"
    - name: loads
      dag_id: docs_overlap
      task_id: "load_*"
      policy: pager_a
      severity: low
      incident_key: "{dag_id}/{task_id}/try{try_number}"
    - name: everything
      policy: pager_b
"""

FINANCE = """
from datetime import datetime, timedelta
from pathlib import Path
from airflow.sdk import DAG, task

with DAG(
    dag_id="docs_finance", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["finance", "payments"]
) as dag:

    @task(retries=2, retry_delay=timedelta(seconds=2))
    def settle() -> None:
        if not Path(MARKER).exists():
            raise RuntimeError("ledger does not balance")

    settle()
"""

DAGS = {
    "docs_run_fail.py": """
from datetime import datetime
from airflow.sdk import DAG, task

with DAG(dag_id="docs_run_fail", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

    @task
    def explode() -> None:
        raise RuntimeError("boom")

    explode()
""",
    "docs_overlap.py": """
from datetime import datetime
from airflow.sdk import DAG, task

with DAG(dag_id="docs_overlap", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

    @task
    def load_orders() -> None:
        raise RuntimeError("orders did not load")

    @task
    def check() -> None:
        raise RuntimeError("check failed")

    load_orders()
    check()
""",
    "docs_slow.py": """
import time
from datetime import datetime
from airflow.sdk import DAG, task

with DAG(dag_id="docs_slow", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

    @task
    def crunch() -> None:
        time.sleep(20)

    crunch()
""",
}

BAD_ROUTES = {
    "policy": ("routes: [{dag_id: etl, policy: nope}]", "routes[0].policy", "nope"),
    "dag_id": ("routes: [{dag_id: 'etl_[ab', policy: pager}]", "routes[0].dag_id", "etl_[ab"),
    "kind": ("routes: [{dag_id: etl, kind: task_exploded, policy: pager}]", "routes[0].kind", "task_exploded"),
    "min_try": ("routes: [{dag_id: etl, kind: task_failed, min_try: 2, policy: pager}]", "routes[0].min_try", ""),
    "run_types": ("routes: [{dag_id: etl, run_types: [nightly], policy: pager}]", "routes[0].run_types", "nightly"),
    "incident_key": ("routes: [{dag_id: etl, incident_key: '{dag_id}.{oops}', policy: pager}]", "incident_key", "oops"),
    "task_id": ("routes: [{dag_id: etl, kind: dag_run_failed, task_id: load, policy: pager}]", "routes[0].task_id", ""),
    "unknown field": ("routes: [{dag_id: etl, dag: etl, policy: pager}]", "routes[0].dag", ""),
}


def _policies(routes: str) -> str:
    return (
        "escalation:\n  policies:\n    - name: pager\n      levels:\n"
        "        - {level: 1, targets: [{type: user, identifier: lead}]}\n  " + routes + "\n"
    )


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory):
    try:
        import airflow.providers.http  # noqa: F401
    except ImportError:
        _require(False, "apache-airflow-providers-http is not installed (pip install -e '.[test]')")
    home = tmp_path_factory.mktemp("docs-routes-home")
    dags = home / "dags"
    dags.mkdir()
    marker = home / "settle_ok"
    (dags / "docs_finance.py").write_text(FINANCE.replace("MARKER", repr(str(marker))))
    for name, text in DAGS.items():
        (dags / name).write_text(text)
    sink = HttpSink()
    stack = AirflowStack(home, policies_yaml=POLICIES_YAML, dags_folder=dags, extra_env={})
    stack.env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "6",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__ESCALATION__DETECT_INTERVAL_SECONDS": "0.5",
            "AIRFLOW__API__BASE_URL": stack.base,
            "AIRFLOW_CONN_DOCS_SINK": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": sink.port, "schema": "http"}
            ),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    try:
        migrated = stack.cli("db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        stack.start()
        stack.start_components("dag-processor", "scheduler")
        stack.sink = sink
        stack.marker = marker
        # every Dag runs at once: the tests below wait for their own
        stack.runs = {
            dag_id: _run(stack, dag_id) for dag_id in ("docs_finance", "docs_run_fail", "docs_overlap", "docs_slow")
        }
        yield stack
    finally:
        stack.stop_all()
        sink.stop()


def _run(stack: AirflowStack, dag_id: str) -> str:
    stack.wait(lambda: stack.get(f"/api/v2/dags/{dag_id}").status_code, lambda s: s == 200, 120, f"{dag_id} parsed")
    r = stack.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
    assert r.status_code in (200, 201), r.text
    return r.json()["dag_run_id"]


def _records(stack: AirflowStack, incident: str) -> list[dict]:
    found = stack.get(f"{API}/escalations", params={"incident": incident}).json()["escalations"]
    return [stack.get(f"{API}/escalations/{r['id']}").json() for r in found]


def _hooks(stack: AirflowStack, incident: str) -> list[tuple[str, dict]]:
    return [(p, b) for p, b in stack.sink.requests if b.get("incident_id") == incident]


def _ti(stack: AirflowStack, dag_id: str, task_id: str) -> dict:
    r = stack.get(f"/api/v2/dags/{dag_id}/dagRuns/{stack.runs[dag_id]}/taskInstances/{task_id}")
    return r.json() if r.status_code == 200 else {}


def _settled(stack: AirflowStack) -> None:
    """The detectors have read past everything so far (docs/api.md: ``GET /routes``'s detector)."""
    start = stack.get(f"{API}/routes").json()["detector"]["ticks"]
    stack.wait(lambda: stack.get(f"{API}/routes").json()["detector"]["ticks"], lambda t: t >= start + 6, 30, "ticks")


def _cli(stack: AirflowStack) -> list[str]:
    return ["--url", stack.base, "--username", "admin", "--password", stack.password("admin")]


def test_retries_page_from_min_try_the_final_failure_joins_and_a_rerun_resolves(docs_stack):
    stack = docs_stack
    incident = "docs_finance.settle"  # the default key: {dag_id}.{task_id}
    run_id = stack.runs["docs_finance"]
    records = stack.wait(lambda: _records(stack, incident), bool, 120, "the retry's page")
    ctx = records[0]["context"]
    # min_try 2: try 1 (already up for retry when try 2 pages) did not page
    assert ctx["kind"] == "task_up_for_retry" and ctx["try_number"] == 2, ctx
    assert ctx["route"] == "finance-retries" and records[0]["policy_name"] == "pager_a"
    assert ctx["dag_id"] == "docs_finance" and ctx["run_id"] == run_id and ctx["task_id"] == "settle"
    assert ctx["detected_by"] == "escalation-service" and ctx["log_url"].startswith(stack.base)
    assert ctx["run_type"] == "manual" and records[0]["history"][0]["actor"] == "escalation-detector"
    stack.wait(lambda: _ti(stack, "docs_finance", "settle").get("state"), lambda s: s == "failed", 120, "try 3 fails")
    _settled(stack)
    # the final failure (route finance-final, same default key) is the same incident: one record
    records = _records(stack, incident)
    assert len(records) == 1, [(r["id"], r["context"].get("kind")) for r in records]
    assert records[0]["state"] not in ("resolved", "cancelled")
    assert records[0]["context"]["try_number"] == 2  # the context stays the first page's
    hooks = _hooks(stack, incident)
    assert [p for p, _ in hooks] == ["/hooks/a"], hooks  # one page, from pager_a; finance-scheduled never
    body = hooks[0][1]
    assert body["policy"] == "pager_a" and body["dag"]["run_id"] == run_id and body["dag"]["try_number"] == 2
    assert body["context"]["log_url"] == ctx["log_url"]
    # a rerun that succeeds resolves it
    stack.marker.write_text("ok")
    cleared = stack.post(
        "/api/v2/dags/docs_finance/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": run_id, "task_ids": ["settle"], "only_failed": True},
    )
    assert cleared.status_code == 200, cleared.text
    resolved = stack.wait(
        lambda: _records(stack, incident), lambda rs: rs and rs[0]["state"] == "resolved", 180, "resolved by the rerun"
    )
    assert len(resolved) == 1 and resolved[0]["history"][-1]["actor"] == "escalation-detector"
    assert _ti(stack, "docs_finance", "settle")["state"] == "success"


def test_a_failed_run_pages_its_route_with_the_templated_key_and_severity(docs_stack):
    stack = docs_stack
    run_id = stack.runs["docs_run_fail"]
    incident = "run:docs_run_fail:dag_run_failed:critical:-"  # a run has no task_id: "-"
    runs = stack.wait(lambda: _records(stack, incident), bool, 120, "the dag_run_failed page")
    ctx = runs[0]["context"]
    assert ctx["kind"] == "dag_run_failed" and ctx["route"] == "run-failures" and ctx["severity"] == "critical"
    assert ctx["dag_id"] == "docs_run_fail" and ctx["run_id"] == run_id and runs[0]["policy_name"] == "pager_b"
    hooks = stack.wait(lambda: _hooks(stack, incident), bool, 30, "the run's webhook")
    assert hooks[0][0] == "/hooks/b" and hooks[0][1]["severity"] == "critical"
    # the task's own failure: no earlier route matches it, the catch-all does (default key, severity high)
    tasks = stack.wait(lambda: _records(stack, "docs_run_fail.explode"), bool, 60, "the task's page")
    tctx = tasks[0]["context"]
    assert tctx["route"] == "everything" and tctx["kind"] == "task_failed" and tctx["severity"] == "high"
    assert tctx["try_number"] == 1 and tctx["task_id"] == "explode" and tctx["log_url"].startswith(stack.base)
    hooks = stack.wait(lambda: _hooks(stack, "docs_run_fail.explode"), bool, 30, "the task's webhook")
    assert hooks[0][0] == "/hooks/b"
    dag = hooks[0][1]["dag"]
    assert (dag["dag_id"], dag["run_id"], dag["task_id"], dag["try_number"]) == ("docs_run_fail", run_id, "explode", 1)
    _settled(stack)
    for key in (incident, "docs_run_fail.explode"):
        assert len(_records(stack, key)) == 1 and len(_hooks(stack, key)) == 1, key


def test_the_first_matching_route_wins(docs_stack):
    stack = docs_stack
    incident = "docs_overlap/load_orders/try1"
    loads = stack.wait(lambda: _records(stack, incident), bool, 120, "the specific route's page")
    assert loads[0]["context"]["route"] == "loads" and loads[0]["policy_name"] == "pager_a"
    assert loads[0]["context"]["severity"] == "low"
    checks = stack.wait(lambda: _records(stack, "docs_overlap.check"), bool, 60, "the catch-all's page")
    assert checks[0]["context"]["route"] == "everything" and checks[0]["policy_name"] == "pager_b"
    stack.wait(lambda: _hooks(stack, incident), bool, 30, "the webhook")
    assert [p for p, _ in _hooks(stack, incident)] == ["/hooks/a"]
    _settled(stack)
    # no route for the run's failure of docs_overlap: the service does not page it
    assert _records(stack, "docs_overlap") == []
    assert len(_records(stack, incident)) == 1 and len(_records(stack, "docs_overlap.check")) == 1


def test_a_task_over_its_duration_pages_and_its_success_resolves(docs_stack):
    stack = docs_stack
    incident = "docs_slow.crunch"
    slow = stack.wait(lambda: _records(stack, incident), bool, 120, "the long task's page")
    assert slow[0]["context"]["kind"] == "task_over_duration" and slow[0]["context"]["route"] == "slow-task"
    assert slow[0]["policy_name"] == "pager_a"  # (it may be resolved already: the task ends after 20 s)
    assert slow[0]["context"]["run_id"] == stack.runs["docs_slow"]
    resolved = stack.wait(
        lambda: _records(stack, incident), lambda rs: rs[0]["state"] == "resolved", 120, "resolved on success"
    )
    assert len(resolved) == 1 and _ti(stack, "docs_slow", "crunch")["state"] == "success"


def test_explain_over_rest_and_the_cli(docs_stack, capsys):
    stack = docs_stack
    explained = stack.get(
        f"{API}/routes/explain", params={"dag_id": "docs_overlap", "task_id": "load_orders", "try_number": 1}
    ).json()
    assert explained["route"]["name"] == "loads" and explained["incident_id"] == "docs_overlap/load_orders/try1"
    assert explained["policy"] == "pager_a" and explained["severity"] == "low" and explained["dag_known"] is True
    by_name = {r["name"]: r for r in explained["routes"]}
    assert by_name["loads"]["wins"] and by_name["everything"]["matches"] and not by_name["everything"]["wins"]
    assert [r["index"] for r in explained["routes"]] == list(range(7))  # every route, in order
    assert explained["outcome"]["pages"] is True
    # the Dag's own tags are read from Airflow; the run type and try decide between the finance routes
    ask = {"dag_id": "docs_finance", "task_id": "settle", "kind": "task_up_for_retry"}
    first = stack.get(f"{API}/routes/explain", params={**ask, "run_type": "manual", "try_number": 1}).json()
    assert first["route"] is None and first["outcome"]["pages"] is False  # try 1 < min_try 2, nothing else
    assert "min_try" in {r["name"]: r for r in first["routes"]}["finance-retries"]["reason"]
    second = stack.get(f"{API}/routes/explain", params={**ask, "run_type": "manual", "try_number": 2}).json()
    assert second["route"]["name"] == "finance-retries" and second["policy"] == "pager_a"
    # no run_type: the routes filtering on run types do not match, and say why
    unsaid = stack.get(f"{API}/routes/explain", params={**ask, "try_number": 2}).json()
    assert unsaid["route"] is None
    assert "run type" in {r["name"]: r for r in unsaid["routes"]}["finance-retries"]["reason"]
    scheduled = stack.get(f"{API}/routes/explain", params={**ask, "run_type": "scheduled", "try_number": 2}).json()
    assert scheduled["route"]["name"] == "finance-scheduled" and scheduled["policy"] == "pager_b"
    what_if = stack.get(
        f"{API}/routes/explain", params={"dag_id": "docs_finance", "task_id": "settle", "tags": ["other"]}
    ).json()
    assert what_if["route"]["name"] == "everything"
    retry = ["--kind", "task_up_for_retry", "--try-number", "2", "--run-type", "manual"]
    assert main(["routes", "explain", "docs_finance", "--task-id", "settle", *retry, *_cli(stack)]) == 0
    assert " => 1. finance-retries: matches" in capsys.readouterr().out
    assert (
        main(["routes", "explain", "docs_overlap", "--task-id", "load_orders", "--try-number", "1", *_cli(stack)]) == 0
    )
    out = capsys.readouterr().out
    assert "task_failed of docs_overlap.load_orders (the first route in the file that matches wins):" in out
    assert " => 5. loads: matches" in out
    assert "  + 6. everything: matches (shadowed by an earlier route)" in out
    assert "incident 'docs_overlap/load_orders/try1', policy pager_a, severity low" in out
    assert "level 1 at +0 min: webhook:/hooks/a" in out and "level 2 at +30 min: user:boss" in out
    assert main(["routes", "list", *_cli(stack)]) == 0
    listed = capsys.readouterr().out
    assert listed.index("finance-scheduled") < listed.index("loads") < listed.index("everything")


def test_bad_routes_are_refused_naming_the_field_and_a_catch_all_is_flagged(docs_stack, tmp_path, capsys):
    stack = docs_stack
    for field, (routes, named, value) in BAD_ROUTES.items():
        answer = stack.post(f"{API}/policies/validate", json={"yaml": _policies(routes)})
        assert answer.status_code == 200, (field, answer.text)
        body = answer.json()
        assert body["valid"] is False, (field, body)
        assert any(named in e and value in e for e in body["errors"]), (field, body["errors"])
    unknown = stack.post(f"{API}/policies/validate", json={"yaml": _policies("routes: [{dag_id: etl, policy: nope}]")})
    assert "routes[0].policy: unknown policy 'nope'" in unknown.json()["errors"][0]
    # offline, in the CLI: exit 1, the field named
    bad = tmp_path / "bad.yaml"
    bad.write_text(_policies("routes: [{dag_id: 'etl_[ab', policy: pager}]"))
    assert main(["policy", "validate", str(bad)]) == 1
    assert "routes[0].dag_id: invalid glob 'etl_[ab'" in capsys.readouterr().err
    # a catch-all is allowed but flagged: POST /policies/validate, the CLI, GET /routes, GET /health
    catch_all = _policies("routes: [{policy: pager}]")
    flagged = stack.post(f"{API}/policies/validate", json={"yaml": catch_all}).json()
    assert flagged["valid"] is True and flagged["warnings"], flagged
    good = tmp_path / "catch_all.yaml"
    good.write_text(catch_all)
    assert main(["policy", "validate", str(good)]) == 0
    captured = capsys.readouterr()
    assert "warning" in (captured.out + captured.err).lower(), captured
    listed = stack.get(f"{API}/routes").json()
    assert any("everything" in w for w in listed["warnings"]), listed["warnings"]
    assert [r["name"] for r in listed["routes"]][-1] == "everything"
    # at start: in the API server's log (GET /health lists errors, not warnings)
    assert "routes[6] (everything): matches every DAG" in stack.log_path.read_text()
