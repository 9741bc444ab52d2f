"""Drill 2: a webhook receiver that answers 500, then hangs, then resets connections.

Ten incidents (five through each API server) are triggered while the receiver answers every
request with HTTP 500; it then hangs for 11 s (reads the request, never answers: each attempt
ends at the 10 s attempt limit) and then drops connections with a TCP reset, before it recovers. Level 2
falls due in the middle of it. The outbox retries each delivery after 1 s, 2 s, 4 s, 4 s ...
(the drill policy's backoff) and must deliver every (incident, level, target) once the receiver
is back: nothing lost, nothing accepted twice, every delivery ``sent`` in the store.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from drill_stack import Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]

INCIDENTS = 10
PHASES = (("error", 3.0), ("hang", 11.0), ("reset", 3.0))
# attempts one delivery can make in the 17 s fault window with a 1-2-4-4 s backoff and a 10 s
# hang: at most 6; a retry at every 1 s sweep (no backoff) would make a dozen
MAX_ATTEMPTS_IN_WINDOW = 8


def test_receiver_500_then_hang_then_reset(drill_stack, sink):
    stack = drill_stack
    incidents = [f"faults-{time.time_ns()}-{i:02d}" for i in range(INCIDENTS)]
    ledger = Ledger.of(incidents)
    sink.fault = "error"
    started = time.monotonic()
    record_ids = [
        stack.trigger(incident, stack.base if i % 2 else stack.base_b) for i, incident in enumerate(incidents)
    ]
    fault_starts = {}
    for fault, seconds in PHASES:
        sink.fault = fault
        fault_starts[fault] = time.monotonic() - started
        time.sleep(seconds)
    sink.fault = None
    recovered_at = time.monotonic()

    stack.wait(lambda: ledger.complete(sink), lambda done: done, 60, "every delivery after the receiver recovered")
    delivered_after = time.monotonic() - recovered_at
    rows = stack.wait(
        lambda: stack.deliveries(record_ids),
        lambda rows: all(r["state"] == "sent" for r in rows),
        30,
        "every delivery recorded sent",
    )

    attempts = defaultdict(list)
    for path, body, outcome, at in list(sink.attempts):
        if body.get("incident_id") in set(incidents):
            attempts[(body["incident_id"], body["level"], path)].append((outcome, at))
    outcomes = defaultdict(int)
    for seen in attempts.values():
        for outcome, _ in seen:
            outcomes[outcome] += 1
    gaps = sorted({round(b[1] - a[1]) for seen in attempts.values() for a, b in zip(seen, seen[1:])})
    in_window = max(len([1 for outcome, _ in seen if outcome != "ok"]) for seen in attempts.values())
    ledger.count(sink)
    text = report(
        "2 receiver answers 500, hangs, resets",
        ledger,
        receiver_saw=dict(outcomes),
        attempts_per_delivery_in_store=f"min {min(r['attempts'] for r in rows)}, "
        f"max {max(r['attempts'] for r in rows)}",
        seconds_between_attempts_seen=gaps,
        all_delivered_after_recovery_s=delivered_after,
    )
    assert not ledger.lost, text
    assert not ledger.duplicated, text
    assert not ledger.unexpected, text
    assert {"error", "hang", "reset"} <= set(outcomes), f"a fault was never met: {dict(outcomes)}"
    assert in_window <= MAX_ATTEMPTS_IN_WINDOW, f"{in_window} failed attempts of one delivery: no backoff?"
    assert max(r["attempts"] for r in rows) > 1
