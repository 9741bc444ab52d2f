"""Drill 1: SIGKILL one of the two API servers while its deliveries are in flight.

Twenty incidents are triggered on server B; B starts sending their level-1 webhooks at once and
the receiver holds every request unanswered, so they are in flight. Then B (its whole process
group) gets SIGKILL: no shutdown runs, nothing is recorded. Server A must take over: every
level 2 (due 3 s after level 1) is claimed and sent by A, and the store settles (B's sends whose
outcome nobody recorded become ``unknown`` when their lease ends, and are not re-sent).

Printed and asserted: nothing lost (every (incident, level, target) reached the receiver);
duplicates at most the deliveries in flight at the kill, each one named. B is started again at
the end; its first sweep must send nothing twice.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from drill_stack import L1_PATHS, L2_DELAY_S, LEASE_S, Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(300)]

INCIDENTS = 20


def test_sigkill_one_api_server_mid_delivery(drill_stack, sink):
    stack = drill_stack
    incidents = [f"kill-{time.time_ns()}-{i:02d}" for i in range(INCIDENTS)]
    ledger = Ledger.of(incidents)
    engines_b = stack.engines_of("api-server-b")
    assert engines_b, "server B started no escalation engine"

    sink.hold.clear()  # requests are accepted and left unanswered: in flight
    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        record_ids = list(pool.map(lambda incident: stack.trigger(incident, stack.base_b), incidents))
    # B sends each level 1 as soon as it wrote it; wait until the receiver has them all
    stack.wait(lambda: len({(b["incident_id"], p) for p, b in sink.requests if b.get("incident_id") in
                            set(incidents)}), lambda n: n == INCIDENTS * len(L1_PATHS), 30,
               "every level 1 at the receiver (held)")
    in_flight = [d for d in stack.deliveries(record_ids) if d["state"] == "sending"]
    in_flight_b = [d for d in in_flight if d["lease_owner"] in engines_b]
    killed_at = time.monotonic()
    rc = stack.kill_component("api-server-b")  # SIGKILL to the process group
    sink.hold.set()
    by_record = {rid: incident for rid, incident in zip(record_ids, incidents)}

    # A takes over: every level 2 is due 3 s after its level 1, and B is gone
    stack.wait(lambda: ledger.complete(sink), lambda done: done, L2_DELAY_S + 60, "every delivery after the kill")
    recovered = time.monotonic() - killed_at
    # let B's orphaned sends reach their lease end and be settled by A's sweep
    rows = stack.wait(lambda: stack.deliveries(record_ids), lambda rows: not [r for r in rows if r["state"] in
                                                                               ("sending", "pending")],
                      LEASE_S + 30, "the outbox settled (no delivery pending or sending)")
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
    explained = {}
    dup_allowed = {(by_record[d["record_id"]], d["level"]) for d in in_flight_b}
    for key in ledger.duplicated:
        if (key[0], key[1]) in dup_allowed:
            explained[key] = "in flight on B at the kill: B's send was held, then re-sent"
    text = report("1 SIGKILL one API server mid-delivery", ledger, explained,
                  in_flight_at_kill=f"{len(in_flight)} sending ({len(in_flight_b)} by server B, exit code {rc})",
                  settled_unknown=f"{len(unknown)} (B's sends nobody recorded: delivered, not re-sent)",
                  all_delivered_after_kill_s=recovered, outbox_settled_after_kill_s=settled,
                  sent_again_by_restarted_B=after - before,
                  trigger_to_kill_s=killed_at - began)
    assert not ledger.lost, text
    assert not ledger.unexpected, text
    assert all(key in explained for key in ledger.duplicated), text
    assert len(ledger.duplicated) <= len(in_flight_b), text
    assert in_flight_b, "nothing was in flight on B at the kill: the drill did not test a kill mid-delivery"
    assert not failed, failed
    assert not level2_by_b, "B sent a level 2 after it was killed?"
    assert {(r["record_id"], r["level"], r["target_key"]) for r in unknown} <= \
        {(d["record_id"], d["level"], d["target_key"]) for d in in_flight_b}, (unknown, in_flight_b)
    assert after == before, "the restarted server B sent something again"
