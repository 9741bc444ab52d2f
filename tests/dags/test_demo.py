"""``make demo`` end to end: ``python -m airflow_escalation.demo --exit`` starts the real stack
(api-server, scheduler, dag-processor, triggerer on 127.0.0.1, SQLite, the example DAGs), fails
``escalation_on_failure``'s task, and must print the whole climb of the spec's policy (on a 120x
clock), the UI address and login, then acknowledge, resolve and exit 0 with every process gone.

The fake-clock variant (``python -m airflow_escalation.demo.fake_clock``) is checked too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_escalation.demo.local_airflow import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_demo_runs_the_real_stack_and_shows_the_climb(tmp_path):
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_escalation.demo",
            "--exit",
            "--speed",
            "120",
            "--port",
            str(port),
            "--home",
            str(tmp_path / "demo"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=360,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]

    base = f"http://127.0.0.1:{port}"
    assert f"Airflow UI    {base}/    login admin / admin" in out
    assert f"Escalations   {base}/plugin/escalations" in out
    assert re.search(rf"This one +{base}/plugin/escalations/escalation/ui/records/[0-9a-f]{{32}}", out)
    assert re.search(rf"One-click +{base}/escalation/act/\S+", out)
    assert "load_orders failed; its on_failure_callback (EscalationNotifier) handed the incident" in out
    # no terminal: the demo says it acts itself, and never asks the reader to act first
    assert "The demo now acknowledges and resolves it" in out and "in the UI:" not in out

    # the ladder in order: level 1 and its two reminders, level 2, level 3, then the acknowledgement
    steps = [
        "level 1 paged \u2192 user:team-lead, channel:#alerts",
        "Reminder 1 to level 1 \u2192",
        "Reminder 2 to level 1 \u2192",
        "escalated to level 2 \u2192 user:eng-manager, schedule:oncall-primary",
        "escalated to level 3 \u2192 user:director, email:leadership@company.com",
        "Acknowledged by admin",
        "Resolved by admin",
    ]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), list(zip(steps, positions))
    # what the local receivers got, through the policy's targets' connections
    assert len(re.findall(r"webhook  POST /team-lead ", out)) == 3
    assert len(re.findall(r"webhook  POST /#alerts ", out)) == 3
    assert "webhook  POST /eng-manager" in out and "webhook  POST /oncall-primary" in out
    assert "webhook  POST /director" in out
    assert re.search(r"e-mail   to leadership@company\.com +\[ESCALATION L3\]", out)
    assert (
        "10 notifications sent (level 1: 6, level 2: 2, level 3: 2); the webhook receiver got 9, "
        "the SMTP server 1; state resolved."
    ) in out

    # level 2 on time: 15 policy minutes at 120x is 7.5 s after the escalation opened
    climbed = re.search(r"\+ *([\d.]+)s \( *[\d.]+ policy min\)  Not acknowledged: escalated to level 2", out)
    assert climbed and 7.4 <= float(climbed.group(1)) < 11, climbed and climbed.group(0)

    # every process of the stack has stopped
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/api/v2/monitor/health", timeout=2)


def test_fake_clock_demo_prints_the_spec_example(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "airflow_escalation.demo.fake_clock", "--db", str(tmp_path / "esc.db")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "alice acknowledged customers-freshness" in out and "bob resolved payments-nulls" in out
    assert "Stats: 3 escalations" in out


def test_demo_policies_speed_up_the_clock_and_wire_every_target():
    from airflow_escalation.demo import POLICY_FILE
    from airflow_escalation.demo.policies import demo_policies

    block = demo_policies(POLICY_FILE, speed=60, webhook_conn_id="hook", smtp_conn_id="mail")["escalation"]
    assert "store" not in block  # the service keeps escalations in the metadata database
    policy = block["policies"][0]
    assert policy["cooldown_minutes"] == 1
    assert [(lv["delay_minutes"], lv.get("repeat_interval_minutes")) for lv in policy["levels"]] == [
        (0, 5 / 60),
        (15 / 60, None),
        (30 / 60, None),
    ]
    wiring = [(t["identifier"], t["conn_id"]) for lv in policy["levels"] for t in lv["targets"]]
    assert wiring == [
        ("team-lead", "hook"),
        ("#alerts", "hook"),
        ("eng-manager", "hook"),
        ("oncall-primary", "hook"),
        ("director", "hook"),
        ("leadership@company.com", "mail"),
    ]


def test_leftover_processes_of_a_killed_demo_are_stopped(tmp_path):
    from airflow_escalation.demo.local_airflow import PIDS_FILE, stop_leftovers

    sleeper = "import time; time.sleep(120)"
    # an orphan of a killed demo ("airflow" on its command line), and an unrelated process
    orphan = subprocess.Popen([sys.executable, "-c", sleeper, "airflow", "scheduler"], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
    try:
        (tmp_path / PIDS_FILE).write_text(f"{orphan.pid}\n{other.pid}\n999999999\n")
        assert stop_leftovers(tmp_path, wait=10) == [orphan.pid]
        assert orphan.wait(timeout=10) is not None
        assert other.poll() is None  # a recycled pid is left alone
    finally:
        for proc in (orphan, other):
            proc.kill()
            proc.wait()


def test_timeline_prints_each_step_once_in_time_order(capsys):
    from datetime import datetime, timedelta, timezone

    from airflow_escalation.demo.timeline import Timeline

    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)

    def event(seconds, name, actor="system", level=1, state="active", **details):
        entry = {
            "event": name,
            "at": (t0 + timedelta(seconds=seconds)).isoformat(),
            "actor": actor,
            "level": level,
            "state": state,
        }
        return {**entry, "details": details} if details else entry

    timeline = Timeline(speed=60)
    record = {
        "id": "r1",
        "history": [
            event(0, "triggered", "airflow-escalation"),
            event(0, "start"),
            event(0, "notified", round=0, targets=["user:lead"]),
        ],
    }
    # a receipt of level 1 that came in before the record was read, one of another record, and
    # one that came in after (it waits for the next read)
    timeline.receipts += [
        (t0 + timedelta(seconds=0.2), "webhook  POST /lead", "r1"),
        (t0 + timedelta(seconds=0.3), "webhook  POST /other", "r2"),
    ]
    received = timeline.received()
    timeline.receipts.append((t0 + timedelta(seconds=15.1), "webhook  POST /manager", "r1"))
    timeline.print_new(record, received)
    record["history"] += [
        event(15, "escalate"),
        event(15, "escalate_success", level=2),
        event(15, "notified", level=2, round=0, targets=["user:manager"]),
        event(20, "escalate", "alice", 2),
        event(20, "escalate_success", "alice", 3),
        event(21, "acknowledge", "bob", 3, "acknowledged", note="on it"),
    ]
    timeline.print_new(record, timeline.received())
    timeline.print_new(record, timeline.received())  # nothing new: nothing printed

    lines = [line.split(")", 1)[1].strip() for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        "Triggered by airflow-escalation: level 1 paged \u2192 user:lead",
        "webhook  POST /lead",
        "Not acknowledged: escalated to level 2 \u2192 user:manager",
        "webhook  POST /manager",
        "Escalated to level 3 by alice",
        "Acknowledged by bob (Note: on it)",
    ]
