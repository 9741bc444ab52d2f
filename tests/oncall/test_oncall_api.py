"""The on-call REST routes in-process (TestClient, memory store, fake clock): schedules, who is
on call now and at a time, handoffs, overrides, silences CRUD, and the write checks each route
asks for (Airflow's auth manager is replaced by a recording stand-in here; the real one is
exercised against an API server in the real-stack test)."""

from __future__ import annotations


import pytest
from fastapi.testclient import TestClient

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig, parse_yaml
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.service.routes import oncall as oncall_routes
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.testing import FakeClock

from test_oncall_engine import SECTIONS
from oncall_support import T0

API = "/api/v1"

POLICIES = (
    SECTIONS
    + """
policies:
  - name: p
    levels:
      - level: 1
        targets: [{type: schedule, identifier: oncall-primary}]
"""
)


class User:
    def get_name(self) -> str:
        return "ops"

    def get_id(self) -> str:
        return "ops"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def writes(monkeypatch) -> list:
    """The Dag each write was authorized for (None: Dag-wide); a Dag named 'locked' is refused."""
    asked: list = []

    async def authorize_write(user, dag_id=None):
        asked.append(dag_id)
        if dag_id == "locked":
            raise auth.HTTPException(403, "Forbidden")

    monkeypatch.setattr(oncall_routes, "authorize_write", authorize_write)
    return asked


@pytest.fixture
def client(clock, writes):
    config = EscalationPolicyConfig.from_dict(parse_yaml(POLICIES))
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=InMemoryEscalationStore(),
            clock=clock,
            scheduler_config=SchedulerConfig(scheduler_type="memory"),
        )
    )
    for policy in config.policies.values():
        engine.register_policy(policy)
    app = create_app(engine=engine, policy_config=config)
    app.dependency_overrides[auth.require_read] = User
    app.dependency_overrides[auth.require_write] = User
    app.dependency_overrides[auth.read_scope] = lambda: auth.DagScope(frozenset({"etl", "locked"}))
    with TestClient(app) as test_client:
        yield test_client


def test_schedules_now_at_and_handoffs(client, clock):
    body = client.get(f"{API}/schedules").json()
    [primary] = body["schedules"]
    assert primary["on_call"]["user"] == "alice" and primary["on_call"]["name"] == "Alice"
    assert primary["on_call"]["source"] == "layer:daily"
    assert primary["next_handoffs"][0] == {
        "start": "2026-03-02T08:00:00+00:00",
        "end": "2026-03-03T08:00:00+00:00",
        "user": "bob",
        "source": "layer:daily",
        "name": "bob",
    }
    at = client.get(f"{API}/schedules/oncall-primary/oncall", params={"at": "2026-03-02T08:00:00Z"}).json()
    assert at["user"] == "bob"
    assert client.get(f"{API}/schedules/oncall-primary/oncall", params={"at": "2026-03-02T08:00:00"}).status_code == 422
    assert client.get(f"{API}/schedules/nope/oncall").status_code == 404
    shifts = client.get(f"{API}/schedules/oncall-primary/shifts", params={"days": 2}).json()["shifts"]
    assert [s["user"] for s in shifts] == ["alice", "bob", "alice"]
    handoffs = client.get(f"{API}/schedules/oncall-primary/handoffs", params={"limit": 2}).json()["handoffs"]
    assert [h["user"] for h in handoffs] == ["bob", "alice"]
    assert client.get(f"{API}/schedules/oncall-primary/shifts", params={"days": 400}).status_code == 422


def test_overrides(client, writes):
    made = client.post(
        f"{API}/overrides",
        json={
            "schedule": "oncall-primary",
            "user": "carol",
            "start": "2026-03-02T07:00:00Z",
            "end": "2026-03-02T09:00:00Z",
        },
    )
    assert made.status_code == 201, made.text
    override = made.json()
    assert override["created_by"] == "ops" and writes == [None]
    assert client.get(f"{API}/schedules/oncall-primary/oncall").json()["user"] == "carol"
    assert [o["id"] for o in client.get(f"{API}/overrides").json()["overrides"]] == [override["id"]]
    refused = client.post(
        f"{API}/overrides",
        json={
            "schedule": "oncall-primary",
            "user": "zed",
            "start": "2026-03-02T07:00:00Z",
            "end": "2026-03-02T09:00:00Z",
        },
    )
    assert refused.status_code == 422 and "user: unknown user 'zed'" in str(refused.json()["detail"])
    backwards = client.post(
        f"{API}/overrides",
        json={
            "schedule": "oncall-primary",
            "user": "bob",
            "start": "2026-03-02T09:00:00Z",
            "end": "2026-03-02T08:00:00Z",
        },
    )
    assert backwards.status_code == 422 and "end: must be after start" in str(backwards.json()["detail"])
    assert client.delete(f"{API}/overrides/{override['id']}").status_code == 200
    assert client.delete(f"{API}/overrides/{override['id']}").status_code == 404
    assert client.get(f"{API}/schedules/oncall-primary/oncall").json()["user"] == "alice"


def test_silences_crud_and_their_effect(client, writes):
    made = client.post(
        f"{API}/silences", json={"matchers": {"dag_id": "etl"}, "duration_minutes": 30, "comment": "deploy"}
    )
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["status"] == "active" and silence["created_by"] == "ops" and writes == ["etl"]
    assert silence["ends_at"] == "2026-03-02T07:30:00+00:00"
    trigger = client.post(f"{API}/escalations", json={"incident_id": "i1", "context": {"dag_id": "etl"}})
    assert trigger.json()["code"] == "suppressed"
    assert f"silence {silence['id']}" in trigger.json()["message"]
    assert [s["id"] for s in client.get(f"{API}/silences").json()["silences"]] == [silence["id"]]
    assert client.get(f"{API}/silences/{silence['id']}").json()["comment"] == "deploy"
    expired = client.post(f"{API}/silences/{silence['id']}/expire")
    assert expired.status_code == 200 and expired.json()["status"] == "expired"
    assert client.get(f"{API}/silences").json()["silences"] == []
    assert [s["id"] for s in client.get(f"{API}/silences", params={"include_expired": True}).json()["silences"]] == [
        silence["id"]
    ]
    trigger = client.post(f"{API}/escalations", json={"incident_id": "i1", "context": {"dag_id": "etl"}})
    assert trigger.json()["success"] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"matchers": {}, "duration_minutes": 5}, "at least one matcher"),
        ({"matchers": {"dag_id": "etl"}}, "ends_at: give ends_at or duration_minutes"),
        ({"matchers": {"dag_id": "etl"}, "ends_at": "2026-03-02T08:00:00"}, "ends_at: give a time zone"),
        ({"matchers": {"dag_id": "etl"}, "ends_at": "2026-03-02T06:00:00Z"}, "ends_at: must be after starts_at"),
        ({"matchers": {"dag_id": "etl"}, "duration_minutes": 10**7}, "duration_minutes"),
        ({"matchers": {"dag_id": "x" * 300}, "duration_minutes": 5}, "dag_id"),
        ({"matchers": {"dag_id": "etl", "color": "red"}, "duration_minutes": 5}, "color"),
    ],
)
def test_silence_bodies_are_bounded(client, body, message):
    answer = client.post(f"{API}/silences", json=body)
    assert answer.status_code == 422, answer.text
    assert message in str(answer.json()["detail"])


def test_silences_follow_their_dag(client, writes):
    assert (
        client.post(f"{API}/silences", json={"matchers": {"dag_id": "locked"}, "duration_minutes": 5}).status_code
        == 403
    )
    made = client.post(f"{API}/silences", json={"matchers": {"policy": "p"}, "duration_minutes": 5}).json()
    assert writes == ["locked", None]  # no dag_id matcher: the Dag-wide permission
    # a caller who may read only etl and locked does not see a silence of every Dag
    assert client.get(f"{API}/silences").json()["silences"] == []
    assert client.get(f"{API}/silences/{made['id']}").status_code == 404
    assert client.post(f"{API}/silences/{made['id']}/expire").status_code == 404


def test_resolutions_of_a_record(client):
    trigger = client.post(f"{API}/escalations", json={"incident_id": "i1", "context": {"dag_id": "etl"}}).json()
    record_id = trigger["record"]["id"]
    found = client.get(f"{API}/escalations/{record_id}/oncall").json()["resolutions"]
    assert [r["label"] for r in found] == ["schedule:oncall-primary → alice"]
    [delivery] = client.get(f"{API}/escalations/{record_id}").json()["deliveries"]
    assert delivery["target"]["identifier"] == "oncall-primary"
    assert delivery["resolved_to"] == "schedule:oncall-primary → alice"
