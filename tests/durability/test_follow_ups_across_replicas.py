"""PagerDuty follow-ups through the shared outbox: two engines (replicas) on one store, each with
the service's delivery installed; whichever replica acknowledges or resolves, PagerDuty (a real
local HTTP server behind the ``pagerduty_events`` connection, through the PagerDuty provider's
hook) hears each event exactly once, on every backend."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_escalation import EscalationLevel, EscalationPolicy, EscalationTarget
from airflow_escalation.testing import RecordingHandler

if "AIRFLOW_HOME" not in os.environ:  # the connection lookup imports Airflow: never ~/airflow
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="escalation-airflow-home-")


class EventsApi:
    """PagerDuty's Events API v2 on 127.0.0.1: answers 202 with the event's dedup key."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                event = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                events.append(event)
                body = json.dumps({"status": "success", "dedup_key": event.get("dedup_key")}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def events_api(monkeypatch):
    api = EventsApi()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PD_REPLICAS",
        json.dumps(
            {
                "conn_type": "pagerduty_events",
                "password": "KEY",
                "schema": "http",
                "host": "127.0.0.1",
                "port": api.port,
            }
        ),
    )
    yield api
    api.server.shutdown()
    api.server.server_close()


PAGING = EscalationPolicy(
    name="paging",
    levels=[
        EscalationLevel(level=1, targets=[EscalationTarget.schedule("oncall", conn_id="pd_replicas")]),
        EscalationLevel(level=2, delay_minutes=30, targets=[EscalationTarget.user("boss")]),
    ],
)


async def replicas(storage: Any, make_engine: Any, clock: Any) -> tuple[Any, Any]:
    from airflow_escalation.service.delivery import install_delivery

    engines = []
    for _ in range(2):
        engine = await make_engine(storage.open(), RecordingHandler(clock))
        engine.register_policy(PAGING)
        install_delivery(engine, base_url="http://airflow.example.com", action_secret="s")
        engines.append(engine)
    return engines[0], engines[1]


async def sweep(*engines: Any) -> None:
    for engine in engines:
        await engine.advance(timedelta(seconds=1))
    for engine in engines:
        await engine.drain()


async def test_each_follow_up_reaches_pagerduty_once_whichever_replica_acted(storage, make_engine, clock, events_api):
    a, b = await replicas(storage, make_engine, clock)
    record_id = (await a.trigger("inc-replicas", {"severity": "critical"}, "paging")).record.id
    await sweep(a, b)
    assert (await b.acknowledge(record_id, "alice")).success  # on the other replica
    await sweep(b, a)
    await sweep(a, b)
    assert (await a.resolve(record_id, "bob")).success
    await sweep(a, b)
    await sweep(b, a)
    assert [(e["event_action"], e["dedup_key"]) for e in events_api.events] == [
        ("trigger", record_id),
        ("acknowledge", record_id),
        ("resolve", record_id),
    ]
    states = [(d.round, d.target.metadata.get("follow_up"), d.state.value) for d in a.get_deliveries(record_id)]
    assert states == [(0, None, "sent"), (-1, "acknowledge", "sent"), (-1, "resolve", "sent")]
