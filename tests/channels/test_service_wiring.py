"""The service installs the channels on the engine it builds: a trigger through the REST API
reaches the local HTTP sink through its connection; targets without a connection still go to the
logging handler."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi.testclient import TestClient

from airflow_escalation.airflow_config import EscalationSettings
from airflow_escalation.channels import ChannelResolver
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.service.delivery import ChannelDelivery

API = "/api/v1"


class User:
    def get_name(self) -> str:
        return "carol"

    def get_id(self) -> str:
        return "carol"


def _client(settings: EscalationSettings) -> TestClient:
    app = create_app(settings=settings)
    app.dependency_overrides[auth.require_read] = User
    app.dependency_overrides[auth.require_write] = User
    app.dependency_overrides[auth.read_scope] = auth.DagScope.everything
    return TestClient(app)


def _wait(predicate, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_service_delivers_conn_id_targets_through_channels(tmp_path, sink, http_conn, caplog):
    settings = EscalationSettings(
        metadata_db_url="sqlite://",
        store_url=f"sqlite:///{tmp_path}/s.db",
        scheduler="asyncio",
        check_interval_seconds=3600,
        base_url="http://airflow.test:8080",
    )
    policy = {
        "name": "p",
        "levels": [
            {
                "level": 1,
                "targets": [
                    {"type": "webhook", "identifier": "/from-service", "conn_id": http_conn},
                    {"type": "user", "identifier": "lead"},
                ],
            }
        ],
    }
    with caplog.at_level(logging.INFO, logger="airflow_escalation.delivery"), _client(settings) as c:
        service = c.app.state.service
        assert isinstance(service.delivery, ChannelDelivery)
        assert any(isinstance(r, ChannelResolver) for r in service.engine._channel_resolvers)
        assert c.get(f"{API}/health").json()["errors"] == []

        r = c.post(
            f"{API}/escalations",
            json={"incident_id": "svc-1", "policy": policy, "context": {"dag_id": "d", "run_id": "r", "task_id": "t"}},
        )
        assert r.status_code == 201
        record_id = r.json()["record"]["id"]
        _wait(lambda: sink.requests)
        body = sink.requests[0].json
        assert sink.requests[0].path == "/from-service"
        assert body["record_id"] == record_id and body["event"] == "escalation.notify"
        assert body["links"]["task"] == "http://airflow.test:8080/dags/d/runs/r/tasks/t"

        def all_sent():
            detail = c.get(f"{API}/escalations/{record_id}").json()
            return [d["state"] for d in detail["deliveries"]] == ["sent", "sent"] and detail

        _wait(all_sent)
    assert any("ESCALATION NOTIFICATION target=user:lead" in rec.getMessage() for rec in caplog.records)


def test_injected_engine_gets_no_channels_unless_installed():
    from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
    from airflow_escalation.scheduling.base import SchedulerConfig

    engine = EscalationEngine(
        EscalationEngineConfig(scheduler_config=SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600))
    )
    with _client_for_engine(engine) as c:
        assert c.app.state.service.delivery is None
        assert engine._channel_resolvers == []


def _client_for_engine(engine) -> TestClient:
    app = create_app(engine=engine)
    app.dependency_overrides[auth.require_read] = User
    app.dependency_overrides[auth.require_write] = User
    app.dependency_overrides[auth.read_scope] = auth.DagScope.everything
    return TestClient(app)
