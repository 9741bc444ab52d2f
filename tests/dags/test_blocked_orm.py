"""The notifier, the spool and the trigger with ORM access blocked, as in a task process, the
dag-processor or the triggerer (``block_orm_access()`` cannot be undone: it runs in a subprocess).

``dag.test()`` does not block the ORM; the real-stack test does (real components); this test
pins it down in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import asyncio, json, os, socket, sys
    from dataclasses import asdict
    from types import SimpleNamespace

    import airflow.settings  # noqa: F401 - block_orm_access() only acts on a loaded settings module
    from airflow.sdk.execution_time.supervisor import block_orm_access

    block_orm_access()
    from airflow import settings
    from airflow.configuration import conf
    out = {"sql_alchemy_conn": conf.get("database", "sql_alchemy_conn")}
    try:
        settings.Session()
        out["session"] = "allowed"
    except RuntimeError as exc:
        out["session"] = f"blocked: {exc}"

    # imported only now: nothing of ours needs the metadata database, even at import time
    from airflow_escalation.notifications.escalation import EscalationNotifier
    from airflow_escalation.spool import EscalationSpool
    from airflow_escalation.triggers.escalation import EscalationStateTrigger

    class TI:
        dag_id, task_id, run_id, try_number, map_index = "blocked_etl", "load", "manual__1", 1, -1
        log_url = "http://localhost:8080/dags/blocked_etl/runs/manual__1/tasks/load"

    def ctx(task_id="load"):
        ti = TI(); ti.task_id = task_id
        return {"ti": ti, "dag": SimpleNamespace(dag_id="blocked_etl"), "run_id": "manual__1",
                "exception": ValueError("boom")}

    live = os.environ["AIRFLOW_CONN_ESCALATION_DEFAULT"]
    notifier = EscalationNotifier(policy_name="production_critical")
    notifier(ctx())
    out["sent"] = asdict(notifier.last_handoff)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ["AIRFLOW_CONN_ESCALATION_DEFAULT"] = json.dumps(
        {**json.loads(live), "host": f"http://127.0.0.1:{port}"})
    notifier(ctx("second"))
    out["spooled"] = asdict(notifier.last_handoff)
    out["waiting"] = len(EscalationSpool())

    os.environ["AIRFLOW_CONN_ESCALATION_DEFAULT"] = live
    asyncio.run(notifier.async_notify(ctx("third")))  # the triggerer's path; drains the spool first
    out["async"] = asdict(notifier.last_handoff)
    out["waiting_after"] = len(EscalationSpool())

    async def wait():
        trigger = EscalationStateTrigger(out["sent"]["record_id"], ["active"], poll_interval=0.2)
        return (await anext(trigger.run())).payload
    out["trigger"] = asyncio.run(wait())
    print("RESULT " + json.dumps(out, default=str))
""")


def test_notifier_spool_and_trigger_work_with_the_orm_blocked(service, clean_spool, dag_env, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW_CONN_ESCALATION_DEFAULT": json.dumps(service.connection()),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-4000:] + done.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["sql_alchemy_conn"] == "airflow-db-not-allowed:///"
    assert out["session"].startswith("blocked: Direct database access via the ORM is not allowed")
    assert out["sent"]["outcome"] == "sent" and out["sent"]["record_id"]
    assert out["spooled"]["outcome"] == "spooled" and out["waiting"] == 1
    assert out["async"]["outcome"] == "sent" and out["waiting_after"] == 0
    assert out["trigger"]["status"] == "success" and out["trigger"]["state"] == "active"
    with service.client() as client:
        incidents = {r["incident_id"] for r in client.list_escalations(dag_id="blocked_etl")["escalations"]}
    assert incidents == {"blocked_etl.load", "blocked_etl.second", "blocked_etl.third"}
