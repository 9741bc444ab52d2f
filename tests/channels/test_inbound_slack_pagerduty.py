"""Slack's buttons and PagerDuty's webhooks acting on escalations, in-process: the service app
(TestClient) with the real SimpleAuthManager, Airflow connections from the environment, a real
local HTTP sink standing in for Slack's Web API, its response_url and PagerDuty's Events API, and
requests signed the way Slack and PagerDuty document it (signed here, independently of the
service's own code)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service.app import create_app
from airflow_escalation.service.delivery import FOLLOW_UP, install_delivery

from channel_support import BASE_URL, FAILURE_CONTEXT, SECRET, policy

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
WEBHOOK_SECRET = "pd-webhook-secret-1"
SLACK = "/api/v1/integrations/slack/slack_app"
PAGERDUTY = "/api/v1/integrations/pagerduty/pd"


# ------------------------------------------------------------------ signing, from the docs


def slack_headers(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """https://api.slack.com/authentication/verifying-requests-from-slack"""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def pagerduty_signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """https://developer.pagerduty.com/docs/webhooks/webhook-signatures/"""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def click(record_id: str, action: str, user: str, response_url: str, blocks: Any = None) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "response_url": response_url,
        "container": {"type": "message", "channel_id": "C1", "message_ts": "1.2"},
        "message": {"text": "[ESCALATION L1] orders_etl.load failed", "blocks": blocks or []},
        "actions": [
            {
                "type": "button",
                "action_id": f"escalation_{action}",
                "block_id": "escalation_actions",
                "value": record_id,
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def pd_event(record_id: str, event_type: str, occurred_at: str, event_id: str = "01DEV4E2R3KBS") -> bytes:
    return json.dumps(
        {
            "event": {
                "id": event_id,
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": occurred_at,
                "agent": {"type": "user_reference", "summary": "Alice Oncall", "id": "PUSER01"},
                "data": {"id": "PINC01", "type": "incident", "incident_key": record_id, "status": "acknowledged"},
            }
        }
    ).encode()


# ------------------------------------------------------------------ the service


@pytest.fixture
def service(monkeypatch, connections, sink, clock):
    from airflow.api_fastapi import app as airflow_app

    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:op,victor:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    # a fresh one: create_auth_manager() keeps any cached subclass instance an earlier test made
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", None)
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", airflow_app.create_auth_manager())
    users = {"U_ALICE": "alice", "U_VICTOR": "victor", "U_GHOST": "ghost"}
    connections(
        "slack_app",
        conn_type="slack",
        password="xoxb-test",
        extra={"base_url": f"{sink.url}/api/", "signing_secret": SIGNING_SECRET, "slack_users": users},
    )
    connections(
        "pd",
        conn_type="pagerduty_events",
        password="ROUTING-KEY",
        schema="http",
        host="127.0.0.1",
        port=sink.port,
        extra={"webhook_secret": f"old-secret, {WEBHOOK_SECRET}"},
    )
    engine = EscalationEngine(
        EscalationEngineConfig(
            clock=clock,
            scheduler_config=SchedulerConfig(scheduler_type="memory", retry_delay_seconds=60, max_attempts=3),
        )
    )
    engine.register_policy(
        policy(
            [
                {"type": "channel", "identifier": "C1", "conn_id": "slack_app"},
                {"type": "schedule", "identifier": "data-oncall", "conn_id": "pd"},
            ]
        )
    )
    install_delivery(engine, base_url=BASE_URL, action_secret=SECRET)
    with TestClient(create_app(engine=engine, policy_config=EscalationPolicyConfig())) as client:
        yield Service(client, engine, clock, sink)


class Service:
    def __init__(self, client: TestClient, engine: EscalationEngine, clock: Any, sink: Any) -> None:
        self.client, self.engine, self.clock, self.sink = client, engine, clock, sink

    def call(self, fn: Any, *args: Any) -> Any:
        return self.client.portal.call(fn, *args)  # the engine's own event loop

    def trigger(self) -> str:
        record_id = self.call(self.engine.trigger, "orders_etl.load", FAILURE_CONTEXT, "pipeline").record.id
        self.call(self.engine.advance, timedelta(seconds=1))
        return record_id

    def record(self, record_id: str) -> Any:
        return self.engine.get_record(record_id)

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def slack(self, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(SLACK, content=body, headers=headers)

    def answers(self, path: str) -> list[dict[str, Any]]:
        return [r.json for r in self.sink.requests if r.path == path]


# ------------------------------------------------------------------ Slack


def test_slack_api_messages_carry_buttons_that_post_back(service):
    record_id = service.trigger()
    [posted] = service.answers("/api/chat.postMessage")
    [actions] = [b for b in posted["blocks"] if b["type"] == "actions"]
    assert actions["block_id"] == "escalation_actions"
    assert [(b["action_id"], b["value"], "url" in b) for b in actions["elements"]] == [
        ("escalation_acknowledge", record_id, False),
        ("escalation_resolve", record_id, False),
    ]


def test_acknowledge_from_slack_acts_as_the_mapped_user_and_updates_the_message(service):
    record_id = service.trigger()
    [posted] = service.answers("/api/chat.postMessage")
    body = click(record_id, "acknowledge", "U_ALICE", f"{service.sink.url}/response/1", posted["blocks"])
    signed = slack_headers(body, service.now())
    assert service.slack(body, signed).status_code == 200
    record = service.record(record_id)
    assert (record.state, record.acknowledged_by) == ("acknowledged", "alice")
    assert "via Slack (slack:" in record.history[-1]["details"]["note"]

    [update] = service.answers("/response/1")
    assert update["replace_original"] is True
    outcome = next(b for b in update["blocks"] if b.get("block_id") == "escalation_outcome")
    assert outcome["elements"][0]["text"].startswith("Acknowledged by *alice* at <!date^")
    assert outcome["elements"][0]["text"].endswith("|10:00 UTC>")
    [buttons] = [b for b in update["blocks"] if b["type"] == "actions"]
    assert [b["action_id"] for b in buttons["elements"]] == ["escalation_resolve"]  # still allowed
    assert update["blocks"][0] == posted["blocks"][0]  # the message itself stays

    # the acknowledgement reaches PagerDuty through the outbox
    service.call(service.engine.advance, timedelta(seconds=1))
    assert [e["event_action"] for e in service.answers("/v2/enqueue")] == ["trigger", "acknowledge"]

    # the same payload again: replayed, 401, nothing changes
    version = service.record(record_id).version
    service.clock.advance(timedelta(seconds=30))  # still within the window: refused as replayed
    again = service.slack(body, signed)
    assert again.status_code == 401
    assert service.record(record_id).version == version
    assert len(service.answers("/response/1")) == 1


def test_forged_stale_and_unsigned_slack_requests_are_refused(service):
    record_id = service.trigger()
    body = click(record_id, "resolve", "U_ALICE", f"{service.sink.url}/response/2")
    version = service.record(record_id).version
    refused = [
        slack_headers(body, service.now(), secret="not-the-signing-secret"),  # forged
        slack_headers(body, service.now() - 6 * 60),  # stale
        slack_headers(body, service.now() + 6 * 60),  # from the future
        {"Content-Type": "application/x-www-form-urlencoded"},  # unsigned
        slack_headers(body + b"&x=1", service.now()) | {"Content-Type": "application/x-www-form-urlencoded"},
    ]
    for headers in refused:
        answer = service.slack(body, headers)
        assert answer.status_code == 401, headers
        assert answer.json() == {"detail": "request signature not accepted"}
    assert service.record(record_id).version == version
    assert service.answers("/response/2") == []
    # just inside the window is accepted
    assert service.slack(body, slack_headers(body, service.now() - 4 * 60)).status_code == 200
    assert service.record(record_id).state == "resolved"


def test_unknown_slack_members_and_users_without_permission_are_told_why(service):
    record_id = service.trigger()
    version = service.record(record_id).version
    for member, expected in [
        ("U_NOBODY", "is not linked to an escalation user"),
        ("U_GHOST", "ghost is not an Airflow user here"),
        ("U_VICTOR", "victor may not acknowledge this escalation"),
    ]:
        url = f"{service.sink.url}/response/{member}"
        body = click(record_id, "acknowledge", member, url)
        assert service.slack(body, slack_headers(body, service.now())).status_code == 200
        [told] = service.answers(f"/response/{member}")
        assert told["response_type"] == "ephemeral" and told["replace_original"] is False
        assert expected in told["text"], told["text"]
    assert service.record(record_id).version == version


def test_a_click_on_a_closed_escalation_gets_a_plain_answer(service):
    record_id = service.trigger()
    service.call(service.engine.resolve, record_id, "bob")
    body = click(record_id, "acknowledge", "U_ALICE", f"{service.sink.url}/response/3")
    assert service.slack(body, slack_headers(body, service.now())).status_code == 200
    [told] = service.answers("/response/3")
    assert told["text"] == "Nothing to do: this escalation is already resolved (by bob)."


def test_a_slack_connection_without_signing_secret_keeps_the_one_click_links(service, connections, sink):
    connections("slack_app", conn_type="slack", password="xoxb-test", extra={"base_url": f"{sink.url}/api/"})
    service.trigger()
    [posted] = service.answers("/api/chat.postMessage")
    [actions] = [b for b in posted["blocks"] if b["type"] == "actions"]
    assert all(b["url"].startswith(f"{BASE_URL}/escalation/act/") for b in actions["elements"])
    body = click("x", "acknowledge", "U_ALICE", f"{sink.url}/response/4")
    assert service.slack(body, slack_headers(body, service.now())).status_code == 401  # nothing to verify with


# ------------------------------------------------------------------ PagerDuty


def test_pagerduty_acknowledges_and_resolves_without_echo(service):
    record_id = service.trigger()
    occurred = service.clock.now().isoformat().replace("+00:00", "Z")
    body = pd_event(record_id, "incident.acknowledged", occurred)
    answer = service.client.post(PAGERDUTY, content=body, headers={"X-PagerDuty-Signature": pagerduty_signature(body)})
    assert answer.status_code == 200, answer.text
    record = service.record(record_id)
    assert (record.state, record.acknowledged_by) == ("acknowledged", "Alice Oncall (PagerDuty)")
    # not told back to PagerDuty
    assert not [d for d in service.engine.get_deliveries(record_id) if d.target.metadata.get(FOLLOW_UP)]

    # replayed: 401, nothing changes
    version = service.record(record_id).version
    again = service.client.post(PAGERDUTY, content=body, headers={"X-PagerDuty-Signature": pagerduty_signature(body)})
    assert again.status_code == 401 and service.record(record_id).version == version

    # resolved, signed with the old secret among several signatures (rotation)
    body = pd_event(record_id, "incident.resolved", occurred, event_id="01DEV4E2R3KBT")
    header = f"v1=deadbeef,{pagerduty_signature(body, 'old-secret')}"
    assert service.client.post(PAGERDUTY, content=body, headers={"X-PagerDuty-Signature": header}).status_code == 200
    assert service.record(record_id).state == "resolved"
    service.call(service.engine.advance, timedelta(minutes=5))
    assert [e["event_action"] for e in service.answers("/v2/enqueue")] == ["trigger"]


def test_forged_stale_and_foreign_pagerduty_webhooks_change_nothing(service):
    record_id = service.trigger()
    version = service.record(record_id).version
    now = service.clock.now()
    fresh = pd_event(record_id, "incident.acknowledged", now.isoformat())
    # stale: older than PagerDuty's retry window (about 20 minutes; 30 accepted)
    stale = pd_event(record_id, "incident.acknowledged", (now - timedelta(minutes=31)).isoformat(), "01STALE")
    for body, header in [
        (fresh, pagerduty_signature(fresh, "wrong-secret")),
        (fresh, None),
        (fresh, "v0=" + pagerduty_signature(fresh)[3:]),
        (stale, pagerduty_signature(stale)),
    ]:
        headers = {"X-PagerDuty-Signature": header} if header else {}
        assert service.client.post(PAGERDUTY, content=body, headers=headers).status_code == 401
    assert service.record(record_id).version == version

    # signed, but about an incident this service never sent: answered, ignored
    other = pd_event("no-such-record", "incident.acknowledged", now.isoformat(), "01OTHER")
    answer = service.client.post(
        PAGERDUTY, content=other, headers={"X-PagerDuty-Signature": pagerduty_signature(other)}
    )
    assert answer.status_code == 200 and "ignored" in answer.json()
    ping = json.dumps({"event": {"id": "01PING", "event_type": "pagey.ping", "occurred_at": now.isoformat()}}).encode()
    answer = service.client.post(PAGERDUTY, content=ping, headers={"X-PagerDuty-Signature": pagerduty_signature(ping)})
    assert answer.status_code == 200 and "ignored" in answer.json()
    assert service.record(record_id).version == version


def test_the_users_directory_links_members_before_the_connection_mapping(service):
    """The on-call users directory (a user's ``slack`` contact) is asked first."""
    from types import SimpleNamespace

    slack = SimpleNamespace(type="slack", address="U_VICTOR")  # the connection maps U_VICTOR to victor
    email = SimpleNamespace(type="email", address="alice@example.com")
    directory = SimpleNamespace(users=[SimpleNamespace(id="alice", contacts=[email, slack])])
    service.client.app.state.service.users_directory = directory
    record_id = service.trigger()
    body = click(record_id, "acknowledge", "U_VICTOR", f"{service.sink.url}/response/5")
    assert service.slack(body, slack_headers(body, service.now())).status_code == 200
    assert service.record(record_id).acknowledged_by == "alice"


def test_the_routes_without_a_connection_use_the_providers_default_connections(service, connections, sink):
    record_id = service.trigger()
    body = click(record_id, "acknowledge", "U_ALICE", f"{sink.url}/response/6")
    assert (
        service.client.post(
            SLACK.rsplit("/", 1)[0], content=body, headers=slack_headers(body, service.now())
        ).status_code
        == 401
    )
    connections(
        "slack_api_default",
        conn_type="slack",
        password="xoxb",
        extra={"signing_secret": SIGNING_SECRET, "slack_users": {"U_ALICE": "alice"}},
    )
    answer = service.client.post(SLACK.rsplit("/", 1)[0], content=body, headers=slack_headers(body, service.now()))
    assert answer.status_code == 200 and service.record(record_id).acknowledged_by == "alice"
    ping = json.dumps(
        {"event": {"id": "01P", "event_type": "pagey.ping", "occurred_at": service.clock.now().isoformat()}}
    ).encode()
    headers = {"X-PagerDuty-Signature": pagerduty_signature(ping)}
    assert service.client.post(PAGERDUTY.rsplit("/", 1)[0], content=ping, headers=headers).status_code == 401
