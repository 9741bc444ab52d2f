"""``/routes`` and ``/routes/explain`` in-process (memory store, a fixed user; the real auth is
in the real-stack test), and the service refusing a bad route at start naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from airflow_escalation import EscalationEngine, EscalationEngineConfig, EscalationPolicyConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.stores.memory import InMemoryEscalationStore

API = "/api/v1"


def _config(routes):
    return EscalationPolicyConfig.from_dict(
        {
            "policies": [
                {"name": "oncall", "levels": [{"level": 1, "targets": [{"type": "user", "identifier": "lead"}]}]}
            ],
            "routes": routes,
        }
    )


class User:
    def get_name(self) -> str:
        return "alice"

    def get_id(self) -> str:
        return "alice"


def _client(routes, scope=None) -> TestClient:
    config = _config(routes)
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=InMemoryEscalationStore(),
            scheduler_config=SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600),
        )
    )
    for policy in config.policies.values():
        engine.register_policy(policy)
    app = create_app(engine=engine, policy_config=config)
    app.dependency_overrides[auth.require_read] = User
    app.dependency_overrides[auth.read_scope] = lambda: scope or auth.DagScope.everything()
    return TestClient(app)


@pytest.fixture(autouse=True)
def _no_detector(monkeypatch):
    # the detector reads the metadata database: the real-stack tests run it
    monkeypatch.setenv("AIRFLOW__ESCALATION__DETECT_FAILURES", "false")


ROUTES = [
    {"name": "etl", "dag_id": "etl_*", "policy": "oncall", "severity": "critical"},
    {"name": "everything", "policy": "oncall", "kind": ["task_failed", "dag_run_failed"]},
]


def test_routes_are_listed_in_precedence_order_with_the_catch_all_flagged():
    with _client(ROUTES) as client:
        body = client.get(f"{API}/routes").json()
    assert [r["name"] for r in body["routes"]] == ["etl", "everything"]
    assert [r["index"] for r in body["routes"]] == [0, 1]
    assert body["routes"][1]["matches_every_dag"] is True
    assert body["routes"][0]["incident_keys"] == {"task_failed": "{dag_id}.{task_id}"}
    assert len(body["warnings"]) == 1 and "matches every DAG" in body["warnings"][0]
    assert body["precedence"] == "the first route in the file that matches wins"
    assert body["detector"] is None  # off here


def test_explain_names_the_route_the_incident_and_the_steps():
    with _client(ROUTES) as client:
        caught = client.get(f"{API}/routes/explain", params={"dag_id": "etl_daily", "task_id": "load"}).json()
        run = client.get(f"{API}/routes/explain", params={"dag_id": "hr", "kind": "dag_run_failed"}).json()
        none = client.get(f"{API}/routes/explain", params={"dag_id": "hr", "kind": "deadline_missed"}).json()
    assert caught["route"]["name"] == "etl" and caught["incident_id"] == "etl_daily.load"
    assert [r["wins"] for r in caught["routes"]] == [True, False]
    assert caught["outcome"]["steps"] == [{"level": 1, "after_minutes": 0.0, "targets": ["user:lead"]}]
    assert run["route"]["name"] == "everything" and run["incident_id"] == "hr"
    assert none["route"] is None and none["outcome"]["pages"] is False


def test_explain_of_a_dag_the_caller_may_not_read_is_not_found():
    with _client(ROUTES, scope=auth.DagScope(frozenset({"etl_daily"}))) as client:
        hidden = client.get(f"{API}/routes/explain", params={"dag_id": "payroll"})
        seen = client.get(f"{API}/routes/explain", params={"dag_id": "etl_daily"})
    assert hidden.status_code == 404 and seen.status_code == 200


def test_explain_refuses_unknown_kinds_and_run_types():
    with _client(ROUTES) as client:
        kind = client.get(f"{API}/routes/explain", params={"dag_id": "x", "kind": "exploded"})
        run_type = client.get(f"{API}/routes/explain", params={"dag_id": "x", "run_type": "hourly"})
        long_id = client.get(f"{API}/routes/explain", params={"dag_id": "x" * 300})
    assert kind.status_code == 422 and kind.json()["detail"][0]["loc"] == ["query", "kind"]
    assert run_type.status_code == 422 and run_type.json()["detail"][0]["loc"] == ["query", "run_type"]
    assert long_id.status_code == 422


def test_a_bad_route_is_the_services_error_naming_the_field():
    with _client([{"dag_id": "etl", "policy": "missing"}]) as client:
        health = client.get(f"{API}/health").json()
        routes = client.get(f"{API}/routes").json()
    assert any("routes[0].policy: unknown policy 'missing'" in e for e in health["errors"]), health
    assert routes["routes"] == []


def test_validate_flags_a_catch_all_route_and_refuses_a_bad_one():
    with _client(ROUTES) as client:
        app = client.app
        app.dependency_overrides[auth.require_write] = User
        flagged = client.post(
            f"{API}/policies/validate",
            json={"yaml": "policies: [{name: p, levels: [{level: 1, targets: [lead]}]}]\nroutes: [{policy: p}]\n"},
        ).json()
        refused = client.post(
            f"{API}/policies/validate",
            json={"yaml": "policies: [{name: p, levels: [{level: 1, targets: [lead]}]}]\nroutes: [{policy: q}]\n"},
        ).json()
    assert flagged["valid"] is True and "matches every DAG" in flagged["warnings"][0]
    assert refused["valid"] is False and refused["errors"][0].startswith("routes[0].policy: unknown policy 'q'")


def test_cli_validate_prints_the_warning_and_refuses_naming_the_field(tmp_path, capsys):
    from airflow_escalation.cli import main

    good = tmp_path / "good.yaml"
    good.write_text("policies: [{name: p, levels: [{level: 1, targets: [lead]}]}]\nroutes: [{policy: p}]\n")
    assert main(["policy", "validate", str(good)]) == 0
    out, _ = capsys.readouterr()
    assert "1 failure route(s)" in out and "warning: routes[0] (* -> p): matches every DAG" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: [{name: p, levels: [{level: 1, targets: [lead]}]}]\nroutes: [{policy: p, kind: x}]\n")
    assert main(["policy", "validate", str(bad)]) == 1
    _, err = capsys.readouterr()
    assert "invalid: routes[0].kind: unknown kind 'x'" in err
