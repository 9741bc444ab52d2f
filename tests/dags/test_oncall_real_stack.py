"""On call on a real Airflow stack (api-server with two workers, scheduler, dag-processor as
separate processes, SQLite, LocalExecutor) and a local HTTP sink behind an Airflow connection.

A DAG fails while a silence on it is active: the escalation is recorded as suppressed, names the
silence, and pages nobody. The silence is expired over REST; the same failure then pages the
person on call for ``schedule:oncall-primary`` -- alice, through her webhook contact method and
the ``oncall_sink`` connection -- and the delivery shows ``schedule:oncall-primary → alice``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from airflow_escalation.demo.sinks import HttpSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from airflow_stack import AirflowStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

API = "/escalation/api/v1"
INCIDENT = "it_oncall.extract"

POLICIES_YAML = """\
escalation:
  default_policy: oncall
  policies:
    - name: oncall
      levels:
        - level: 1
          targets: [{type: schedule, identifier: oncall-primary}]
users:
  - id: alice
    name: Alice Martin
    contacts:
      - {type: webhook, address: /pager/alice, conn_id: oncall_sink}
      - {type: phone, address: "+49 170 0000001"}
  - id: bob
    contacts: [{type: webhook, address: /pager/bob, conn_id: oncall_sink}]
schedules:
  - name: oncall-primary
    time_zone: Europe/Berlin
    layers:
      - name: always-alice
        rotation: {participants: [alice], shift_unit: weeks, start: 2026-01-05}
    fallback: bob
"""

FAILING_DAG = """
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_escalation.notifications.escalation import EscalationNotifier

with DAG(dag_id="it_oncall", schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
         default_args={"on_failure_callback": EscalationNotifier(policy_name="oncall", severity="high")}):

    @task
    def extract() -> None:
        raise RuntimeError("source is down")

    extract()
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("oncall-stack-home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "it_oncall.py").write_text(FAILING_DAG)
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
            "AIRFLOW__API__BASE_URL": stack.base,
            "AIRFLOW_CONN_ESCALATION_DEFAULT": json.dumps(stack.escalation_connection()),
            "AIRFLOW_CONN_ONCALL_SINK": json.dumps(
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
        yield stack
    finally:
        stack.stop_all()
        sink.stop()


def _fail_once(stack: AirflowStack) -> str:
    r = stack.post("/api/v2/dags/it_oncall/dagRuns", json={"logical_date": None, "conf": {}})
    assert r.status_code in (200, 201), r.text
    return r.json()["dag_run_id"]


def _record_of_run(stack: AirflowStack, run_id: str) -> dict | None:
    found = stack.get(f"{API}/escalations", params={"incident": INCIDENT}).json()["escalations"]
    for record in found:
        if record["context"].get("run_id") == run_id:
            return stack.get(f"{API}/escalations/{record['id']}").json()
    return None


def test_a_failure_during_a_silence_pages_nobody_and_after_it_pages_the_person_on_call(stack):
    stack.wait(lambda: stack.get("/api/v2/dags/it_oncall").status_code, lambda s: s == 200, 120, "it_oncall parsed")
    on_call = stack.get(f"{API}/schedules/oncall-primary/oncall").json()
    assert on_call["user"] == "alice" and on_call["source"] == "layer:always-alice"

    made = stack.post(
        f"{API}/silences",
        json={"matchers": {"dag_id": "it_oncall"}, "duration_minutes": 30, "comment": "vendor outage"},
    )
    assert made.status_code == 201, made.text
    silence = made.json()
    # visible through every API-server worker (two engines, one store)
    for _ in range(4):
        assert [s["id"] for s in stack.get(f"{API}/silences").json()["silences"]] == [silence["id"]]

    silenced_run = _fail_once(stack)
    suppressed = stack.wait(lambda: _record_of_run(stack, silenced_run), bool, 120, "the suppressed escalation")
    assert suppressed["state"] == "cancelled" and suppressed["deliveries"] == []
    assert suppressed["metadata"]["suppressed_by"]["id"] == silence["id"]
    assert [e["event"] for e in suppressed["history"]] == ["triggered", "suppressed", "cancel"]
    assert not [p for p, _ in stack.sink.requests if p.startswith("/pager/")]

    expired = stack.post(f"{API}/silences/{silence['id']}/expire", json={})
    assert expired.status_code == 200 and expired.json()["status"] == "expired", expired.text

    paged_run = _fail_once(stack)
    record = stack.wait(lambda: _record_of_run(stack, paged_run), bool, 120, "the escalation after the silence")
    delivered = stack.wait(
        lambda: stack.get(f"{API}/escalations/{record['id']}").json()["deliveries"],
        lambda ds: ds and ds[0]["state"] == "sent",
        60,
        "the delivery to the person on call",
    )
    target = delivered[0]["target"]
    assert (target["type"], target["identifier"]) == ("schedule", "oncall-primary")
    assert delivered[0]["resolved_to"] == "schedule:oncall-primary → alice"
    pages = stack.wait(
        lambda: [(p, b) for p, b in stack.sink.requests if p.startswith("/pager/")], bool, 30, "alice's webhook"
    )
    assert [p for p, _ in pages] == ["/pager/alice"]
    assert pages[0][1]["incident_id"] == INCIDENT and pages[0][1]["record_id"] == record["id"]
    assert not list((stack.home / "spool").glob("*.json")), "a hand-off was spooled"
    if os.environ.get("ESCALATION_TEST_VERBOSE"):
        print(json.dumps(pages[0][1], indent=2)[:2000])
