"""Slack's buttons and PagerDuty's webhooks, with requests built and signed here from the public
documentation alone -- never from the service's own helpers:

* Slack, "Verifying requests from Slack": ``X-Slack-Signature: v0=<hex HMAC-SHA256 of
  "v0:{X-Slack-Request-Timestamp}:{raw body}">`` under the app's signing secret, the timestamp
  within five minutes; "Handling user interaction" / the ``block_actions`` payload reference: an
  ``application/x-www-form-urlencoded`` body whose one field ``payload`` holds the JSON, with
  ``type``, ``user``, ``team``, ``channel``, ``container``, ``message`` (its full state),
  ``response_url``, ``trigger_id``, ``actions[]`` (``action_id``, ``block_id``, ``value``,
  ``action_ts``, ...); the app answers through ``response_url`` with ``replace_original`` and
  ``text``/``blocks``, or ``response_type: ephemeral``.
* PagerDuty, "Webhooks v3 overview" / "Verifying signatures" / "Behavior": JSON ``{"event":
  {"id", "event_type", "resource_type", "occurred_at", "agent", "client", "data"}}``, ``data``
  of an ``incident`` event carrying ``incident_key`` (the Events API ``dedup_key``);
  ``X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw body>``, one entry per secret,
  comma-separated while rotating; retried for about 20 minutes after a 5xx or a timeout.

In-process, as tests/channels/test_inbound_slack_pagerduty.py: the service app (TestClient) with
the real SimpleAuthManager, connections from the environment, and a real local HTTP sink
standing in for Slack's Web API, the interaction's ``response_url`` and PagerDuty's Events API.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import pytest
from fastapi.testclient import TestClient

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service.app import create_app
from airflow_escalation.service.delivery import install_delivery

from channel_support import BASE_URL, FAILURE_CONTEXT, SECRET, policy

SIGNING_SECRET = "e3b0c44298fc1c149afbf4c8996fb924"
WEBHOOK_SECRETS = ("ChfxZPhXnB1ur0kpfSXmtcb4CEKn5YmY", "pd-rotated-in-secret")
SLACK_PATH = "/api/v1/integrations/slack/slack_app"
PAGERDUTY_PATH = "/api/v1/integrations/pagerduty/pd"
ALICE, VICTOR, STRANGER = "U0ALICE01", "U0VICTOR1", "U0NOBODY1"


# ------------------------------------------------------------------ Slack, as documented


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def test_the_published_slack_example_verifies():
    """The worked example of "Verifying requests from Slack" (a slash command's body), through
    the service's verifier, at the example's own time; a second late or a byte changed, refused."""
    from airflow_escalation.service.integrations.signatures import SignatureRefused, verify_slack

    secret, timestamp = "8f742231b10e8888abcd99yyyzzz85a5", "1531420618"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    published = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert slack_signature(secret, timestamp, body) == published  # this file signs as Slack does
    at = datetime.fromtimestamp(int(timestamp)).astimezone()
    verify_slack(secret, body, timestamp, published, at + timedelta(seconds=300))
    for late, signed, signature in [
        (timedelta(seconds=301), body, published),
        (timedelta(seconds=-301), body, published),
        (timedelta(0), body.replace(b"roadrunner", b"roadrunnex"), published),
        (timedelta(0), body, published.replace("v0=", "v1=")),
    ]:
        with pytest.raises(SignatureRefused):
            verify_slack(secret, signed, timestamp, signature, at + late)


def as_slack_echoes(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A message's blocks as Slack reports them back in ``message.blocks``: every block with a
    ``block_id`` (generated when the app set none), ``mrkdwn`` texts with ``verbatim``,
    ``plain_text`` ones with ``emoji``."""
    echoed = copy.deepcopy(blocks)

    def texts(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                node.setdefault("verbatim", False)
            if node.get("type") == "plain_text":
                node.setdefault("emoji", True)
            for value in node.values():
                texts(value)
        elif isinstance(node, list):
            for value in node:
                texts(value)

    for n, block in enumerate(echoed):
        block.setdefault("block_id", f"Xq{n}=+")
        texts(block)
    return echoed


def block_actions(
    message: dict[str, Any], action_id: str, value: str, member: str, response_url: str, block_id: str
) -> dict[str, Any]:
    """A ``block_actions`` payload shaped as Slack's reference shows it, extra fields and all."""
    return {
        "type": "block_actions",
        "user": {"id": member, "username": "jtorrance", "name": "Jack Törrance", "team_id": "T9TK3CUKW"},
        "api_app_id": "AABA1ABCD",
        "token": "9s8d9as89d8as9d8as989",  # the deprecated verification token: to be ignored
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": "C0ONCALL1",
            "is_ephemeral": False,
        },
        "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
        "team": {"id": "T9TK3CUKW", "domain": "example"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0ONCALL1", "name": "data-oncall"},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
                "value": value,
                "style": "primary",
                "type": "button",
                "action_ts": "1548426417.840180",
            }
        ],
    }


def form(payload: dict[str, Any]) -> bytes:
    """``payload=<url-encoded JSON>``, as Slack posts it (UTF-8 percent-encoded, spaces as ``+``)."""
    return ("payload=" + quote_plus(json.dumps(payload, ensure_ascii=False))).encode()


def slack_posted_message(posted: dict[str, Any]) -> dict[str, Any]:
    """The ``message`` object of a click on what ``chat.postMessage`` posted."""
    return {
        "bot_id": "BAH5CA16Z",
        "type": "message",
        "text": posted["text"],
        "user": "UAJ2RU415",
        "ts": "1548261231.000200",
        "app_id": "AABA1ABCD",
        "team": "T9TK3CUKW",
        "blocks": as_slack_echoes(posted["blocks"]),
    }


def buttons_of(blocks: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (block["block_id"], element["action_id"], element.get("value", ""))
        for block in blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


# ------------------------------------------------------------------ PagerDuty, as documented


def pagerduty_header(body: bytes, *secrets: str) -> str:
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def pagerduty_webhook(
    event_type: str, incident_key: str | None, occurred_at: datetime, event_id: str, agent: Any = "user"
) -> bytes:
    """An ``incident.*`` webhook as the v3 overview shows one."""
    if agent == "user":
        agent = {
            "html_url": "https://acme.pagerduty.com/users/PLH1HKV",
            "id": "PLH1HKV",
            "self": "https://api.pagerduty.com/users/PLH1HKV",
            "summary": "Zoë Ångström",
            "type": "user_reference",
        }
    data = {
        "id": "PGR0VU2",
        "type": "incident",
        "self": "https://api.pagerduty.com/incidents/PGR0VU2",
        "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
        "number": 2,
        "status": {"incident.acknowledged": "acknowledged", "incident.resolved": "resolved"}.get(
            event_type, "triggered"
        ),
        "incident_key": incident_key,
        "created_at": "2020-04-09T15:16:27Z",
        "title": "[ESCALATION L1] orders_etl.load failed",
        "service": {
            "html_url": "https://acme.pagerduty.com/services/PF9KMXH",
            "id": "PF9KMXH",
            "self": "https://api.pagerduty.com/services/PF9KMXH",
            "summary": "API Service",
            "type": "service_reference",
        },
        "assignees": [
            {
                "html_url": "https://acme.pagerduty.com/users/PTUXL6G",
                "id": "PTUXL6G",
                "self": "https://api.pagerduty.com/users/PTUXL6G",
                "summary": "User 123",
                "type": "user_reference",
            }
        ],
        "escalation_policy": {
            "html_url": "https://acme.pagerduty.com/escalation_policies/PUS0KTE",
            "id": "PUS0KTE",
            "self": "https://api.pagerduty.com/escalation_policies/PUS0KTE",
            "summary": "Default",
            "type": "escalation_policy_reference",
        },
        "teams": [],
        "priority": None,
        "urgency": "high",
        "conference_bridge": {
            "conference_number": "+1 1234123412,,987654321#",
            "conference_url": "https://example.com",
        },
        "resolve_reason": None,
    }
    if incident_key is None:
        del data["incident_key"]
    event = {
        "event": {
            "id": event_id,
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": occurred_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{occurred_at.microsecond // 1000:03d}Z",
            "agent": agent,
            "client": {"name": "PagerDuty"},
            "data": data,
        }
    }
    # as sent: pretty, UTF-8 (not \u escapes), and the signature is over these very bytes
    return json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------ the service


@pytest.fixture
def service(monkeypatch, connections, sink, clock):
    from airflow.api_fastapi import app as airflow_app

    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:op,victor:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", airflow_app.create_auth_manager())
    connections(
        "slack_app",
        conn_type="slack",
        password="xoxb-test",
        extra={
            "base_url": f"{sink.url}/api/",
            "signing_secret": SIGNING_SECRET,
            "slack_users": {ALICE: "alice", VICTOR: "victor"},
        },
    )
    connections(
        "pd",
        conn_type="pagerduty_events",
        password="ROUTING-KEY",
        schema="http",
        host="127.0.0.1",
        port=sink.port,
        extra={"webhook_secret": list(WEBHOOK_SECRETS)},
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
                {"type": "channel", "identifier": "C0ONCALL1", "conn_id": "slack_app"},
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
        return self.client.portal.call(fn, *args)

    def trigger(self) -> str:
        record_id = self.call(self.engine.trigger, "orders_etl.load", FAILURE_CONTEXT, "pipeline").record.id
        self.call(self.engine.advance, timedelta(seconds=1))
        return record_id

    def record(self, record_id: str) -> Any:
        return self.engine.get_record(record_id)

    def timestamp(self, offset: int = 0) -> str:
        return str(int(self.clock.now().timestamp()) + offset)

    def posted(self, path: str) -> list[Any]:
        return [r.json for r in self.sink.requests if r.path == path]

    def slack(self, body: bytes, timestamp: str, signature: str, case: str = "canonical") -> Any:
        names = {
            "canonical": ("X-Slack-Request-Timestamp", "X-Slack-Signature", "Content-Type"),
            "lower": ("x-slack-request-timestamp", "x-slack-signature", "content-type"),
            "upper": ("X-SLACK-REQUEST-TIMESTAMP", "X-SLACK-SIGNATURE", "CONTENT-TYPE"),
        }[case]
        headers = dict(zip(names, (timestamp, signature, "application/x-www-form-urlencoded"), strict=True))
        return self.client.post(SLACK_PATH, content=body, headers=headers)

    def signed_click(self, payload: dict[str, Any], case: str = "canonical", offset: int = 0) -> tuple[Any, tuple]:
        body, timestamp = form(payload), self.timestamp(offset)
        request = (body, timestamp, slack_signature(SIGNING_SECRET, timestamp, body), case)
        return self.slack(*request), request

    def pagerduty(self, body: bytes, header: str | None, name: str = "X-PagerDuty-Signature") -> Any:
        headers = {"Content-Type": "application/json", "X-Webhook-Id": "0aa3e5d8-5b2b-4d37-8a2e-9d3a4b1f2c00"}
        if header is not None:
            headers[name] = header
        return self.client.post(PAGERDUTY_PATH, content=body, headers=headers)


# ------------------------------------------------------------------ Slack


def test_a_documented_click_acknowledges_and_the_buttons_round_trip_to_resolve(service):
    record_id = service.trigger()
    [posted] = service.posted("/api/chat.postMessage")
    message = slack_posted_message(posted)
    sent_buttons = buttons_of(posted["blocks"])
    assert [b[1:] for b in sent_buttons] == [
        ("escalation_acknowledge", record_id),
        ("escalation_resolve", record_id),
    ]
    block_id, action_id, value = sent_buttons[0]
    url = f"{service.sink.url}/actions/T9TK3CUKW/1/ack"
    answer, request = service.signed_click(block_actions(message, action_id, value, ALICE, url, block_id), case="lower")
    assert answer.status_code == 200, answer.text
    record = service.record(record_id)
    assert (record.state, record.acknowledged_by) == ("acknowledged", "alice")

    [update] = service.posted("/actions/T9TK3CUKW/1/ack")
    assert update["replace_original"] is True and "response_type" not in update
    assert update["text"] == posted["text"]  # the notification fallback Slack requires with blocks
    assert update["blocks"][: len(message["blocks"]) - 1] == message["blocks"][:-1]  # the message stays
    outcome = next(b for b in update["blocks"] if b.get("block_id") == "escalation_outcome")
    assert outcome["elements"][0]["text"].startswith("Acknowledged by *alice* at <!date^")
    assert [b[1:] for b in buttons_of(update["blocks"])] == [("escalation_resolve", record_id)]

    # the same request again, within the five minutes: replayed, 401, nothing changes
    version = service.record(record_id).version
    assert service.slack(*request).status_code == 401
    assert service.record(record_id).version == version

    # Resolve from the updated message, as Slack reports it back
    updated = dict(message, blocks=as_slack_echoes(update["blocks"]), ts="1548261231.000300")
    block_id, action_id, value = buttons_of(updated["blocks"])[0]
    url = f"{service.sink.url}/actions/T9TK3CUKW/2/resolve"
    answer, _ = service.signed_click(block_actions(updated, action_id, value, ALICE, url, block_id), case="upper")
    assert answer.status_code == 200
    assert service.record(record_id).state == "resolved"
    [update] = service.posted("/actions/T9TK3CUKW/2/resolve")
    assert update["replace_original"] is True and buttons_of(update["blocks"]) == []
    outcomes = [b for b in update["blocks"] if b.get("block_id") == "escalation_outcome"]
    assert len(outcomes) == 1 and outcomes[0]["elements"][0]["text"].startswith("Resolved by *alice* at")


def test_a_click_without_the_message_still_updates_with_the_buttons_left(service):
    """Slack leaves ``message`` out for some surfaces (an ephemeral message's container): the
    record id is the button's ``value``, so the update still offers what is still allowed."""
    record_id = service.trigger()
    [posted] = service.posted("/api/chat.postMessage")
    payload = block_actions(
        slack_posted_message(posted), "escalation_acknowledge", record_id, ALICE, f"{service.sink.url}/r/e", "x"
    )
    del payload["message"]
    payload["container"] = {"type": "message", "message_ts": "1.2", "channel_id": "C0ONCALL1", "is_ephemeral": True}
    assert service.signed_click(payload)[0].status_code == 200
    [update] = service.posted("/r/e")
    assert update["replace_original"] is True and update["text"]
    assert [b[1:] for b in buttons_of(update["blocks"])] == [("escalation_resolve", record_id)]


def test_wrongly_signed_stale_and_future_clicks_are_refused(service):
    record_id = service.trigger()
    [posted] = service.posted("/api/chat.postMessage")
    payload = block_actions(
        slack_posted_message(posted), "escalation_resolve", record_id, ALICE, f"{service.sink.url}/r/x", "b"
    )
    body, now = form(payload), service.timestamp()
    version = service.record(record_id).version
    as_json = json.dumps(payload).encode()
    for timestamp, signature in [
        (now, slack_signature("not-the-signing-secret", now, body)),  # forged
        (now, slack_signature(SIGNING_SECRET, now, as_json)),  # signed the JSON, not the raw body
        (now, slack_signature(SIGNING_SECRET, service.timestamp(-1), body)),  # header says another time
        (now, slack_signature(SIGNING_SECRET, now, body).replace("v0=", "v1=")),
        (now, slack_signature(SIGNING_SECRET, now, body)[:-1]),
        (now, ""),  # unsigned
        ("", slack_signature(SIGNING_SECRET, now, body)),
        (service.timestamp(-301), slack_signature(SIGNING_SECRET, service.timestamp(-301), body)),  # stale
        (service.timestamp(301), slack_signature(SIGNING_SECRET, service.timestamp(301), body)),  # future
        ("1e9", slack_signature(SIGNING_SECRET, "1e9", body)),
    ]:
        answer = service.slack(body, timestamp, signature)
        assert answer.status_code == 401, (timestamp, signature)
        assert answer.json() == {"detail": "request signature not accepted"}
    assert service.record(record_id).version == version
    assert service.posted("/r/x") == []
    # five minutes either way is still fresh
    assert service.signed_click(payload, offset=-300)[0].status_code == 200
    assert service.record(record_id).state == "resolved"


def test_unknown_members_and_closed_records_are_answered_plainly_in_slack(service):
    record_id = service.trigger()
    [posted] = service.posted("/api/chat.postMessage")
    message = slack_posted_message(posted)
    version = service.record(record_id).version
    for member, expected in [
        (STRANGER, f"your Slack account ({STRANGER}) is not linked to an escalation user"),
        (VICTOR, "victor may not acknowledge this escalation"),
    ]:
        url = f"{service.sink.url}/r/{member}"
        payload = block_actions(message, "escalation_acknowledge", record_id, member, url, "b")
        assert service.signed_click(payload)[0].status_code == 200
        [told] = service.posted(f"/r/{member}")
        assert told["response_type"] == "ephemeral" and told["replace_original"] is False
        assert expected in told["text"], told["text"]
    assert service.record(record_id).version == version

    service.call(service.engine.resolve, record_id, "bob")
    payload = block_actions(message, "escalation_acknowledge", record_id, ALICE, f"{service.sink.url}/r/closed", "b")
    assert service.signed_click(payload)[0].status_code == 200
    [told] = service.posted("/r/closed")
    assert told == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": "Nothing to do: this escalation is already resolved (by bob).",
    }
    assert service.record(record_id).acknowledged_by is None


def test_other_interactions_are_answered_and_ignored(service):
    record_id = service.trigger()
    [posted] = service.posted("/api/chat.postMessage")
    message = slack_posted_message(posted)
    version = service.record(record_id).version
    other_app = block_actions(message, "open_runbook", record_id, ALICE, f"{service.sink.url}/r/o", "b")
    attachment = dict(other_app, type="interactive_message")
    attachment["actions"] = [{"name": "escalation_acknowledge", "value": record_id, "type": "button"}]
    for payload in (other_app, attachment):
        assert service.signed_click(payload)[0].status_code == 200
    assert service.record(record_id).version == version and service.posted("/r/o") == []


# ------------------------------------------------------------------ PagerDuty


def test_a_documented_webhook_acknowledges_then_resolves_without_echo(service):
    record_id = service.trigger()
    now = service.clock.now()
    assert [e["dedup_key"] for e in service.posted("/v2/enqueue")] == [record_id]  # what PagerDuty keys on
    body = pagerduty_webhook("incident.acknowledged", record_id, now, "5ac64822-4adc-4fda-ade0-410becf0de4f")
    answer = service.pagerduty(body, pagerduty_header(body, *WEBHOOK_SECRETS), name="x-pagerduty-signature")
    assert answer.status_code == 200, answer.text
    record = service.record(record_id)
    assert (record.state, record.acknowledged_by) == ("acknowledged", "Zoë Ångström (PagerDuty)")

    # delivered again (PagerDuty delivers at least once): 401, nothing changes
    version = record.version
    assert service.pagerduty(body, pagerduty_header(body, WEBHOOK_SECRETS[0])).status_code == 401
    assert service.record(record_id).version == version

    # resolved by PagerDuty itself (no person: agent null), signed only with the second secret
    body = pagerduty_webhook("incident.resolved", record_id, now, "01BRB6ZP4M6T8ZG4X6BP63ZB9O", agent=None)
    answer = service.pagerduty(body, pagerduty_header(body, WEBHOOK_SECRETS[1]), name="X-PAGERDUTY-SIGNATURE")
    assert answer.status_code == 200, answer.text
    assert service.record(record_id).state == "resolved"
    service.call(service.engine.advance, timedelta(minutes=5))
    assert [e["event_action"] for e in service.posted("/v2/enqueue")] == ["trigger"]  # nothing told back


def test_our_own_resolve_echoed_by_pagerduty_changes_nothing(service):
    record_id = service.trigger()
    service.call(service.engine.resolve, record_id, "alice")
    service.call(service.engine.advance, timedelta(seconds=1))
    assert [e["event_action"] for e in service.posted("/v2/enqueue")] == ["trigger", "resolve"]
    version = service.record(record_id).version
    body = pagerduty_webhook("incident.resolved", record_id, service.clock.now(), "01ECHO00000000000000000001")
    answer = service.pagerduty(body, pagerduty_header(body, WEBHOOK_SECRETS[0]))
    assert answer.status_code == 200 and "ignored" in answer.json()
    assert service.record(record_id).version == version
    service.call(service.engine.advance, timedelta(minutes=5))
    assert [e["event_action"] for e in service.posted("/v2/enqueue")] == ["trigger", "resolve"]


def test_wrongly_signed_stale_and_future_webhooks_change_nothing(service):
    record_id = service.trigger()
    now = service.clock.now()
    body = pagerduty_webhook("incident.acknowledged", record_id, now, "01F0RGED0000000000000000001")
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    good = pagerduty_header(body, WEBHOOK_SECRETS[0])
    version = service.record(record_id).version
    refused = [
        (body, pagerduty_header(body, "not-the-secret")),
        (body, pagerduty_header(compact, WEBHOOK_SECRETS[0])),  # signed other bytes of the same JSON
        (body, good.replace("v1=", "v2=")),
        (body, good[:-2]),
        (body, "v1="),
        (body, ""),
        (body, None),
    ]
    # PagerDuty retries for about 20 minutes: an event older than 30 minutes is stale
    late = now - timedelta(minutes=31)
    stale = pagerduty_webhook("incident.acknowledged", record_id, late, "01STALE0000000000000000001")
    ahead = pagerduty_webhook("incident.acknowledged", record_id, now + timedelta(minutes=6), "01FUTURE000000000001")
    refused += [
        (stale, pagerduty_header(stale, WEBHOOK_SECRETS[0])),
        (ahead, pagerduty_header(ahead, *WEBHOOK_SECRETS)),
    ]
    for sent, header in refused:
        answer = service.pagerduty(sent, header)
        assert answer.status_code == 401, header
        assert answer.json() == {"detail": "request signature not accepted"}
    assert service.record(record_id).version == version

    # a delivery PagerDuty retried 19 minutes after the event (our server was down) still counts
    retried = pagerduty_webhook("incident.acknowledged", record_id, now - timedelta(minutes=19), "01RETRIED00000000001")
    assert service.pagerduty(retried, f"{good}, {pagerduty_header(retried, WEBHOOK_SECRETS[0])}").status_code == 200
    assert service.record(record_id).state == "acknowledged"


def test_webhooks_about_other_incidents_are_answered_and_ignored(service):
    record_id = service.trigger()
    now = service.clock.now()
    version = service.record(record_id).version
    for n, body in enumerate(
        [
            # created in PagerDuty by hand: a key PagerDuty made up
            pagerduty_webhook("incident.acknowledged", "d3640fbd41094207a1c11e58e46b1662", now, "01OTHER01"),
            pagerduty_webhook("incident.acknowledged", None, now, "01OTHER02"),
            pagerduty_webhook("incident.priority_updated", record_id, now, "01OTHER03"),
            pagerduty_webhook("incident.reopened", record_id, now, "01OTHER04"),
            json.dumps(
                {
                    "event": {
                        "id": "01OTHER05",
                        "event_type": "incident.annotated",
                        "resource_type": "incident",
                        "occurred_at": now.isoformat().replace("+00:00", "Z"),
                        "agent": None,
                        "client": None,
                        "data": {
                            "incident": {"id": "PGR0VU2", "type": "incident_reference"},
                            "id": "P2LA89X",
                            "content": "I sure am glad we are using PagerDuty!",
                            "trimmed": False,
                            "type": "incident_note",
                        },
                    }
                }
            ).encode(),
        ]
    ):
        answer = service.pagerduty(body, pagerduty_header(body, WEBHOOK_SECRETS[n % 2]))
        assert answer.status_code == 200 and "ignored" in answer.json(), answer.text
    assert service.record(record_id).version == version
