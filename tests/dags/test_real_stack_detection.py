"""The service noticing failures itself, on a real Airflow stack (docs/routes.md).

api-server (two workers) plus a second api-server, scheduler, dag-processor as separate
processes on 127.0.0.1 (SQLite, LocalExecutor); the policies file has failure routes; the
policy's level 1 is a webhook to a local HTTP sink. Four detectors (one per API-server worker)
read the same metadata database and write to the same store.

- ``it_no_callback`` fails with no callback at all: its route pages (the webhook arrives), the
  record carries the notifier's context (run, task, try, log link) and there is one record,
  however many detectors saw the failure; the failed run pages its own ``dag_run_failed`` route;
- ``it_with_notifier`` fails with an ``EscalationNotifier`` *and* a matching route: one
  escalation, joined by nobody (the detector sees the notifier's record and stays quiet);
- ``it_killed_in_callback``: the task process is killed (SIGKILL) inside its failure callback,
  before the notifier can hand anything off: the service still pages;
- ``it_retry_then_ok`` is up for retry on try 1 (its route pages from the first retry) and
  succeeds on try 2: the success resolves the escalation.
- ``it_slow`` misses its Deadline (no triggerer runs: only the service pages it) and its task runs
  longer than its route's ``over_minutes``: both page; the task's success resolves the second;
- the Escalations page links to the *Failure routes* page, which explains a Dag (Chromium).

Bounded to a few minutes; every process is killed in teardown. Under ``CI=true`` nothing here
is skipped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from airflow_escalation.cli import main
from airflow_escalation.demo.sinks import HttpSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from airflow_stack import AirflowStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

API = "/escalation/api/v1"

POLICIES_YAML = """\
escalation:
  default_policy: detected
  policies:
    - name: detected
      levels:
        - level: 1
          targets:
            - {type: webhook, identifier: /hooks/detected, conn_id: escalation_sink}
        - level: 2
          delay_minutes: 30
          targets: [{type: user, identifier: eng-manager}]
  routes:
    - name: no-callback
      dag_id: it_no_callback
      kind: [task_failed, dag_run_failed]
      policy: detected
      severity: critical
    - name: notifier-too
      dag_id: it_with_notifier
      policy: detected
    - name: killed
      tags: [killed]
      policy: detected
    - name: flaky
      dag_id: "it_retry_*"
      kind: task_up_for_retry
      policy: detected
    - name: late
      dag_id: it_slow
      kind: deadline_missed
      policy: detected
    - name: long-task
      dag_id: it_slow
      kind: task_over_duration
      over_minutes: 0.1
      policy: detected
"""

DAGS = {
    "it_no_callback.py": """
from datetime import datetime
from airflow.sdk import DAG, task

with DAG(dag_id="it_no_callback", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

    @task
    def boom() -> None:
        raise RuntimeError("no callback here")

    boom()
""",
    "it_with_notifier.py": """
from datetime import datetime
from airflow.sdk import DAG, task
from airflow_escalation.notifications.escalation import EscalationNotifier

with DAG(dag_id="it_with_notifier", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

    @task(on_failure_callback=EscalationNotifier(policy_name="detected", message="from the notifier"))
    def boom() -> None:
        raise RuntimeError("the notifier reports this")

    boom()
""",
    "it_killed_in_callback.py": """
import os
import signal
from datetime import datetime
from airflow.sdk import DAG, task
from airflow_escalation.notifications.escalation import EscalationNotifier

notifier = EscalationNotifier(policy_name="detected")


def die_then_notify(context):
    os.kill(os.getpid(), signal.SIGKILL)  # the worker dies before the hand-off
    notifier(context)


with DAG(
    dag_id="it_killed_in_callback", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["killed"]
) as dag:

    @task(on_failure_callback=die_then_notify)
    def boom() -> None:
        raise RuntimeError("and then the worker died")

    boom()
""",
    "it_slow.py": """
import time
from datetime import datetime, timedelta
from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, task
from airflow_escalation.notifications.escalation import EscalationNotifier

# no triggerer runs in this stack: the Deadline's own callback never runs, the service pages
with DAG(
    dag_id="it_slow",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=5),
        callback=AsyncCallback(EscalationNotifier, kwargs={"policy_name": "detected"}),
    ),
) as dag:

    @task
    def sleepy() -> None:
        time.sleep(25)

    sleepy()
""",
    "it_retry_then_ok.py": """
from datetime import datetime, timedelta
from airflow.sdk import DAG, get_current_context, task

with DAG(dag_id="it_retry_then_ok", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

    @task(retries=1, retry_delay=timedelta(seconds=8))
    def flaky() -> None:
        if get_current_context()["ti"].try_number < 2:
            raise RuntimeError("first try fails")

    flaky()
""",
}


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def detect_stack(tmp_path_factory):
    try:
        import airflow.providers.http  # noqa: F401
    except ImportError:
        _require(False, "apache-airflow-providers-http is not installed (pip install -e '.[test]')")
    home = tmp_path_factory.mktemp("detect-stack-home")
    dags = home / "dags"
    dags.mkdir()
    for name, text in DAGS.items():
        (dags / name).write_text(text)
    sink = HttpSink()
    stack = AirflowStack(home, policies_yaml=POLICIES_YAML, dags_folder=dags, extra_env={})
    stack.env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__ESCALATION__SPOOL_DIR": str(home / "spool"),
            "AIRFLOW__ESCALATION__DETECT_INTERVAL_SECONDS": "0.5",
            "AIRFLOW__API__BASE_URL": stack.base,
            "AIRFLOW_CONN_ESCALATION_DEFAULT": json.dumps(stack.escalation_connection()),
            "AIRFLOW_CONN_ESCALATION_SINK": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": sink.port, "schema": "http"}
            ),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    try:
        migrated = stack.cli("db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        stack.start()
        stack.second_api = stack.start_api_server("api2")
        stack.start_components("dag-processor", "scheduler")
        stack.sink = sink
        yield stack
    finally:
        stack.stop_all()
        sink.stop()


def _dag_ready(stack: AirflowStack, dag_id: str) -> None:
    stack.wait(
        lambda: stack.get(f"/api/v2/dags/{dag_id}").status_code,
        lambda s: s == 200,
        120,
        f"DAG {dag_id} parsed",
        interval=0.5,
    )


def _run(stack: AirflowStack, dag_id: str) -> str:
    _dag_ready(stack, dag_id)
    r = stack.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
    assert r.status_code in (200, 201), r.text
    return r.json()["dag_run_id"]


def _records(stack: AirflowStack, incident: str) -> list[dict]:
    found = stack.get(f"{API}/escalations", params={"incident": incident}).json()["escalations"]
    return [stack.get(f"{API}/escalations/{r['id']}").json() for r in found]


def _ti(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> dict:
    r = stack.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    return r.json() if r.status_code == 200 else {}


def _settled(stack: AirflowStack) -> None:
    """Every detector has scanned past what happened so far: each API-server process answers
    with its own tick count; wait until the one answering has ticked a few more times (the
    overlap re-read then also happened on the others, which tick at the same interval)."""
    start = stack.get(f"{API}/routes").json()["detector"]["ticks"]
    stack.wait(lambda: stack.get(f"{API}/routes").json()["detector"]["ticks"], lambda t: t >= start + 6, 30, "ticks")


def test_a_failure_without_callback_pages_through_its_route(detect_stack, capsys):
    stack = detect_stack
    run_id = _run(stack, "it_no_callback")
    records = stack.wait(lambda: _records(stack, "it_no_callback.boom"), bool, 120, "the detector's escalation")
    record = records[0]
    ctx = record["context"]
    assert ctx["detected_by"] == "escalation-service" and ctx["kind"] == "task_failed"
    assert ctx["run_id"] == run_id and ctx["task_id"] == "boom" and ctx["try_number"] == 1
    assert ctx["log_url"].startswith(stack.base) and ctx["severity"] == "critical" and ctx["route"] == "no-callback"
    assert record["history"][0]["actor"] == "escalation-detector"
    hooks = stack.wait(
        lambda: [b for p, b in stack.sink.requests if b.get("incident_id") == "it_no_callback.boom"],
        bool,
        30,
        "the webhook at the HTTP sink",
    )
    assert hooks[0]["policy"] == "detected" and hooks[0]["dag"]["run_id"] == run_id
    # the failed run pages its own route kind (the DAG-level default key: the DAG id)
    runs = stack.wait(lambda: _records(stack, "it_no_callback"), bool, 60, "the dag_run_failed escalation")
    assert runs[0]["context"]["kind"] == "dag_run_failed" and runs[0]["context"]["run_id"] == run_id
    _settled(stack)
    # four detectors saw it: one record each, nobody paged twice
    for incident in ("it_no_callback.boom", "it_no_callback"):
        records = _records(stack, incident)
        assert len(records) == 1, [r["id"] for r in records]
    assert len([b for p, b in stack.sink.requests if b.get("incident_id") == "it_no_callback.boom"]) == 1
    # "which route would catch this": REST, CLI and the page
    explained = stack.get(f"{API}/routes/explain", params={"dag_id": "it_no_callback", "task_id": "boom"}).json()
    assert explained["route"]["name"] == "no-callback" and explained["incident_id"] == "it_no_callback.boom"
    assert explained["dag_known"] is True
    tagged = stack.get(f"{API}/routes/explain", params={"dag_id": "it_killed_in_callback", "task_id": "boom"}).json()
    assert tagged["route"]["name"] == "killed"  # matched by the Dag's tags, read from Airflow
    cli = ["--url", stack.base, "--username", "admin", "--password", stack.password("admin")]
    assert main(["routes", "explain", "it_no_callback", "--task-id", "boom", *cli]) == 0
    assert main(["routes", "list", *cli]) == 0
    out = capsys.readouterr().out
    assert "=> 0. no-callback: matches" in out and "incident 'it_no_callback.boom', policy detected" in out
    assert "0. no-callback: task_failed/dag_run_failed of dag_id=it_no_callback -> policy detected" in out
    page = stack.get("/escalation/ui/routes", params={"dag_id": "it_no_callback"})
    assert page.status_code == 200 and 'data-dag-id="it_no_callback"' in page.text and "routes.js" in page.text
    # the same record through the second API server
    other = httpx.get(
        f"{stack.second_api}{API}/escalations",
        params={"incident": "it_no_callback.boom"},
        headers={"Authorization": f"Bearer {stack.token('admin')}"},
        timeout=30,
    )
    assert [r["id"] for r in other.json()["escalations"]] == [record["id"]]


def test_a_failure_with_the_notifier_and_a_route_is_one_escalation(detect_stack):
    stack = detect_stack
    run_id = _run(stack, "it_with_notifier")
    records = stack.wait(lambda: _records(stack, "it_with_notifier.boom"), bool, 120, "the notifier's escalation")
    stack.wait(lambda: _ti(stack, "it_with_notifier", run_id, "boom").get("state"), lambda s: s == "failed", 60, "TI")
    _settled(stack)
    records = _records(stack, "it_with_notifier.boom")
    assert len(records) == 1
    record = records[0]
    assert record["context"]["message"] == "from the notifier"  # the notifier's richer context
    assert "detected_by" not in record["context"]
    assert [h["event"] for h in record["history"]].count("retriggered") == 0, record["history"]
    assert len([b for p, b in stack.sink.requests if b.get("incident_id") == "it_with_notifier.boom"]) == 1


def test_a_worker_killed_inside_its_failure_callback_is_still_paged(detect_stack):
    stack = detect_stack
    run_id = _run(stack, "it_killed_in_callback")
    records = stack.wait(lambda: _records(stack, "it_killed_in_callback.boom"), bool, 180, "the detector's page")
    assert records[0]["context"]["detected_by"] == "escalation-service"
    assert records[0]["context"]["run_id"] == run_id and records[0]["context"]["route"] == "killed"


def test_a_retry_that_succeeds_resolves_the_escalation(detect_stack):
    stack = detect_stack
    run_id = _run(stack, "it_retry_then_ok")
    records = stack.wait(lambda: _records(stack, "it_retry_then_ok.flaky"), bool, 120, "the retry's escalation")
    assert records[0]["context"]["kind"] == "task_up_for_retry" and records[0]["context"]["try_number"] == 1
    resolved = stack.wait(
        lambda: _records(stack, "it_retry_then_ok.flaky"),
        lambda rs: rs and rs[0]["state"] == "resolved",
        120,
        "resolved by the successful retry",
    )
    assert _ti(stack, "it_retry_then_ok", run_id, "flaky")["state"] == "success"
    last = resolved[0]["history"][-1]
    assert last["event"] == "resolve" and last["actor"] == "escalation-detector"
    assert "resolved by the success of it_retry_then_ok.flaky" in json.dumps(last) and "try 2" in json.dumps(last)
    assert len(resolved) == 1


def test_a_missed_deadline_and_a_long_task_page_and_the_success_resolves(detect_stack):
    stack = detect_stack
    run_id = _run(stack, "it_slow")
    late = stack.wait(lambda: _records(stack, "it_slow.deadline"), bool, 120, "the missed deadline's page")
    assert late[0]["context"]["kind"] == "deadline_missed" and late[0]["context"]["run_id"] == run_id
    assert late[0]["context"]["deadline_id"] and late[0]["context"]["route"] == "late"
    long = stack.wait(lambda: _records(stack, "it_slow.sleepy"), bool, 120, "the long task's page")
    assert long[0]["context"]["kind"] == "task_over_duration" and long[0]["context"]["route"] == "long-task"
    assert long[0]["state"] != "resolved"
    stack.wait(lambda: _ti(stack, "it_slow", run_id, "sleepy").get("state"), lambda s: s == "success", 120, "done")
    resolved = stack.wait(
        lambda: _records(stack, "it_slow.sleepy"), lambda rs: rs[0]["state"] == "resolved", 60, "resolved on success"
    )
    assert len(resolved) == 1 and resolved[0]["history"][-1]["actor"] == "escalation-detector"


def test_the_routes_page_explains_a_dag_in_the_browser(detect_stack):
    """The Escalations page links to the failure routes; the page lists them and, for a Dag,
    shows which route would catch a failure and what would happen (headless Chromium)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ui"))
    from ui_support import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        _require(False, f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed (pip install -e '.[test]')")
    stack = detect_stack
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(stack.base + "/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(stack.password("admin"))
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(stack.base + "/", timeout=20_000)
            page.goto(stack.base + "/escalation/ui/")
            page.get_by_test_id("routes-link").click()
            page.wait_for_url("**/escalation/ui/routes", timeout=20_000)
            rows = page.get_by_test_id("route-row")
            rows.first.wait_for(timeout=20_000)
            assert rows.count() == 6
            assert "no-callback" in rows.nth(0).inner_text() and "killed" in rows.nth(2).inner_text()
            page.fill("#x-dag", "it_killed_in_callback")
            page.fill("#x-task", "boom")
            page.click("#x-go")
            outcome = page.get_by_test_id("explain-outcome")
            outcome.wait_for(timeout=20_000)
            assert "Incident it_killed_in_callback.boom under policy detected" in outcome.inner_text()
            routes = page.get_by_test_id("explain-route")
            assert routes.nth(2).get_attribute("data-wins") == "true"
            assert "dag_id 'it_killed_in_callback' does not match 'it_no_callback'" in routes.nth(0).inner_text()
            steps = page.get_by_test_id("explain-steps").inner_text()
            assert "level 1 at +0 min: webhook:/hooks/detected" in steps and "level 2 at +30 min" in steps
        finally:
            browser.close()
    assert not errors, errors
