"""Slack's buttons, PagerDuty's webhooks and the metrics against a real ``airflow api-server``
(two uvicorn workers: two engines on one store, as with two replicas), with requests signed the
way Slack and PagerDuty document it.

A local HTTP server stands in for Slack's Web API, the interactions' ``response_url`` and
PagerDuty's Events API (the connections point at it); a UDP socket stands in for StatsD
(``[metrics] statsd_on``). The Slack members map to the SimpleAuthManager users ``admin`` (role
ADMIN) and ``viewer`` (role VIEWER) through the Slack connection's ``slack_users`` extra.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from airflow_stack import API, AirflowStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIGNING_SECRET = "e2e-slack-signing-secret"
WEBHOOK_SECRET = "e2e-pagerduty-webhook-secret"

POLICIES_YAML = """\
escalation:
  default_policy: paging
  policies:
    - name: paging
      levels:
        - level: 1
          targets:
            - {type: channel, identifier: C0ALERTS, conn_id: slack_app}
            - {type: schedule, identifier: data-oncall, conn_id: pd}
"""


class Receiver:
    """Slack's Web API, the response_url and PagerDuty's Events API: answers ``{"ok": true}``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"form": body.decode(errors="replace")}
                receiver.requests.append((self.path, payload))
                answer = json.dumps({"ok": True, "status": "success", "dedup_key": payload.get("dedup_key")}).encode()
                self.send_response(200 if not self.path.startswith("/v2/") else 202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in list(self.requests) if p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    receiver = Receiver()
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(0.5)
    slack_users = {"U_ADMIN": "admin", "U_VIEWER": "viewer"}
    stack = AirflowStack(
        tmp_path_factory.mktemp("integrations-home"),
        policies_yaml=POLICIES_YAML,
        extra_env={
            "AIRFLOW_CONN_SLACK_APP": json.dumps(
                {
                    "conn_type": "slack",
                    "password": "xoxb-e2e",
                    "extra": {
                        "base_url": f"{receiver.url}/api/",
                        "signing_secret": SIGNING_SECRET,
                        "slack_users": slack_users,
                    },
                }
            ),
            "AIRFLOW_CONN_PD": json.dumps(
                {
                    "conn_type": "pagerduty_events",
                    "password": "ROUTING-KEY",
                    "schema": "http",
                    "host": "127.0.0.1",
                    "port": receiver.server.server_address[1],
                    "extra": {"webhook_secret": WEBHOOK_SECRET},
                }
            ),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd.getsockname()[1]),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        },
    )
    try:
        migrated = stack.cli("db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        stack.start()
        stack.receiver, stack.statsd = receiver, statsd
        yield stack
    finally:
        stack.stop()
        receiver.stop()
        statsd.close()


def slack_headers(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """https://api.slack.com/authentication/verifying-requests-from-slack"""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def pagerduty_headers(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    """https://developer.pagerduty.com/docs/webhooks/webhook-signatures/"""
    return {
        "X-PagerDuty-Signature": "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }


def click(record_id: str, action: str, member: str, response_url: str, blocks: list[Any]) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": member, "username": member.lower(), "team_id": "T0"},
        "response_url": response_url,
        "message": {"text": "escalation", "blocks": blocks},
        "actions": [{"type": "button", "action_id": f"escalation_{action}", "value": record_id}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def trigger(server: AirflowStack, incident: str) -> str:
    answer = server.post(f"{API}/escalations", json={"incident_id": incident, "context": {"dag_id": "orders_etl"}})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["record"]["id"]


def record(server: AirflowStack, record_id: str) -> dict[str, Any]:
    return server.get(f"{API}/escalations/{record_id}").json()


def slack_message(server: AirflowStack, record_id: str) -> dict[str, Any]:
    def posted() -> list[dict[str, Any]]:
        return [m for m in server.receiver.at("/api/chat.postMessage") if record_id in json.dumps(m)]

    return server.wait(posted, bool, 30, f"the Slack message of {record_id}")[0]


def post(server: AirflowStack, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.base}{API}{path}", content=body, headers=headers)


def test_slack_buttons_act_as_the_linked_user_once(server):
    record_id = trigger(server, "e2e-slack")
    message = slack_message(server, record_id)
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [(b["action_id"], b["value"]) for b in actions["elements"]] == [
        ("escalation_acknowledge", record_id),
        ("escalation_resolve", record_id),
    ]
    version = record(server, record_id)["version"]

    # forged, stale, unsigned: 401, nothing changes
    body = click(record_id, "acknowledge", "U_ADMIN", f"{server.receiver.url}/respond/forged", message["blocks"])
    now = int(time.time())
    for headers in (
        slack_headers(body, now, secret="guessed"),
        slack_headers(body, now - 600),
        {"Content-Type": "application/x-www-form-urlencoded"},
    ):
        assert post(server, "/integrations/slack/slack_app", body, headers).status_code == 401
    assert record(server, record_id)["version"] == version

    # a viewer is told, only them, that they may not
    body = click(record_id, "acknowledge", "U_VIEWER", f"{server.receiver.url}/respond/viewer", message["blocks"])
    assert post(server, "/integrations/slack/slack_app", body, slack_headers(body, int(time.time()))).status_code == 200
    [told] = server.wait(lambda: server.receiver.at("/respond/viewer"), bool, 15, "the viewer's answer")
    assert told["response_type"] == "ephemeral" and "viewer may not acknowledge" in told["text"]
    assert record(server, record_id)["version"] == version

    # the admin acknowledges; the message is updated in place
    body = click(record_id, "acknowledge", "U_ADMIN", f"{server.receiver.url}/respond/admin", message["blocks"])
    signed = slack_headers(body, int(time.time()))
    assert post(server, "/integrations/slack/slack_app", body, signed).status_code == 200
    acknowledged = record(server, record_id)
    assert (acknowledged["state"], acknowledged["acknowledged_by"]) == ("acknowledged", "admin")
    [update] = server.wait(lambda: server.receiver.at("/respond/admin"), bool, 15, "the message update")
    assert update["replace_original"] is True
    assert any("Acknowledged by *admin* at" in json.dumps(b) for b in update["blocks"])

    # the same payload again, to either worker: replayed
    for _ in range(4):
        assert post(server, "/integrations/slack/slack_app", body, signed).status_code == 401
    assert record(server, record_id)["version"] == acknowledged["version"]

    # PagerDuty hears of the acknowledgement through the outbox
    server.wait(
        lambda: [e for e in server.receiver.at("/v2/enqueue") if e["dedup_key"] == record_id],
        lambda events: [e["event_action"] for e in events] == ["trigger", "acknowledge"],
        30,
        "PagerDuty's trigger then acknowledge",
    )


def test_pagerduty_webhook_resolves_once_without_echo(server):
    record_id = trigger(server, "e2e-pagerduty")
    server.wait(
        lambda: [e for e in server.receiver.at("/v2/enqueue") if e["dedup_key"] == record_id], bool, 30, "the trigger"
    )
    # level 1's Slack message too: until a connection has been used its type is unknown, and a
    # change then writes it a follow-up that its sender drops (docs/channels.md)
    server.wait(
        lambda: [m for m in server.receiver.at("/api/chat.postMessage") if record_id in json.dumps(m)],
        bool,
        30,
        "the Slack message",
    )
    occurred = datetime.now(timezone.utc).isoformat()
    event = {
        "event": {
            "id": f"01E2E{record_id[:8]}",
            "event_type": "incident.resolved",
            "resource_type": "incident",
            "occurred_at": occurred,
            "agent": {"summary": "Pat Oncall", "type": "user_reference"},
            "data": {"id": "PINC", "type": "incident", "incident_key": record_id, "status": "resolved"},
        }
    }
    body = json.dumps(event).encode()
    version = record(server, record_id)["version"]
    assert post(server, "/integrations/pagerduty/pd", body, pagerduty_headers(body, "wrong")).status_code == 401
    stale = json.dumps(
        {"event": {**event["event"], "occurred_at": (datetime.now(timezone.utc) - timedelta(minutes=31)).isoformat()}}
    ).encode()
    assert post(server, "/integrations/pagerduty/pd", stale, pagerduty_headers(stale)).status_code == 401
    assert record(server, record_id)["version"] == version

    assert post(server, "/integrations/pagerduty/pd", body, pagerduty_headers(body)).status_code == 200
    resolved = record(server, record_id)
    assert (resolved["state"], resolved["resolved_by"]) == ("resolved", "Pat Oncall (PagerDuty)")
    for _ in range(4):
        assert post(server, "/integrations/pagerduty/pd", body, pagerduty_headers(body)).status_code == 401
    assert record(server, record_id)["version"] == resolved["version"]
    # nothing told back to PagerDuty
    assert [d["target"]["metadata"] for d in record(server, record_id)["deliveries"]] == [{}, {}]


def test_metrics_reach_statsd_from_the_api_server(server):
    trigger(server, "e2e-metrics")
    seen: list[str] = []

    def received() -> list[str]:
        try:
            while True:
                seen.extend(server.statsd.recv(65536).decode().splitlines())
        except TimeoutError:
            return seen

    server.wait(
        received,
        lambda lines: any(line.startswith("airflow.escalation.triggered.paging:") for line in lines),
        30,
        "airflow.escalation.triggered.paging at the StatsD socket",
    )
    assert any(line.startswith("airflow.escalation.active:") and line.endswith("|g") for line in received())
