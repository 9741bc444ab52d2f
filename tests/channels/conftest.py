"""Fixtures for the channel tests: a real local HTTP sink, a real local SMTP server (aiosmtpd),
Airflow connections from ``AIRFLOW_CONN_<ID>`` environment variables (no database), and an
engine on a fake clock with the channels installed the way the service installs them.

Airflow is imported with a throw-away AIRFLOW_HOME (never ~/airflow) unless one is set, and here,
at collection: its first import configures logging and replaces the root logger's handlers, so a
test that happened to import it first (``create_app`` reading ``[api]``, a connection look-up)
would lose ``caplog``'s handler and see no records when run alone.
"""

from __future__ import annotations

import os
import tempfile

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="escalation-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy as email_policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import airflow  # noqa: F401
import pytest

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service.delivery import install_delivery
from airflow_escalation.testing import FakeClock, RecordingHandler

from channel_support import BASE_URL, SECRET, T0, free_port


# ------------------------------------------------------------------------------ HTTP sink


@dataclass
class SinkRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpSink:
    """A real HTTP server on 127.0.0.1 that records every request.

    Answers 200 with ``{"ok": true, "status": "success", "dedup_key": <the request's>}`` (good
    for webhooks, Slack's Web API and PagerDuty's Events API) unless told otherwise with
    :meth:`fail_next`.
    """

    url: str = ""
    port: int = 0
    requests: list[SinkRequest] = field(default_factory=list)
    _next: list[tuple[int, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int = 500, body: str = "upstream exploded", times: int = 1) -> None:
        with self._lock:
            self._next.extend([(status, body)] * times)

    def _answer(self, request: SinkRequest) -> tuple[int, str, str]:
        with self._lock:
            self.requests.append(request)
            if self._next:
                status, body = self._next.pop(0)
                return status, body, "text/plain"
        dedup = None
        try:
            dedup = request.json.get("dedup_key")
        except Exception:
            pass
        return (
            200,
            json.dumps({"ok": True, "status": "success", "message": "Event processed", "dedup_key": dedup}),
            "application/json",
        )


@pytest.fixture
def sink():
    state = HttpSink()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            request = SinkRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status, text, content_type = state._answer(request)
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if 300 <= status < 400:  # fail_next(302, "http://elsewhere/x"): the body is the Location
                self.send_header("Location", text)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client closing a kept-alive connection is not a test failure

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.port = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------ SMTP server


@dataclass
class SmtpInbox:
    host: str
    port: int
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=email_policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), mail))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    inbox = SmtpInbox("127.0.0.1", free_port())
    controller = Controller(inbox, hostname=inbox.host, port=inbox.port)
    controller.start()
    yield inbox
    controller.stop()


# ------------------------------------------------------------------------------ connections


@pytest.fixture
def connections(monkeypatch):
    """``connections(conn_id, conn_type=..., host=..., ...)`` defines AIRFLOW_CONN_<ID> as JSON."""

    def define(conn_id: str, **fields: Any) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))

    return define


@pytest.fixture
def http_conn(connections, sink):
    connections("hooks", conn_type="http", host="127.0.0.1", port=sink.port, extra={"X-Api-Key": "k-123"})
    return "hooks"


@pytest.fixture
def smtp_conn(connections, smtp_server):
    connections(
        "mail",
        conn_type="smtp",
        host=smtp_server.host,
        port=smtp_server.port,
        extra={
            "from_email": "airflow@example.com",
            "disable_ssl": True,
            "disable_tls": True,
            "timeout": 5,
            "retry_limit": 0,
        },
    )
    return "mail"


# ------------------------------------------------------------------------------ engine


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def recorder(clock) -> RecordingHandler:
    return RecordingHandler(clock)


@pytest.fixture
async def make_engine(clock, recorder):
    """``await make_engine(*policies, **SchedulerConfig fields)`` -> (engine, delivery)."""
    engines: list[EscalationEngine] = []

    async def factory(*policies, action_secret: str | None = SECRET, **sched: Any):
        sched = {
            "scheduler_type": "memory",
            "retry_delay_seconds": 60,
            "max_attempts": 3,
            "job_timeout_seconds": 15,
            **sched,
        }
        engine = EscalationEngine(
            EscalationEngineConfig(
                clock=clock, default_notification_handler=recorder, scheduler_config=SchedulerConfig(**sched)
            )
        )
        for policy in policies:
            engine.register_policy(policy)
        delivery = install_delivery(engine, base_url=BASE_URL, action_secret=action_secret)
        engines.append(engine)
        await engine.start()
        return engine, delivery

    yield factory
    for engine in engines:
        await engine.stop(timeout=5)


# ------------------------------------------------------------------------------ links


@pytest.fixture
def fake_links(monkeypatch):
    """Stand in for ``airflow_escalation.service.links`` with its agreed signatures."""
    import hashlib
    import sys
    import types

    module = types.ModuleType("airflow_escalation.service.links")
    made: list[tuple[str, str, str, int]] = []

    def make_action_token(record_id, action, *, secret, ttl_seconds=86400, now=None):
        made.append((record_id, action, secret, ttl_seconds))
        sig = hashlib.sha256(f"{secret}:{record_id}:{action}".encode()).hexdigest()[:16]
        return f"{action}.{record_id}.{sig}"

    def action_url(base_url, token):
        return f"{base_url.rstrip('/')}/escalation/ui/action?token={token}"

    module.make_action_token = make_action_token
    module.action_url = action_url
    module.made = made
    monkeypatch.setitem(sys.modules, "airflow_escalation.service.links", module)
    import airflow_escalation.service as service_package

    monkeypatch.setattr(service_package, "links", module, raising=False)
    return module
