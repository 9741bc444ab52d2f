"""Drill 4: PostgreSQL, the metadata database and the escalation store, restarts mid-run.

The drill's own cluster (never the shared server) holds Airflow's metadata and the escalation
tables. Ten incidents are triggered (half through each API server); once their level 1 is at
the receiver, PostgreSQL is restarted with ``pg_ctl restart -m fast`` (every session cut, as in a
failover) while their level 2 falls due. Both engines must recover on their own: every level 2
is delivered, nothing twice. Ten more incidents are triggered right after the restart (a caller
retries a 503, as the hook and the spool do) and must be delivered too. Which Airflow
components exited within 8 s of the restart is printed (Airflow's scheduler, dag-processor and
triggerer do exit on a cut connection; that is Airflow's behaviour, their supervisor restarts
them); the drill then restarts those three so the stack stays usable. The two API servers must
survive: the escalation service reconnects by itself.
"""

from __future__ import annotations

import time

import pytest

from drill_stack import L1_PATHS, Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]

INCIDENTS = 10
SETTLE_S = 8.0  # how long after the restart the components' fate is read


def trigger_retrying(stack, incident: str, base: str) -> int:
    """Trigger; on a 5xx or a cut connection try again (as a caller would); return the refusals."""
    refused = 0
    deadline = time.monotonic() + 60
    while True:
        try:
            r = stack.call(
                "POST",
                "/escalation/api/v1/escalations",
                base,
                json={"incident_id": incident, "context": {"severity": "critical"}, "policy_name": "drill"},
            )
            if r.status_code in (200, 201):
                return refused
            assert r.status_code >= 500, r.text
        except Exception:
            pass
        refused += 1
        assert time.monotonic() < deadline, f"the service refused {incident} for 60 s after the restart"
        time.sleep(0.5)


def test_postgres_restarts_mid_run(drill_stack, sink):
    stack = drill_stack
    before = [f"pg-before-{time.time_ns()}-{i:02d}" for i in range(INCIDENTS)]
    after = [f"pg-after-{time.time_ns()}-{i:02d}" for i in range(INCIDENTS)]
    ledger = Ledger.of(before + after)
    for i, incident in enumerate(before):
        stack.trigger(incident, stack.base if i % 2 else stack.base_b)
    level1 = Ledger.of(before, [(1, path) for path in L1_PATHS])
    stack.wait(lambda: level1.complete(sink), lambda done: done, 30, "level 1 before the restart")
    outage = stack.pg.restart()  # level 2 of every incident falls due about now
    restarted_at = time.monotonic()
    refused = sum(
        trigger_retrying(stack, incident, stack.base if i % 2 else stack.base_b) for i, incident in enumerate(after)
    )
    # Airflow's own components may exit on the cut connections: not checked while waiting
    stack.wait(lambda: ledger.complete(sink), lambda done: done, 90, "every delivery after the restart", check=False)
    delivered_after = time.monotonic() - restarted_at

    time.sleep(max(0.0, restarted_at + SETTLE_S - time.monotonic()))
    died = sorted(
        name for name, (proc, _) in stack.components.items() if proc.poll() is not None and name not in stack.stopped
    )
    if stack.server is not None and stack.server.poll() is not None:
        died.append("api-server (A)")
    # Airflow's scheduler, dag-processor and triggerer may also exit later, at their next use
    # of a cut connection: start all three afresh so the other drills get a usable stack
    for name in ("dag-processor", "scheduler", "triggerer"):
        stack.restart_component(name)
    ledger.count(sink)
    text = report(
        "4 PostgreSQL restarted mid-run",
        ledger,
        restart_took_s=outage,
        triggers_refused_then_retried=refused,
        all_delivered_after_restart_s=delivered_after,
        components_that_died=died or "none",
    )
    assert not ledger.lost, text
    assert not ledger.duplicated, text
    assert not ledger.unexpected, text
    assert not {"api-server (A)", "api-server-b"} & set(died), text
