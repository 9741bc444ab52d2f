"""The engine's metrics through Airflow's own Stats, read back from a real UDP socket standing in
for a StatsD server: Airflow configured with ``[metrics] statsd_on`` and initialized the way the
API server initializes it; the engine on a fake clock, so times are exact."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service.delivery import install_delivery
from airflow_escalation.service.metrics import airflow_stats, install_metrics

from channel_support import BASE_URL, SECRET, policy

SENTINEL = "escalation_test.sentinel"


class StatsdListener:
    """A UDP socket on 127.0.0.1 that Airflow's StatsD client sends to."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]

    def received(self) -> list[str]:
        """Every metric line sent until now (a sentinel marks "now": UDP to localhost keeps order)."""
        airflow_stats().incr(SENTINEL)
        lines: list[str] = []
        while True:
            packet = self.sock.recv(65536).decode()
            for line in packet.splitlines():
                if line.startswith(f"airflow.{SENTINEL}:"):
                    return lines
                lines.append(line)


@pytest.fixture
def statsd(monkeypatch):
    from airflow._shared.observability.metrics import stats
    from airflow._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.api_fastapi.app import _initialize_api_server_stats

    listener = StatsdListener()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    _initialize_api_server_stats()  # what the API server's lifespan does
    yield listener
    stats.initialize(factory=NoStatsLogger, export_legacy_names=False)
    listener.sock.close()


@pytest.fixture
async def engine_with_metrics(clock, recorder):
    engines: list[EscalationEngine] = []

    async def build(*policies: dict[str, Any], metrics_enabled: bool = True) -> EscalationEngine:
        engine = EscalationEngine(
            EscalationEngineConfig(
                clock=clock,
                default_notification_handler=recorder,
                metrics_enabled=metrics_enabled,
                scheduler_config=SchedulerConfig(scheduler_type="memory", retry_delay_seconds=60, max_attempts=2),
            )
        )
        for item in policies:
            engine.register_policy(item)
        delivery = install_delivery(engine, base_url=BASE_URL, action_secret=SECRET)
        install_metrics(engine, delivery)
        await engine.start()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        await engine.stop(timeout=5)


def counts(lines: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if rest.endswith("|c"):
            out[name] = out.get(name, 0) + int(rest[:-2])
    return out


def timings(lines: list[str], name: str) -> list[float]:
    return [float(line.split(":")[1][:-3]) for line in lines if line.startswith(f"{name}:") and line.endswith("|ms")]


async def test_escalation_and_delivery_metrics_reach_statsd(statsd, engine_with_metrics, sink, http_conn):
    engine = await engine_with_metrics(
        policy(
            [{"type": "webhook", "identifier": "/w", "conn_id": http_conn}, {"type": "user", "identifier": "lead"}],
            name="pipe.line",  # a dot would split the StatsD name: it becomes "_"
            cooldown_minutes=60,
        ),
        policy(
            [{"type": "user", "identifier": "a"}],
            [{"type": "user", "identifier": "b"}],
            [{"type": "user", "identifier": "c"}],
            name="bounded",
            max_escalations=1,
        ),
    )
    sink.fail_next(500, times=1)
    record_id = (await engine.trigger("inc-1", {"severity": "high"}, "pipe.line")).record.id
    await engine.advance(timedelta(seconds=1))  # the webhook fails: retried at +61 s
    await engine.advance(timedelta(seconds=60))
    assert (await engine.acknowledge(record_id, "alice")).success
    await engine.advance(timedelta(seconds=2))
    assert (await engine.resolve(record_id, "alice")).success
    assert (await engine.trigger("inc-1", {"severity": "high"}, "pipe.line")).code == "suppressed"
    bounded = (await engine.trigger("inc-2", {}, "bounded")).record.id
    await engine.advance(timedelta(minutes=31))  # L2 at 15 (one escalation), L3 at 30: timed out
    assert engine.get_record(bounded).state == "timed_out"
    await engine.drain()

    lines = statsd.received()
    got = counts(lines)
    assert {name: n for name, n in got.items() if ".delivery." not in name} == {
        "airflow.escalation.triggered": 2,
        "airflow.escalation.triggered.pipe_line": 1,
        "airflow.escalation.triggered.bounded": 1,
        "airflow.escalation.acknowledged": 1,
        "airflow.escalation.acknowledged.pipe_line": 1,
        "airflow.escalation.resolved": 1,
        "airflow.escalation.resolved.pipe_line": 1,
        "airflow.escalation.suppressed": 1,
        "airflow.escalation.suppressed.pipe_line": 1,
        "airflow.escalation.escalated": 1,
        "airflow.escalation.escalated.bounded": 1,
        "airflow.escalation.timed_out": 1,
        "airflow.escalation.timed_out.bounded": 1,
    }
    deliveries = {name: n for name, n in got.items() if ".delivery." in name}
    assert deliveries == {
        "airflow.escalation.delivery.sent": 4,  # the webhook (on its retry), lead, a, b
        "airflow.escalation.delivery.sent.http": 1,
        "airflow.escalation.delivery.sent.handler": 3,
        "airflow.escalation.delivery.retried": 1,
        "airflow.escalation.delivery.retried.http": 1,
    }
    assert timings(lines, "airflow.escalation.time_to_acknowledge.pipe_line") == [61000.0]
    assert timings(lines, "airflow.escalation.time_to_resolve.pipe_line") == [63000.0]
    lateness = timings(lines, "airflow.escalation.timer_lateness")
    assert lateness and all(value >= 0 for value in lateness)
    gauges = [line for line in lines if line.startswith("airflow.escalation.active:")]
    assert gauges and gauges[0] == "airflow.escalation.active:1|g"


async def test_metrics_enabled_false_emits_nothing(statsd, engine_with_metrics):
    engine = await engine_with_metrics(policy([{"type": "user", "identifier": "lead"}]), metrics_enabled=False)
    record_id = (await engine.trigger("inc-off", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    assert (await engine.resolve(record_id, "alice")).success
    await engine.drain()
    assert [line for line in statsd.received() if ".escalation." in line] == []
