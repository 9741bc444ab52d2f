"""Level actions with real Airflow notifiers (imports Airflow: the slowest test of tests/routing)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation.routing import setup_escalation_with_existing_actions

from .conftest import START


def minutes(clock) -> float:
    return (clock.now() - START).total_seconds() / 60


async def test_real_airflow_notifier_is_rendered_per_incident_and_run(engine, clock):
    notifier_mod = pytest.importorskip("airflow.sdk.bases.notifier")

    class TemplatedNotifier(notifier_mod.BaseNotifier):
        template_fields = ("text",)

        def __init__(self, text, sink):
            super().__init__()
            self.text, self.sink = text, sink

        def notify(self, context):  # async_notify stays BaseNotifier's placeholder
            self.sink.append((minutes(clock), self.text))

    class AsyncNotifier(notifier_mod.BaseNotifier):
        def __init__(self, sink):
            super().__init__()
            self.sink = sink

        async def async_notify(self, context):
            self.sink.append(("async", context["level"]))

        def notify(self, context):
            raise AssertionError("async_notify should have been preferred")

    sink = []
    templated = TemplatedNotifier("[L{{ level }}] {{ incident_id }} is {{ severity }}", sink)
    setup_escalation_with_existing_actions(engine, "critical_alerts", {1: [templated], 2: [AsyncNotifier(sink)]})
    await engine.trigger("inc-1", {"severity": "critical"}, "critical_alerts")
    await engine.trigger("inc-2", {"severity": "high"}, "critical_alerts")
    await engine.advance(timedelta(minutes=15))
    assert sorted(sink[:4]) == [
        (0, "[L1] inc-1 is critical"),
        (0, "[L1] inc-2 is high"),
        (5, "[L1] inc-1 is critical"),
        (5, "[L1] inc-2 is high"),
    ]
    assert sink[4:] == [("async", 2), ("async", 2)]
    assert templated.text == "[L{{ level }}] {{ incident_id }} is {{ severity }}"  # templates kept
