"""The local spool: atomic entries, FIFO, exclusive claims, stale claims, dead letters, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation.spool import DEAD, RETRY, SENT, EscalationSpool


def _trigger(n: int) -> dict:
    return {"incident_id": f"inc-{n}", "context": {"n": n}}


def test_put_is_atomic_and_fifo(tmp_path):
    spool = EscalationSpool(tmp_path / "spool")
    for n in range(5):
        spool.put("trigger", _trigger(n), conn_id="escalation_default", error="down")
    names = os.listdir(spool.directory)
    assert not [n for n in names if n.endswith(".tmp")]
    entries = spool.entries()
    assert [e.request["incident_id"] for e in entries] == [f"inc-{n}" for n in range(5)]
    assert entries[0].kind == "trigger" and entries[0].attempts == 1 and entries[0].last_error == "down"
    assert entries[0].created_at.tzinfo is not None
    data = json.loads(entries[0].path.read_text())
    assert data["version"] == 1 and data["conn_id"] == "escalation_default"


def test_drain_sends_in_order_and_deletes(tmp_path):
    spool = EscalationSpool(tmp_path)
    for n in range(4):
        spool.put("trigger", _trigger(n), conn_id="c")
    seen = []
    report = spool.drain(lambda e: (seen.append(e.incident_id), (SENT, "ok"))[1])
    assert seen == ["inc-0", "inc-1", "inc-2", "inc-3"]
    assert (report.sent, report.left, report.stopped) == (4, 0, "")
    assert spool.pending() == []


def test_drain_stops_at_the_first_transient_failure_and_counts_what_is_left(tmp_path):
    spool = EscalationSpool(tmp_path)
    for n in range(3):
        spool.put("trigger", _trigger(n), conn_id="c")
    report = spool.drain(lambda e: (RETRY, "connection refused"))
    assert report.stopped == "unavailable" and report.retried == 1 and report.left == 3
    assert report.blocked_incidents == {"inc-0", "inc-1", "inc-2"}
    first = spool.entries()[0]
    assert first.incident_id == "inc-0" and first.attempts == 2 and first.last_error == "connection refused"


def test_a_sender_that_raises_counts_as_transient(tmp_path):
    spool = EscalationSpool(tmp_path)
    spool.put("trigger", _trigger(0), conn_id="c")

    def boom(entry):
        raise RuntimeError("oops")

    report = spool.drain(boom)
    assert report.stopped == "unavailable" and "RuntimeError: oops" in report.last_error
    assert len(spool) == 1


def test_permanent_failures_go_to_dead_with_the_reason(tmp_path):
    spool = EscalationSpool(tmp_path)
    spool.put("trigger", _trigger(0), conn_id="c")
    spool.put("trigger", _trigger(1), conn_id="c")
    report = spool.drain(
        lambda e: (DEAD, "HTTP 404: policy 'nope' not found") if e.incident_id == "inc-0" else (SENT, "ok")
    )
    assert (report.dead, report.sent, report.left) == (1, 1, 0)
    (dead,) = spool.dead_entries()
    data = json.loads(dead.read_text())
    assert data["request"]["incident_id"] == "inc-0" and "policy 'nope'" in data["dead_reason"]


def test_entries_older_than_max_age_are_buried_not_retried_forever(tmp_path):
    spool = EscalationSpool(tmp_path, max_age=timedelta(hours=1))
    spool.put("trigger", _trigger(0), conn_id="c", created_at=datetime.now(timezone.utc) - timedelta(hours=2))
    spool.put("trigger", _trigger(1), conn_id="c")
    report = spool.drain(lambda e: (RETRY, "down"))
    # the expired one is buried and the drain goes on to the next, which is kept
    assert report.dead == 1 and report.retried == 1 and report.left == 1
    assert "max age" in json.loads(spool.dead_entries()[0].read_text())["dead_reason"]


def test_budget_stops_the_drain(tmp_path):
    spool = EscalationSpool(tmp_path)
    for n in range(10):
        spool.put("trigger", _trigger(n), conn_id="c")

    def slow(entry):
        time.sleep(0.05)
        return SENT, "ok"

    report = spool.drain(slow, budget_seconds=0.12)
    assert report.stopped == "budget" and 2 <= report.sent <= 4 and report.left == 10 - report.sent


def test_two_drainers_never_send_the_same_entry(tmp_path):
    spool = EscalationSpool(tmp_path)
    for n in range(200):
        spool.put("trigger", _trigger(n), conn_id="c")
    sent: list[str] = []
    lock = threading.Lock()

    def send(entry):
        with lock:
            sent.append(entry.incident_id)
        time.sleep(0.0005)
        return SENT, "ok"

    threads = [
        threading.Thread(target=lambda: EscalationSpool(tmp_path).drain(send, budget_seconds=30)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(f"inc-{n}" for n in range(200))  # each exactly once
    assert spool.pending() == []


def test_a_stale_claim_is_released_and_retried(tmp_path):
    spool = EscalationSpool(tmp_path, stale_claim_seconds=0.2)
    path = spool.put("trigger", _trigger(0), conn_id="c")
    claimed = spool.claim(path)
    assert claimed is not None and spool.pending() == []  # a fresh claim is left alone
    assert spool.claim(path) is None  # and cannot be taken twice
    old = time.time() - 10
    os.utime(claimed, (old, old))  # its drainer was killed long ago
    (released,) = spool.pending()
    assert released.name == path.name
    assert spool.drain(lambda e: (SENT, "ok")).sent == 1


def test_unreadable_entries_are_buried(tmp_path):
    spool = EscalationSpool(tmp_path)
    (tmp_path / "00000000000000000001-1-aaaa.json").write_text("{not json")
    report = spool.drain(lambda e: (SENT, "ok"))
    assert report.dead == 1 and len(spool.dead_entries()) == 1


def test_default_dir_follows_the_config_then_airflow_home(tmp_path, monkeypatch):
    from airflow_escalation.spool import default_spool_dir

    monkeypatch.setenv("AIRFLOW__ESCALATION__SPOOL_DIR", str(tmp_path / "configured"))
    assert default_spool_dir() == tmp_path / "configured"
    monkeypatch.delenv("AIRFLOW__ESCALATION__SPOOL_DIR")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert default_spool_dir() == tmp_path / "home" / "escalation_spool"


def test_cli_lists_entries(tmp_path):
    spool = EscalationSpool(tmp_path)
    spool.put("trigger", _trigger(7), conn_id="escalation_default", error="refused")
    spool.put_dead("resolve", {"incident_id": "inc-9"}, conn_id="c", reason="HTTP 422")
    # the alias of `airflow escalation spool list`, --dir before the command as it always took it
    done = subprocess.run(
        [sys.executable, "-m", "airflow_escalation.spool", "--dir", str(tmp_path), "list", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    waiting, dead = json.loads(done.stdout)["entries"]
    assert waiting["status"] == "waiting" and waiting["incident"] == "inc-7" and waiting["attempts"] == 1
    assert waiting["conn"] == "escalation_default" and waiting["error"] == "refused"
    assert dead["status"] == "dead" and dead["incident"] == "inc-9" and "HTTP 422" in dead["error"]


@pytest.mark.asyncio
async def test_async_drain(tmp_path):
    spool = EscalationSpool(tmp_path)
    for n in range(3):
        spool.put("trigger", _trigger(n), conn_id="c")

    async def send(entry):
        return (SENT, "ok") if entry.incident_id != "inc-2" else (RETRY, "down")

    report = await spool.adrain(send)
    assert report.sent == 2 and report.stopped == "unavailable" and report.left == 1
