"""Drill 5: the triggerer is restarted while a sensor waits in it.

``drill_failing`` runs: ``load`` fails and escalates, ``wait`` (a deferrable
``EscalationSensor``) defers to the triggerer. The triggerer is restarted (SIGTERM, as a deploy
does, then started again). The escalation is then acknowledged: the sensor, now run by the new
triggerer, must succeed. Its deliveries are checked too: nothing lost, nothing twice.
"""

from __future__ import annotations

import signal
import time

import pytest

from drill_stack import Ledger, report

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]


def test_triggerer_restarted_while_a_sensor_waits(drill_stack, sink):
    stack = drill_stack
    run_id = stack.trigger_dag("drill_failing")
    incident = f"drill_failing.load.{run_id}"
    record = stack.wait(lambda: stack.record(incident), bool, 180, "the failed task's escalation")
    stack.wait(
        lambda: stack.ti_state("drill_failing", run_id, "wait"), lambda s: s == "deferred", 120, "the sensor deferred"
    )
    began = time.monotonic()
    stack.restart_component("triggerer", signal.SIGTERM)
    # the new triggerer is up when its log (after the restart marker) says so
    stack.wait(
        lambda: stack.component_log("triggerer", 100_000).rsplit("===== triggerer start", 1)[-1],
        lambda text: "Starting the triggerer" in text,
        120,
        "the new triggerer started",
    )
    restarted_in = time.monotonic() - began
    acked = stack.call("POST", f"/escalation/api/v1/escalations/{record['id']}/acknowledge", json={"note": "drill"})
    assert acked.status_code == 200, acked.text
    acked_at = time.monotonic()
    state = stack.wait(
        lambda: stack.ti_state("drill_failing", run_id, "wait"),
        lambda s: s in ("success", "failed", "upstream_failed"),
        120,
        "the sensor after the acknowledgement",
    )
    resumed_in = time.monotonic() - acked_at
    ledger = Ledger.of([incident])  # level 2 fell due 3 s after level 1, long before the acknowledgement
    stack.wait(lambda: ledger.complete(sink), lambda done: done, 30, "levels 1 and 2 delivered")
    ledger.count(sink)
    lost = list(ledger.lost) + ([] if state == "success" else [f"sensor ended {state}"])
    text = report(
        "5 triggerer restarted while a sensor waits",
        ledger,
        sensor=state,
        triggerer_stopped_and_up_again_s=restarted_in,
        acknowledge_to_sensor_success_s=resumed_in,
    )
    assert not lost, text
    assert not ledger.duplicated, text
