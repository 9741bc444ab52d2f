"""Slack (Incoming Webhook and Web API) and PagerDuty Events v2 through the official providers'
hooks, each pointed at the real local HTTP sink by its connection; the PagerDuty follow-ups
(acknowledge/resolve with the record id as dedup key) through the outbox."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest

from airflow_escalation.channels import ChannelNotInstalledError, ChannelResolver
from airflow_escalation.core.models import EscalationRecord, EscalationTarget
from airflow_escalation.core.types import DeliveryState

from channel_support import BASE_URL, FAILURE_CONTEXT, policy


# ------------------------------------------------------------------------------ Slack


async def test_slack_webhook_posts_blocks_to_the_connections_webhook(make_engine, sink, connections, fake_links):
    # the hook builds {schema}://{host}/{password}: point host at the sink
    connections(
        "slack_hook",
        conn_type="slackwebhook",
        schema="http",
        host=f"127.0.0.1:{sink.port}/services",
        password="T000/B000/XXXX",
    )
    engine, _ = await make_engine(policy([{"type": "channel", "identifier": "#data-alerts", "conn_id": "slack_hook"}]))
    record_id = (await engine.trigger("orders_etl.load", FAILURE_CONTEXT, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))

    [request] = sink.requests
    assert request.path == "/services/T000/B000/XXXX"
    body = request.json
    assert body["text"] == "[ESCALATION L1] orders_etl.load failed"
    assert body["unfurl_links"] is False and body["unfurl_media"] is False
    blocks = body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[ESCALATION L1] orders_etl.load failed"},
    }
    error = next(b for b in blocks if b["type"] == "section" and "Error" in b.get("text", {}).get("text", ""))
    assert "&lt;script&gt;" in error["text"]["text"] and "<script>" not in error["text"]["text"]
    assert "&amp; more" in error["text"]["text"]
    links = next(b for b in blocks if b["type"] == "context")["elements"][0]["text"]
    assert f"<{BASE_URL}/dags/orders_etl|Dag>" in links
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [b["text"]["text"] for b in buttons] == ["Acknowledge", "Resolve"]
    assert buttons[0]["url"].startswith(f"{BASE_URL}/escalation/ui/action?token=acknowledge.{record_id}.")
    assert engine.get_deliveries(record_id)[0].state is DeliveryState.SENT


async def test_slack_webhook_error_status_fails_the_attempt(make_engine, sink, connections):
    connections("slack_hook", conn_type="slackwebhook", password=f"{sink.url}/services/T/B/X")
    sink.fail_next(404, "no_service")
    engine, _ = await make_engine(policy([{"type": "channel", "identifier": "#x", "conn_id": "slack_hook"}]))
    record_id = (await engine.trigger("inc", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.PENDING and "404" in delivery.last_error
    await engine.advance(timedelta(seconds=60))
    assert engine.get_deliveries(record_id)[0].state is DeliveryState.SENT


async def test_slack_api_posts_to_the_target_channel(make_engine, sink, connections):
    connections("slack_api", conn_type="slack", password="xoxb-test-token", extra={"base_url": f"{sink.url}/api/"})
    engine, _ = await make_engine(policy([{"type": "channel", "identifier": "C0123ALERTS", "conn_id": "slack_api"}]))
    record_id = (await engine.trigger("orders_etl.load", FAILURE_CONTEXT, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    [request] = sink.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == "Bearer xoxb-test-token"
    body = request.json
    assert body["channel"] == "C0123ALERTS" and body["text"].startswith("[ESCALATION L1]")
    assert body["blocks"][0]["type"] == "header"
    assert engine.get_deliveries(record_id)[0].state is DeliveryState.SENT


async def test_missing_slack_provider_names_the_extra_to_install(make_engine, connections, monkeypatch):
    connections("slack_hook", conn_type="slackwebhook", password="https://hooks.slack.com/services/T/B/X")
    monkeypatch.setitem(sys.modules, "airflow.providers.slack.hooks.slack_webhook", None)  # import fails
    engine, _ = await make_engine(policy([{"type": "channel", "identifier": "#x", "conn_id": "slack_hook"}]))
    record_id = (await engine.trigger("inc", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED
    assert "ChannelNotInstalledError" in delivery.last_error
    assert "pip install 'airflow-provider-escalation[slack]'" in delivery.last_error


# ------------------------------------------------------------------------------ PagerDuty


@pytest.fixture
def pd_conn(connections, sink):
    # the connection's host replaces https://events.pagerduty.com
    connections(
        "pd", conn_type="pagerduty_events", password="ROUTING-KEY-1", schema="http", host="127.0.0.1", port=sink.port
    )
    return "pd"


async def test_pagerduty_trigger_uses_the_record_as_dedup_key(make_engine, sink, pd_conn, fake_links):
    engine, _ = await make_engine(
        policy(
            [{"type": "schedule", "identifier": "data-oncall", "conn_id": pd_conn}],
            [{"type": "schedule", "identifier": "data-oncall", "conn_id": pd_conn}],
        )
    )
    record_id = (await engine.trigger("orders_etl.load", FAILURE_CONTEXT, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))

    [request] = sink.requests
    assert request.path == "/v2/enqueue"
    event = request.json
    assert event["routing_key"] == "ROUTING-KEY-1"
    assert event["event_action"] == "trigger" and event["dedup_key"] == record_id
    payload = event["payload"]
    assert payload["summary"] == "[ESCALATION L1] orders_etl.load failed"
    assert payload["severity"] == "critical"
    assert payload["source"] == "airflow.example.com"
    assert payload["group"] == "orders_etl" and payload["component"] == "load"
    details = payload["custom_details"]
    assert details["escalation_id"] == record_id and details["level"] == "1 of 2"
    assert details["exception"] == FAILURE_CONTEXT["exception"]
    hrefs = {link["text"]: link["href"] for link in event["links"]}
    assert hrefs["Dag run"].startswith(f"{BASE_URL}/dags/orders_etl/runs/")
    assert "Acknowledge" in hrefs and "Resolve" in hrefs

    await engine.advance(timedelta(minutes=15))  # level 2 re-triggers the same alert
    assert [r.json["dedup_key"] for r in sink.requests] == [record_id, record_id]
    assert sink.requests[1].json["payload"]["summary"].startswith("[ESCALATION L2]")


async def test_pagerduty_is_acknowledged_then_resolved_with_the_record(make_engine, sink, pd_conn, http_conn):
    """Acknowledging and resolving (whoever does it) writes an outbox delivery per PagerDuty
    connection with the change; the outbox tells PagerDuty, with the record id as dedup key."""
    engine, _ = await make_engine(
        policy(
            [
                {"type": "schedule", "identifier": "data-oncall", "conn_id": pd_conn},
                {"type": "webhook", "identifier": "/w", "conn_id": http_conn},  # not PagerDuty: no follow-up
                {"type": "user", "identifier": "lead"},
            ]
        )
    )
    record_id = (await engine.trigger("inc-pd", {"severity": "high"}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    assert sorted(r.path for r in sink.requests) == ["/v2/enqueue", "/w"]
    before = len(sink.requests)

    assert (await engine.acknowledge(record_id, "alice")).success
    await engine.drain()
    assert (await engine.resolve(record_id, "alice")).success
    await engine.drain()

    follow_ups = [r.json for r in sink.requests[before:]]
    assert [(e["event_action"], e["dedup_key"], e["routing_key"]) for e in follow_ups] == [
        ("acknowledge", record_id, "ROUTING-KEY-1"),
        ("resolve", record_id, "ROUTING-KEY-1"),
    ]
    assert all(r.path == "/v2/enqueue" for r in sink.requests[before:])


async def test_cancel_and_auto_resolve_resolve_the_pagerduty_alert(make_engine, sink, pd_conn):
    engine, _ = await make_engine(
        policy([{"type": "schedule", "identifier": "x", "conn_id": pd_conn}], name="cancelled"),
        {
            "name": "auto",
            "levels": [
                {
                    "level": 1,
                    "auto_resolve_minutes": 30,
                    "targets": [{"type": "schedule", "identifier": "x", "conn_id": pd_conn}],
                }
            ],
        },
    )
    first = (await engine.trigger("inc-cancel", {}, "cancelled")).record.id
    second = (await engine.trigger("inc-auto", {}, "auto")).record.id
    await engine.advance(timedelta(seconds=1))
    assert (await engine.cancel(first, "bob", "false alarm")).success
    await engine.advance(timedelta(minutes=31))  # auto_resolve_minutes
    assert engine.get_record(second).state == "resolved"
    events = [(r.json["event_action"], r.json["dedup_key"]) for r in sink.requests]
    assert sorted(events) == sorted([("trigger", first), ("trigger", second), ("resolve", first), ("resolve", second)])


async def test_notify_only_level_triggers_then_resolves_in_that_order(make_engine, sink, pd_conn):
    """A level that requires no acknowledgement resolves in the write that queues its
    notification: the resolve waits until the trigger went out."""
    engine, _ = await make_engine(
        {
            "name": "fyi",
            "levels": [
                {
                    "level": 1,
                    "require_ack": False,
                    "targets": [{"type": "schedule", "identifier": "x", "conn_id": pd_conn}],
                }
            ],
        }
    )
    record = (await engine.trigger("inc-fyi", {"severity": "info"}, "fyi")).record
    assert record.state == "resolved"
    await engine.advance(timedelta(seconds=1))
    await engine.drain()
    assert [(r.json["event_action"], r.json["dedup_key"]) for r in sink.requests] == [("trigger", record.id)]
    await engine.advance(timedelta(minutes=2))  # the resolve waited for the trigger: its retry
    assert [(r.json["event_action"], r.json["dedup_key"]) for r in sink.requests] == [
        ("trigger", record.id),
        ("resolve", record.id),
    ]
    assert sink.requests[0].json["payload"]["severity"] == "info"


async def test_follow_ups_are_outbox_deliveries_only_for_changes_that_quiet(make_engine, sink, pd_conn):
    from airflow_escalation.service.delivery import FOLLOW_UP

    engine, _ = await make_engine(policy([{"type": "schedule", "identifier": "x", "conn_id": pd_conn}]))
    record_id = (await engine.trigger("inc-obs", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    assert (await engine.trigger("inc-obs", {}, "pipeline")).success  # joined: nothing to quiet
    await engine.advance(timedelta(minutes=20))  # reminders, nothing to quiet
    assert [d.target.metadata.get(FOLLOW_UP) for d in engine.get_deliveries(record_id)] == [None]
    assert (await engine.acknowledge(record_id, "alice")).success
    assert (await engine.resolve(record_id, "alice")).success
    await engine.advance(timedelta(seconds=1))
    deliveries = engine.get_deliveries(record_id)
    assert [(d.target.metadata.get(FOLLOW_UP), d.state) for d in deliveries] == [
        (None, DeliveryState.SENT),
        ("acknowledge", DeliveryState.CANCELLED),  # the resolve superseded it before it went out
        ("resolve", DeliveryState.SENT),
    ]
    assert [r.json["event_action"] for r in sink.requests] == ["trigger", "resolve"]


async def test_pagerduty_follow_up_failures_are_retried_with_the_outcome_recorded(make_engine, sink, pd_conn):
    engine, _ = await make_engine(policy([{"type": "schedule", "identifier": "x", "conn_id": pd_conn}]))
    record_id = (await engine.trigger("inc-retry", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    sink.fail_next(500, "pd down", times=1)
    assert (await engine.resolve(record_id, "alice")).success
    await engine.advance(timedelta(seconds=1))
    follow_up = engine.get_deliveries(record_id)[-1]
    assert follow_up.state is DeliveryState.PENDING and "500" in follow_up.last_error
    await engine.advance(timedelta(seconds=61))
    follow_up = engine.get_deliveries(record_id)[-1]
    assert (follow_up.state, follow_up.attempts) == (DeliveryState.SENT, 2)
    assert [r.json["event_action"] for r in sink.requests] == ["trigger", "resolve", "resolve"]

    other = (await engine.trigger("inc-retry-2", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    sink.fail_next(500, "pd down", times=5)  # a failure for good ends failed, on the record
    assert (await engine.resolve(other, "alice")).success
    await engine.advance(timedelta(hours=1))
    follow_up = engine.get_deliveries(other)[-1]
    assert (follow_up.state, follow_up.attempts) == (DeliveryState.FAILED, 3)


async def test_no_follow_up_without_a_pagerduty_alert_or_back_to_who_reported_it(make_engine, sink, pd_conn, http_conn):
    from airflow_escalation.service.delivery import told_by

    engine, _ = await make_engine(
        policy([{"type": "webhook", "identifier": "/w", "conn_id": http_conn}], name="hook"),
        policy([{"type": "schedule", "identifier": "x", "conn_id": pd_conn}], name="pd"),
    )
    hook_id = (await engine.trigger("inc-none", {}, "hook")).record.id
    pd_id = (await engine.trigger("inc-pd", {}, "pd")).record.id
    await engine.advance(timedelta(seconds=1))
    assert (await engine.resolve(hook_id, "alice")).success  # an http connection keeps no incident
    with told_by(pd_conn):  # PagerDuty reported this one: it is not told back
        assert (await engine.acknowledge(pd_id, "Alice (PagerDuty)")).success
    await engine.advance(timedelta(seconds=1))
    assert len(engine.get_deliveries(hook_id)) == 1 and len(engine.get_deliveries(pd_id)) == 1
    assert sorted(r.path for r in sink.requests) == ["/v2/enqueue", "/w"]
    assert (await engine.resolve(pd_id, "bob")).success  # bob resolved it here: PagerDuty hears of it
    await engine.advance(timedelta(seconds=1))
    assert [r.json.get("event_action") for r in sink.requests if r.path == "/v2/enqueue"] == ["trigger", "resolve"]


async def test_pagerduty_resolve_call_directly(sink, pd_conn):
    """The channel's resolve() against the sink, without an engine."""
    from airflow_escalation.channels.pagerduty import PagerDutyEventsChannel

    target = EscalationTarget.schedule("x", conn_id=pd_conn)
    record = EscalationRecord(id="esc-direct", incident_id="i", policy_name="p", state="resolved")
    resolver = ChannelResolver(base_url=BASE_URL)
    info, channel = await resolver.channel_for(pd_conn)
    assert isinstance(channel, PagerDutyEventsChannel) and info.conn_type == "pagerduty_events"
    await channel.resolve(record, target, info, "resolve")
    assert sink.requests[0].json["event_action"] == "resolve"
    assert sink.requests[0].json["dedup_key"] == "esc-direct"
    with pytest.raises(ValueError):
        await channel.resolve(record, target, info, "trigger")


def test_not_installed_error_is_permanent_and_names_the_extra():
    from airflow_escalation.channels.base import Channel, PermanentChannelError

    class Missing(Channel):
        conn_types = ("nothing",)
        provider_package = "apache-airflow-providers-nothing"
        provider_module = "airflow.providers.nothing_at_all.hooks"
        extra = "nothing"

        async def send(self, *args):  # pragma: no cover
            raise AssertionError

    with pytest.raises(ChannelNotInstalledError) as info:
        Missing().check_installed()
    assert isinstance(info.value, PermanentChannelError)
    assert "pip install 'airflow-provider-escalation[nothing]'" in str(info.value)
    assert "apache-airflow-providers-nothing" in str(info.value)


def test_level_targets_without_conn_id_are_left_to_the_handler():
    resolver = ChannelResolver()
    assert resolver(EscalationTarget.user("lead")) is None
    assert resolver(EscalationTarget.user("lead", conn_id="mail")) == resolver.deliver
