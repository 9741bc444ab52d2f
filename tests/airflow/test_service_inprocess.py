"""The service app in-process (TestClient, memory store): the contract's status codes and
bodies, without an API server. Airflow's authentication is replaced by a fixed user here; the
real authentication and authorization are tested against a running API server in
test_api_server.py."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_escalation.airflow_config import EscalationSettings
from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.stores.base import StoreError
from airflow_escalation.stores.memory import InMemoryEscalationStore

API = "/api/v1"

POLICIES = {
    "escalation": {
        "default_policy": "ops",
        "policies": [
            {
                "name": "ops",
                "levels": [
                    {"level": 1, "targets": [{"type": "user", "identifier": "lead"}]},
                    {"level": 2, "delay_minutes": 60, "targets": [{"type": "user", "identifier": "manager"}]},
                ],
            },
            {
                "name": "critical_only",
                "severity_filter": ["critical"],
                "cooldown_minutes": 60,
                "levels": [
                    {"level": 1, "targets": ["oncall"]},
                ],
            },
        ],
    }
}


class User:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name

    def get_id(self) -> str:
        return self.name


def make_client(policy_data: dict | None = None, store: Any = None, **cfg: Any) -> TestClient:
    policy_config = EscalationPolicyConfig.from_dict(policy_data or POLICIES)
    for key, value in cfg.items():
        setattr(policy_config, key, value)
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=store or InMemoryEscalationStore(),
            scheduler_config=SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600),
        )
    )
    for policy in policy_config.policies.values():
        engine.register_policy(policy)
    app = create_app(engine=engine, policy_config=policy_config)
    user = User("alice")
    app.dependency_overrides[auth.require_read] = lambda: user
    app.dependency_overrides[auth.require_write] = lambda: user
    app.dependency_overrides[auth.read_scope] = auth.DagScope.everything
    return TestClient(app)


@pytest.fixture
def client():
    with make_client() as c:
        yield c


def trigger(client: TestClient, incident: str = "inc-1", **body: Any):
    return client.post(f"{API}/escalations", json={"incident_id": incident, **body})


# ------------------------------------------------------------------ trigger


def test_trigger_creates_then_joins(client):
    first = trigger(client, context={"severity": "high", "dag_id": "etl"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {
        "success",
        "action",
        "code",
        "message",
        "error",
        "record",
        "targets_notified",
        "targets_queued",
    }
    assert body["success"] is True and body["code"] == "ok" and body["action"] == "trigger"
    record = body["record"]
    assert record["policy_name"] == "ops"  # the default policy
    assert record["current_level"] == 1 and record["state"] == "active"
    assert record["history"][0]["event"] == "triggered" and record["history"][0]["actor"] == "alice"
    # paged, but not sent: no handler or channel delivers to user:lead here (it is retried)
    assert [t["identifier"] for t in body["targets_queued"]] == ["lead"]
    assert body["targets_notified"] == []
    assert record["created_at"].endswith("+00:00")
    again = trigger(client, context={"dag_id": "etl"})
    assert again.status_code == 200
    assert again.json()["action"] == "trigger_existing" and again.json()["record"]["id"] == record["id"]


def test_trigger_gates_answer_200(client):
    filtered = trigger(client, policy_name="critical_only", context={"severity": "low"})
    assert filtered.status_code == 200
    assert filtered.json()["success"] is False and filtered.json()["code"] == "filtered"
    made = trigger(client, "inc-c", policy_name="critical_only", context={"severity": "critical"})
    assert made.status_code == 201
    rid = made.json()["record"]["id"]
    assert client.post(f"{API}/escalations/{rid}/resolve").status_code == 200
    suppressed = trigger(client, "inc-c", policy_name="critical_only", context={"severity": "critical"})
    assert suppressed.status_code == 200 and suppressed.json()["code"] == "suppressed"


def test_trigger_disabled_globally_and_capacity():
    with make_client(global_enabled=False) as c:
        r = trigger(c)
        assert r.status_code == 200 and r.json()["code"] == "filtered"
        assert "disabled globally" in r.json()["error"]
    with make_client(max_concurrent_escalations=1) as c:
        assert trigger(c, "a").status_code == 201
        assert trigger(c, "a").json()["action"] == "trigger_existing"  # joining is never refused
        r = trigger(c, "b")
        assert r.status_code == 200 and r.json()["code"] == "capacity"


def test_trigger_unknown_policy_404(client):
    r = trigger(client, policy_name="nope")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found" and "nope" in r.json()["detail"]


def test_trigger_inline_policy(client):
    policy = {"name": "inline", "levels": [{"level": 1, "targets": ["x"]}]}
    r = trigger(client, "inc-inline", policy=policy)
    assert r.status_code == 201 and r.json()["record"]["policy_name"] == "inline"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"incident_id": ""}, "incident_id"),
        ({"incident_id": "x" * 256}, "incident_id"),
        ({"incident_id": 5}, "incident_id"),
        ({}, "incident_id"),
        ({"incident_id": "i", "context": "not a mapping"}, "context"),
        ({"incident_id": "i", "trigger_type": "whenever"}, "trigger_type"),
        ({"incident_id": "i", "triggered_by": "mallory"}, "triggered_by"),
        ({"incident_id": "i", "policy": {"name": "p", "levels": 5}}, "policy"),
        ({"incident_id": "i", "policy": {"name": "p", "levels": [{"level": 2}]}}, "levels"),
        ({"incident_id": "i", "policy": {"name": "p", "levels": [{"level": 1, "delay_minutes": -1}]}}, "delay_minutes"),
        ({"incident_id": "i", "policy": {"levels": [{"level": 1}]}}, "policy.name"),
        ({"incident_id": "i", "policy": {"name": "p", "triggers": 5, "levels": [{"level": 1}]}}, "policy"),
        ({"incident_id": "i", "policy": {"name": "p" * 300, "levels": [{"level": 1}]}}, "policy.name"),
    ],
)
def test_trigger_invalid_body_422(client, body, fragment):
    r = client.post(f"{API}/escalations", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_trigger_not_json_422(client):
    r = client.post(f"{API}/escalations", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_trigger_unknown_condition_is_422_not_500(client):
    policy = {
        "name": "cond",
        "levels": [
            {"level": 1, "targets": ["a"]},
            {"level": 2, "delay_minutes": 0, "conditions": {"moon_phase": "full"}, "targets": ["b"]},
        ],
    }
    r = trigger(client, "inc-cond", policy=policy)
    assert r.status_code == 422 and "moon_phase" in r.json()["detail"]


# ------------------------------------------------------------------ reads


def test_get_one_with_deliveries_and_404(client):
    rid = trigger(client, context={"dag_id": "etl"}).json()["record"]["id"]
    r = client.get(f"{API}/escalations/{rid}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == rid and body["deliveries"][0]["target"]["identifier"] == "lead"
    assert {"history", "deliveries", "next_escalation_at", "closed_at", "version"} <= set(body)
    assert client.get(f"{API}/escalations/missing").status_code == 404
    assert client.get(f"{API}/escalations/missing").json() == {"detail": "escalation 'missing' not found"}
    assert client.get(f"{API}/escalations/{'x' * 500}").status_code == 404


def test_list_filters(client):
    a = trigger(client, "a", context={"dag_id": "etl"}).json()["record"]["id"]
    b = trigger(client, "b", context={"dag_id": "other"}).json()["record"]["id"]
    client.post(f"{API}/escalations/{b}/acknowledge")
    r = client.get(f"{API}/escalations").json()
    assert r["total"] == 2 and r["limit"] == 50 and r["offset"] == 0
    assert [e["id"] for e in r["escalations"]] == [b, a]  # newest first
    assert [e["id"] for e in client.get(f"{API}/escalations?dag_id=etl").json()["escalations"]] == [a]
    assert [e["id"] for e in client.get(f"{API}/escalations?incident=b").json()["escalations"]] == [b]
    assert [e["id"] for e in client.get(f"{API}/escalations?active=true").json()["escalations"]] == [a]
    assert [e["id"] for e in client.get(f"{API}/escalations?active=false").json()["escalations"]] == [b]
    assert client.get(f"{API}/escalations?state=acknowledged&state=active").json()["total"] == 2
    assert client.get(f"{API}/escalations?state=acknowledged&active=true").json()["total"] == 0
    assert client.get(f"{API}/escalations?policy=critical_only").json()["total"] == 0
    page = client.get(f"{API}/escalations?limit=1&offset=1").json()
    assert [e["id"] for e in page["escalations"]] == [a] and page["total"] == 2


@pytest.mark.parametrize("query", ["state=bogus", "limit=0", "limit=501", "offset=-1", "active=perhaps"])
def test_list_bad_query_422(client, query):
    assert client.get(f"{API}/escalations?{query}").status_code == 422


# ------------------------------------------------------------------ actions


def test_actions_and_conflicts(client):
    rid = trigger(client).json()["record"]["id"]
    ack = client.post(f"{API}/escalations/{rid}/acknowledge", json={"note": "on it"})
    assert ack.status_code == 200
    assert ack.json()["record"]["acknowledged_by"] == "alice" and ack.json()["record"]["state"] == "acknowledged"
    again = client.post(f"{API}/escalations/{rid}/acknowledge")
    assert again.status_code == 409 and again.json()["code"] == "conflict" and again.json()["detail"]
    assert client.post(f"{API}/escalations/{rid}/escalate").status_code == 409
    forced = client.post(f"{API}/escalations/{rid}/escalate", json={"force": True})
    assert forced.status_code == 200 and forced.json()["record"]["current_level"] == 2
    done = client.post(f"{API}/escalations/{rid}/resolve", json={})
    assert done.status_code == 200 and done.json()["record"]["resolved_by"] == "alice"
    for action in ("acknowledge", "resolve", "cancel", "escalate"):
        r = client.post(f"{API}/escalations/{rid}/{action}")
        assert r.status_code == 409, (action, r.text)
        r = client.post(f"{API}/escalations/nope/{action}")
        assert r.status_code == 404 and r.json()["code"] == "not_found" and r.json()["action"] == action
        assert client.post(f"{API}/escalations/{'y' * 100}/{action}").status_code == 404


def test_cancel_records_actor_and_reason(client):
    rid = trigger(client).json()["record"]["id"]
    r = client.post(f"{API}/escalations/{rid}/cancel", json={"reason": "false alarm"})
    assert r.status_code == 200 and r.json()["record"]["state"] == "cancelled"
    assert r.json()["record"]["metadata"]["cancelled_by"] == "alice"


@pytest.mark.parametrize(
    "action, body",
    [
        ("acknowledge", {"note": 5}),
        ("acknowledge", {"acknowledged_by": "mallory"}),
        ("resolve", {"note": "x" * 5000}),
        ("cancel", {"reason": ["x"]}),
        ("escalate", {"force": "very"}),
        ("acknowledge", [1, 2]),
    ],
)
def test_action_bad_body_422(client, action, body):
    rid = trigger(client).json()["record"]["id"]
    assert client.post(f"{API}/escalations/{rid}/{action}", json=body).status_code == 422


# ------------------------------------------------------------------ policies, stats, health


def test_policies(client):
    r = client.get(f"{API}/policies")
    assert r.status_code == 200
    assert [p["name"] for p in r.json()["policies"]] == ["ops", "critical_only"]
    one = client.get(f"{API}/policies/ops").json()
    assert one["levels"][1]["delay_minutes"] == 60 and one["triggers"] == ["unacknowledged"]
    assert client.get(f"{API}/policies/nope").status_code == 404


@pytest.mark.parametrize(
    "body, valid, names, error",
    [
        ({"policy": {"name": "p", "levels": [{"level": 1}]}}, True, ["p"], None),
        ({"policy": {"name": "p", "levels": []}}, False, [], "at least one level"),
        ({"yaml": "name: p\nlevels:\n  - level: 1\n"}, True, ["p"], None),
        (
            {
                "yaml": "escalation:\n  policies:\n    - name: a\n      levels: [{level: 1}]\n"
                "    - name: b\n      levels: [{level: 1}]\n"
            },
            True,
            ["a", "b"],
            None,
        ),
        ({"yaml": "- {name: a, levels: [{level: 1}]}\n- {name: a, levels: [{level: 1}]}\n"}, False, [], "duplicate"),
        ({"yaml": "/etc/passwd"}, False, [], "expected a mapping"),  # text, never a path to read
        ({"yaml": "name: p\nlevels: 5\n"}, False, [], ""),
    ],
)
def test_validate(client, body, valid, names, error):
    r = client.post(f"{API}/policies/validate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is valid and r.json()["policies"] == names
    if error is not None:
        assert error in " ".join(r.json()["errors"])
    # nothing was registered
    assert [p["name"] for p in client.get(f"{API}/policies").json()["policies"]] == ["ops", "critical_only"]


def test_validate_refuses_yaml_it_cannot_read(client):
    r = client.post(f"{API}/policies/validate", json={"yaml": "a: [unclosed"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "yaml"]
    assert r.json()["detail"][0]["msg"].startswith("yaml:")


@pytest.mark.parametrize("body", [{}, {"policy": {}, "yaml": ""}, {"yaml": 5}, {"policy": "x"}])
def test_validate_needs_exactly_one_input(client, body):
    assert client.post(f"{API}/policies/validate", json=body).status_code == 422


def test_stats_and_health(client):
    rid = trigger(client).json()["record"]["id"]
    client.post(f"{API}/escalations/{rid}/acknowledge")
    stats = client.get(f"{API}/stats").json()
    assert stats["total_escalations"] == 1 and stats["acknowledgment_rate"] == 1.0
    health = client.get(f"{API}/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["running"] is True
    assert health.json()["store"] == "memory" and health.json()["engine_id"]


def test_openapi_documents_models(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"Record", "RecordDetail", "Result", "TriggerRequest", "Delivery", "Policy", "Stats"} <= set(schemas)
    assert "201" in spec["paths"][f"{API}/escalations"]["post"]["responses"]


# ------------------------------------------------------------------ failures answer 503, not 500


class BrokenStore(InMemoryEscalationStore):
    def get(self, record_id):
        raise StoreError("memory store: database is on fire")


def test_store_error_is_503():
    with make_client(store=BrokenStore()) as c:
        r = c.get(f"{API}/escalations/abc")
        assert r.status_code == 503 and "on fire" in r.json()["detail"]


def _settings(**kw: Any) -> EscalationSettings:
    return EscalationSettings(**{"metadata_db_url": "sqlite://", "check_interval_seconds": 3600, **kw})


def _client_for(settings: EscalationSettings) -> TestClient:
    app = create_app(settings=settings)
    user = User("bob")
    app.dependency_overrides[auth.require_read] = lambda: user
    app.dependency_overrides[auth.require_write] = lambda: user
    app.dependency_overrides[auth.read_scope] = auth.DagScope.everything
    return TestClient(app)


def test_disabled_service_answers_503():
    with _client_for(_settings(enabled=False)) as c:
        assert c.get(f"{API}/escalations").status_code == 503
        health = c.get(f"{API}/health")
        assert health.status_code == 503 and health.json()["status"] == "disabled"
        assert "enabled = False" in c.post(f"{API}/escalations", json={"incident_id": "x"}).json()["detail"]


def test_unreachable_store_answers_503_and_keeps_the_app_up(monkeypatch):
    monkeypatch.setattr("airflow_escalation.service.app._STORE_OPEN_RETRY_SECONDS", 0)
    with _client_for(_settings(store_url="postgresql+psycopg://nobody@127.0.0.1:1/nothing")) as c:
        health = c.get(f"{API}/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert "cannot open the escalation store" in health.json()["errors"][0]
        assert c.get(f"{API}/escalations").status_code == 503


def test_bad_policies_file_degrades_but_runs(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("escalation:\n  policies:\n    - name: x\n      levels: []\n")
    with _client_for(_settings(policies_file=str(bad), store_url=f"sqlite:///{tmp_path}/s.db")) as c:
        health = c.get(f"{API}/health").json()
        assert health["status"] == "degraded" and health["running"] is True
        assert "policies_file" in health["errors"][0] and "at least one level" in health["errors"][0]
        assert c.get(f"{API}/policies").json() == {"policies": []}
    with _client_for(
        _settings(policies_file=str(tmp_path / "missing.yaml"), store_url=f"sqlite:///{tmp_path}/s.db")
    ) as c:
        assert "file not found" in c.get(f"{API}/health").json()["errors"][0]


def test_service_from_settings_uses_sql_store_and_policies_file(tmp_path):
    policies = tmp_path / "p.yaml"
    policies.write_text(
        "escalation:\n  store: {type: sqlite, db_path: ignored.db}\n  policies:\n"
        "    - name: p\n      levels: [{level: 1, targets: [lead]}]\n"
    )
    with _client_for(_settings(policies_file=str(policies), store_url=f"sqlite:///{tmp_path}/s.db")) as c:
        health = c.get(f"{API}/health").json()
        assert health == {**health, "status": "ok", "store": "sql", "running": True, "errors": []}
        r = c.post(f"{API}/escalations", json={"incident_id": "i"})
        assert r.status_code == 201 and r.json()["record"]["history"][0]["actor"] == "bob"
        assert c.app.state.engine is c.app.state.service.engine
    assert not (tmp_path / "ignored.db").exists()


def test_engine_setup_replaces_the_notification_handler(tmp_path):
    from airflow_escalation.service import add_engine_setup, remove_engine_setup

    seen: list[tuple[str, int, str]] = []

    async def handler(record, level, targets):
        seen.extend((record.incident_id, level.level, t.identifier) for t in targets)
        return True

    def setup(engine):
        engine.set_notification_handler(handler)

    def broken(engine):
        raise RuntimeError("boom")

    add_engine_setup(setup)
    add_engine_setup(broken)
    try:
        policy = {"name": "p", "levels": [{"level": 1, "targets": ["lead"]}]}
        with _client_for(_settings(store_url=f"sqlite:///{tmp_path}/s.db")) as c:
            assert c.post(f"{API}/escalations", json={"incident_id": "i", "policy": policy}).status_code == 201
            health = c.get(f"{API}/health").json()
            assert health["status"] == "degraded" and "boom" in health["errors"][0]
            assert c.app.state.engine is not None
            import time

            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                time.sleep(0.05)
        assert seen == [("i", 1, "lead")]
    finally:
        remove_engine_setup(setup)
        remove_engine_setup(broken)


def test_default_handler_logs_target_level_incident(caplog):
    import asyncio
    import logging

    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget
    from airflow_escalation.service.delivery_log import make_log_handler

    handler = make_log_handler("https://airflow.example.com/")
    record = EscalationRecord.create("inc-9", "ops")
    level = EscalationLevel(level=2, targets=[EscalationTarget.user("manager")])
    with caplog.at_level(logging.INFO, logger="airflow_escalation.delivery"):
        assert asyncio.run(handler(record, level, level.targets)) is True
    (message,) = [r.getMessage() for r in caplog.records]
    assert "target=user:manager level=2 incident=inc-9" in message
    assert f"url=https://airflow.example.com/escalation/api/v1/escalations/{record.id}" in message
