"""The spec's "Integration with Existing Actions", with the Airflow action it stands for.

The spec attaches ``SlackNotification(webhook_url=...)`` to levels 1 to 3. In Airflow the existing
action is a notifier: here the Slack provider's ``SlackWebhookNotifier``, through a real
``slackwebhook`` connection, posting to a local HTTP sink, on the fake clock.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_escalation import (
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    FakeClock,
)
from airflow_escalation.demo.sinks import HttpSink
from airflow_escalation.routing import setup_escalation_with_existing_actions

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def slack_sink(monkeypatch):
    sink = HttpSink()
    url = f"http://127.0.0.1:{sink.port}/services/T000/B000/XXXX"
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": url}))
    yield sink
    sink.stop()


async def test_slack_webhook_notifier_runs_once_per_round_of_its_levels(slack_sink):
    webhook = pytest.importorskip("airflow.providers.slack.notifications.slack_webhook")
    slack_action = webhook.SlackWebhookNotifier(
        slack_webhook_conn_id="slack_alerts", text="[L{{ level }}#{{ repeat }}] {{ incident_id }}"
    )
    clock = FakeClock(START)
    engine = EscalationEngine(EscalationEngineConfig(clock=clock))
    engine.register_policy(
        EscalationPolicy(  # the spec's production_critical ladder, levels 1 and 2
            name="critical_alerts",
            levels=[
                EscalationLevel(
                    level=1,
                    targets=[EscalationTarget.user("team-lead"), EscalationTarget.channel("#alerts")],
                    repeat_count=2,
                    repeat_interval_minutes=5,
                ),
                EscalationLevel(level=2, delay_minutes=15, targets=[EscalationTarget.user("eng-manager")]),
            ],
        )
    )
    setup_escalation_with_existing_actions(
        engine=engine, policy_name="critical_alerts", level_actions={1: [slack_action], 2: [slack_action]}
    )
    await engine.start()
    try:
        result = await engine.trigger("incident-123", {"severity": "critical"}, "critical_alerts")
        assert result.success
        await engine.advance(timedelta(minutes=16))
        await engine.acknowledge(result.record.id, "eng-manager")
        await engine.advance(timedelta(days=1))
    finally:
        await engine.stop()
    # one post per round (not per target): level 1 and its two repeats, level 2; nothing after the ack
    assert [body["text"] for _, body in slack_sink.requests] == [
        "[L1#0] incident-123",
        "[L1#1] incident-123",
        "[L1#2] incident-123",
        "[L2#0] incident-123",
    ]
    assert {path for path, _ in slack_sink.requests} == {"/services/T000/B000/XXXX"}
