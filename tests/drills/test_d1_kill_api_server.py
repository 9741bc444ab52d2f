"""Drill 1: SIGKILL one of the two API servers while its deliveries are in flight.

Twenty incidents (policy ``drill_kill``: level 2 twenty seconds after level 1) are triggered
through server B, eight callers at once. B sends each level-1 webhook as soon as it wrote it,
and the receiver holds every request unanswered, so all forty are in flight (on the wire, the
sender waiting for the answer). Then B's process group gets SIGKILL (no shutdown code runs, no
outcome is recorded) and the receiver is released. Server A must do the rest: every level 2,
and settle B's orphaned sends.

Printed and asserted: nothing lost (every (incident, level, target) reached the receiver);
duplicates at most the deliveries B had in flight at the kill, each one named. B's sends whose
outcome nobody recorded end ``unknown`` once their lease runs out (not re-sent). B is started
again at the end; its first sweep must send nothing twice.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from drill_stack import KILL_L2_DELAY_S, L1_PATHS, LEASE_S, Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]

INCIDENTS = 20


def test_sigkill_one_api_server_mid_delivery(drill_stack, sink):
    stack = drill_stack
    prefix = f"kill-{time.time_ns()}-"
    incidents = [f"{prefix}{i:02d}" for i in range(INCIDENTS)]
    ledger = Ledger.of(incidents)
    engines_b = stack.engines_of("api-server-b")
    assert engines_b, "server B started no escalation engine"

    def held_level1() -> int:
        return len(
            {
                (body.get("incident_id"), path)
                for path, body in list(sink.requests)
                if body.get("level") == 1 and str(body.get("incident_id", "")).startswith(prefix)
            }
        )

    sink.hold.clear()  # requests are accepted and left unanswered: in flight
    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda incident: stack.trigger(incident, stack.base_b, "drill_kill"), incidents))
    stack.wait(held_level1, lambda n: n == INCIDENTS * len(L1_PATHS), 60, "every level-1 request held")
    rc = stack.kill_component("api-server-b")  # SIGKILL to the process group
    killed_at = time.monotonic()
    at_kill = stack.deliveries_of(prefix)  # B is dead: its rows stay as they are until their leases end
    sink.hold.set()
    in_flight = [d for d in at_kill if d["state"] == "sending"]  # A's sweep may have taken a few
    in_flight_b = [d for d in in_flight if d["lease_owner"] in engines_b]

    # the forty held requests were received: ledger.complete() needs every level 2, by A
    stack.wait(lambda: ledger.complete(sink), lambda done: done, KILL_L2_DELAY_S + 60, "every delivery after the kill")
    recovered = time.monotonic() - killed_at
    rows = stack.wait(
        lambda: stack.deliveries_of(prefix),
        lambda rows: not [r for r in rows if r["state"] in ("sending", "pending")],
        LEASE_S + 60,
        "the outbox settled (no delivery pending or sending)",
    )
    settled = time.monotonic() - killed_at
    unknown = [r for r in rows if r["state"] == "unknown"]
    failed = [r for r in rows if r["state"] == "failed"]
    level2_by_b = [r for r in rows if r["level"] == 2 and r["lease_owner"] in engines_b]

    # B comes back: its start-up sweep finds nothing left to do
    before = sum(ledger.count(sink).received.values())
    stack.start_api_server("api-server-b")
    time.sleep(2)
    after = sum(ledger.count(sink).received.values())

    ledger.count(sink)
    in_flight_keys = {(d["incident_id"], d["level"], "/" + d["target_key"].split(":/", 1)[-1]) for d in in_flight_b}
    explained = {key: "in flight on B at the kill" for key in ledger.duplicated if key in in_flight_keys}
    text = report(
        "1 SIGKILL one API server mid-delivery",
        ledger,
        explained,
        in_flight_at_kill=f"{len(in_flight)} sending, {len(in_flight_b)} of them by B (B exit code {rc})",
        ended_unknown=f"{len(unknown)} (B's sends nobody recorded; not re-sent)",
        all_delivered_after_kill_s=recovered,
        outbox_settled_after_kill_s=settled,
        sent_again_by_restarted_B=after - before,
        trigger_to_kill_s=killed_at - began,
    )
    assert in_flight_b and len(in_flight) == INCIDENTS * len(L1_PATHS), f"in flight at the kill: {in_flight}"
    assert not ledger.lost, text
    assert not ledger.unexpected, text
    assert all(key in explained for key in ledger.duplicated), text
    assert not failed, failed
    assert not level2_by_b, "B sent a level 2 after it was killed?"
    in_flight_rows = {(d["record_id"], d["level"], d["target_key"]) for d in in_flight_b}
    assert {(r["record_id"], r["level"], r["target_key"]) for r in unknown} <= in_flight_rows, (unknown, in_flight_b)
    assert after == before, "the restarted server B sent something again"
