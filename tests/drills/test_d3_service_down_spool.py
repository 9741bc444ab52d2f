"""Drill 3: the escalation service is down when the failure callback runs; it comes back later.

Server B, the one ``escalation_default`` points at, is stopped. ``drill_failing`` runs (Airflow
itself runs on server A): ``load`` fails and its ``on_failure_callback`` cannot reach the
service, so it writes the trigger to the spool on the worker (``[escalation] spool_dir``) and
returns. No escalation exists yet; the run's ``wait`` sensor cannot reach the service either and
fails its try. Then B starts again: the sensor's next try (every 10 s) drains the worker's spool
before anything else, so the escalation is created and delivered, and the sensor waits on it
until the drill resolves it. Nothing lost, nothing twice.
"""

from __future__ import annotations

import signal
import time

import pytest

from drill_stack import Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]


def spooled(stack) -> list:
    return sorted(stack.spool_dir.glob("*.json")) if stack.spool_dir.exists() else []


def test_service_down_when_the_callback_runs(drill_stack, sink):
    stack = drill_stack
    stack.kill_component("api-server-b", signal.SIGTERM)
    try:
        run_id = stack.trigger_dag("drill_failing")
        incident = f"drill_failing.load.{run_id}"
        ledger = Ledger.of([incident])
        stack.wait(lambda: stack.ti_state("drill_failing", run_id, "load"), lambda s: s == "failed", 180, "load failed")
        entries = stack.wait(lambda: spooled(stack), bool, 30, "the hand-off in the spool")
        spooled_text = entries[0].read_text()
        assert incident in spooled_text, spooled_text[:500]
        assert stack.record(incident) is None, "escalated although the service was down?"
        down_for = 3.0  # the service stays down a little longer (the sensor's polls fail meanwhile)
        time.sleep(down_for)
    finally:
        restarted = time.monotonic()
        stack.start_api_server("api-server-b")
    up_after = time.monotonic() - restarted

    record = stack.wait(lambda: stack.record(incident), bool, 120, "the spooled escalation created")
    created_after = time.monotonic() - restarted
    stack.wait(lambda: ledger.complete(sink), lambda done: done, 60, "its deliveries")
    delivered_after = time.monotonic() - restarted
    assert not spooled(stack), f"still spooled: {spooled(stack)}"
    dead = stack.spool_dir / "dead"
    assert not (dead.exists() and any(dead.iterdir())), f"refused for good: {list(dead.iterdir())}"
    assert record["context"]["run_id"] == run_id and record["context"]["exception"]
    time.sleep(1)
    ledger.count(sink)
    text = report(
        "3 service down when the failure callback runs",
        ledger,
        spooled_entries=len(entries),
        server_B_healthy_after_s=up_after,
        escalation_created_after_restart_s=created_after,
        delivered_after_restart_s=delivered_after,
    )
    assert not ledger.lost, text
    assert not ledger.duplicated, text
    # the sensor found the spooled escalation: resolving it ends the wait (a starved triggerer
    # on a loaded machine may take a while to report it)
    assert stack.call("POST", f"/escalation/api/v1/escalations/{record['id']}/resolve").status_code == 200
    stack.wait(
        lambda: stack.ti_state("drill_failing", run_id, "wait"),
        lambda s: s == "success",
        180,
        "the sensor after the resolve",
    )
