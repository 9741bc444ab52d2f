"""Policies as data: revisions over REST (edit, validate, roll back, import/export, preview),
which wins between the database and the policies file, and two replicas on one PostgreSQL
database where an edit made on one is applied by the other without a restart.

In-process (TestClient); the user is fixed, and ``auth.may_manage_connections`` answers for
"alice" only (the permission policy edits need). Two-replica test: PostgreSQL from
``ESCALATION_TEST_POSTGRES_URL`` (skipped without it, failed under CI=true).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.core.policy_doc import PolicyRevision, RevisionConflict
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.service.policy_sync import PolicyEditRefused, PolicySync
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.stores.policy_revisions import MemoryPolicyRevisionStore

API = "/api/v1"
POSTGRES_URL = os.environ.get("ESCALATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

OPS = {
    "name": "ops",
    "levels": [
        {
            "level": 1,
            "targets": [{"type": "user", "identifier": "lead"}],
            "repeat_count": 2,
            "repeat_interval_minutes": 5,
        },
        {"level": 2, "delay_minutes": 15, "targets": [{"type": "user", "identifier": "manager"}]},
        {"level": 3, "delay_minutes": 30, "targets": [{"type": "user", "identifier": "director"}]},
    ],
}


class User:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name

    def get_id(self) -> str:
        return self.name


async def _may_manage_connections(user: Any) -> bool:
    return user.name == "alice"


def make_client(monkeypatch: Any, store: Any = None, user: str = "alice") -> TestClient:
    monkeypatch.setattr(auth, "may_manage_connections", _may_manage_connections)
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=store or InMemoryEscalationStore(),
            scheduler_config=SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600),
        )
    )
    app = create_app(engine=engine, policy_config=EscalationPolicyConfig())
    who = User(user)
    app.dependency_overrides[auth.require_read] = lambda: who
    app.dependency_overrides[auth.require_write] = lambda: who
    app.dependency_overrides[auth.read_scope] = auth.DagScope.everything
    return TestClient(app)


@pytest.fixture
def client(monkeypatch) -> Iterator[TestClient]:
    with make_client(monkeypatch) as c:
        yield c


def engine_of(client: TestClient) -> EscalationEngine:
    return client.app.state.service.engine


def put_policy(client: TestClient, policy: dict, expected: int, **extra: Any) -> Any:
    return client.put(
        f"{API}/policies/{policy['name']}/definition",
        json={"policy": policy, "expected_revision": expected, **extra},
    )


def test_create_edit_preview_and_revisions(client):
    empty = client.get(f"{API}/policies/document").json()
    assert empty["revision"] == 0 and empty["document"] == {"policies": []}

    created = put_policy(client, OPS, 0, comment="first ladder")
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["revision"] == 1 and body["author"] == "alice" and body["comment"] == "first ladder"
    assert body["changes"] == ["policy ops added"]
    assert body["previews"] == {"ops": "L1 at 0, 5, 10 min; L2 at 15; L3 at 45"}
    # applied at once on this replica: a trigger may name it
    assert engine_of(client).get_policy("ops").levels[1].delay_minutes == 15
    triggered = client.post(f"{API}/escalations", json={"incident_id": "i1", "policy_name": "ops"})
    assert triggered.status_code == 201, triggered.text
    record_id = triggered.json()["record"]["id"]
    due_before = client.get(f"{API}/escalations/{record_id}").json()["next_escalation_at"]

    slower = {**OPS, "levels": [OPS["levels"][0], {**OPS["levels"][1], "delay_minutes": 20}, OPS["levels"][2]]}
    edited = put_policy(client, slower, 1)
    assert edited.status_code == 200, edited.text
    assert edited.json()["revision"] == 2 and edited.json()["changes"] == [
        "policy ops changed: levels[1].delay_minutes"
    ]
    assert edited.json()["comment"] == "edit policy ops"
    assert engine_of(client).get_policy("ops").levels[1].delay_minutes == 20
    # the open record keeps the policy it started with
    record = client.get(f"{API}/escalations/{record_id}").json()
    assert record["next_escalation_at"] == due_before
    assert engine_of(client).store.get(record_id).policy_snapshot["levels"][1]["delay_minutes"] == 15

    listed = client.get(f"{API}/policies/revisions").json()
    assert [r["revision"] for r in listed["revisions"]] == [2, 1] and listed["current"] == 2
    assert listed["source"] == "database" and all(r["author"] == "alice" for r in listed["revisions"])
    assert client.get(f"{API}/policies/revisions/1").json()["document"]["policies"] == [OPS]
    assert client.get(f"{API}/policies/revisions/9").status_code == 404

    preview = client.post(f"{API}/policies/preview", json={"policy": slower}).json()
    assert preview["valid"] and preview["text"] == "L1 at 0, 5, 10 min; L2 at 20; L3 at 50"
    assert [(s["minute"], s["level"], s["action"]) for s in preview["steps"]][-2:] == [
        (20, 2, "escalate"),
        (50, 3, "escalate"),
    ]


def test_an_invalid_edit_names_every_error_and_changes_nothing(client):
    assert put_policy(client, OPS, 0).status_code == 200
    broken = {
        **OPS,
        "levels": [
            {"level": 1, "delay_minutes": -5, "targets": ["lead"]},
            {"level": "two", "targets": ["manager"]},
        ],
        "cooldown": 3,
    }
    refused = put_policy(client, broken, 1)
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert len(errors) == 3, errors
    assert "levels[0]" in errors[0] and "delay_minutes" in errors[0] and "-5" in errors[0]
    assert "levels[1]" in errors[1] and "'two'" in errors[1]
    assert "cooldown" in errors[2]
    assert all(e.startswith("policies[0] (ops): ") for e in errors)
    assert "nothing changed" in refused.json()["detail"]
    # the current revision stays in force
    assert client.get(f"{API}/policies/document").json()["revision"] == 1
    assert engine_of(client).get_policy("ops").levels[0].delay_minutes == 0

    whole = client.put(
        f"{API}/policies/document",
        json={"expected_revision": 1, "document": {"default_policy": "nope", "policies": [OPS, OPS]}},
    )
    assert whole.status_code == 422
    assert whole.json()["errors"] == [
        "policies[1] (ops): duplicate policy name 'ops'",
        "default_policy: 'nope' is not one of the policies ['ops']",
    ]
    unreadable = client.put(f"{API}/policies/document", json={"expected_revision": 1, "yaml": "a: [1"})
    assert unreadable.status_code == 422 and unreadable.json()["errors"]
    assert client.get(f"{API}/policies/revisions").json()["total"] == 1


def test_conflicts_rollback_import_export_and_delete(client):
    assert put_policy(client, OPS, 0).status_code == 200
    other = {"name": "quiet", "levels": [{"level": 1, "targets": ["lead"]}]}
    assert put_policy(client, other, 1).status_code == 200
    # an edit based on revision 1 after revision 2 was saved: refused, not merged
    stale = put_policy(client, {**OPS, "description": "stale"}, 1)
    assert stale.status_code == 409 and "revision 1 is not the latest (revision 2 is)" in stale.json()["detail"]

    back = client.post(f"{API}/policies/revisions/1/rollback", json={"expected_revision": 2})
    assert back.status_code == 200, back.text
    assert back.json()["revision"] == 3 and back.json()["source"] == "rollback"
    assert back.json()["comment"] == "roll back to revision 1" and back.json()["changes"] == ["policy quiet removed"]
    assert set(engine_of(client).policies) == {"ops"}

    exported = client.get(f"{API}/policies/document.yaml")
    assert exported.headers["content-type"].startswith("application/yaml")
    assert exported.text.startswith("escalation:\n") and "name: ops" in exported.text
    imported = client.put(
        f"{API}/policies/document",
        json={"expected_revision": 3, "yaml": exported.text.replace("identifier: director", "identifier: cto")},
    )
    assert imported.status_code == 200 and imported.json()["source"] == "api"
    assert imported.json()["changes"] == ["policy ops changed: levels[2].targets"]

    gone = client.delete(f"{API}/policies/ops/definition", params={"expected_revision": 4})
    assert gone.status_code == 200 and gone.json()["changes"] == ["policy ops removed"]
    assert engine_of(client).policies == {}
    assert client.delete(f"{API}/policies/ops/definition", params={"expected_revision": 5}).status_code == 404
    mismatch = client.put(
        f"{API}/policies/ops/definition", json={"policy": {**OPS, "name": "other"}, "expected_revision": 5}
    )
    assert mismatch.status_code == 422 and mismatch.json()["errors"] == ["policy.name: 'other' is not 'ops'"]


def test_a_revision_swaps_routes_and_on_call_sections(monkeypatch):
    # the detector reads the metadata database: the real-stack tests run it
    monkeypatch.setenv("AIRFLOW__ESCALATION__DETECT_FAILURES", "false")
    users = [{"id": name, "contacts": [{"type": "email", "address": f"{name}@example.com"}]} for name in ("al", "bo")]
    rotation = {"participants": ["al"], "shift_length": 1, "shift_unit": "weeks", "start": "2026-01-05"}
    document = {
        "policies": [OPS],
        "routes": [{"dag_id": "etl*", "policy": "ops"}],
        "users": users,
        "schedules": [{"name": "primary", "time_zone": "UTC", "layers": [{"name": "w", "rotation": rotation}]}],
    }

    def save(doc: dict, expected: int) -> None:
        saved = c.put(f"{API}/policies/document", json={"expected_revision": expected, "document": doc})
        assert saved.status_code == 200, saved.text

    with make_client(monkeypatch) as c:
        service = c.app.state.service
        save(document, 0)
        oncall = engine_of(c).oncall
        assert c.get(f"{API}/schedules/primary/oncall").json()["user"] == "al"
        assert [r["policy"] for r in c.get(f"{API}/routes").json()["routes"]] == ["ops"]

        # only a policy changed: the on-call objects (and their silence cache) are kept
        save({**document, "policies": [{**OPS, "description": "v2"}]}, 1)
        assert engine_of(c).oncall is oncall

        # a new participant: a new on-call config, swapped in whole
        moved = {"name": "w", "rotation": {**rotation, "participants": ["bo"]}}
        save({**document, "schedules": [{**document["schedules"][0], "layers": [moved]}]}, 2)
        assert engine_of(c).oncall is not oncall
        assert c.get(f"{API}/schedules/primary/oncall").json()["user"] == "bo"

        # every route removed: none listed, none explained
        save({k: v for k, v in document.items() if k != "routes"}, 3)
        assert c.get(f"{API}/routes").json()["routes"] == [] and not service.routes
        assert c.get(f"{API}/routes/explain", params={"dag_id": "etl_daily"}).json()["policy"] is None
        assert c.get(f"{API}/schedules/primary/oncall").json()["user"] == "al"


def test_editing_needs_the_connections_permission(monkeypatch):
    with make_client(monkeypatch, user="bob") as c:
        refused = put_policy(c, OPS, 0)
        assert refused.status_code == 403 and "edit Airflow connections" in refused.json()["detail"]
        assert c.get(f"{API}/policies/document").status_code == 200  # reading needs no more
        assert c.get(f"{API}/policies/revisions").json()["total"] == 0


def run(coro: Any) -> Any:
    """Run ``coro`` on its own loop in a thread (a Playwright session may hold this thread's)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_which_wins_database_or_file():
    file_doc = {"escalation": {"policies": [OPS]}}
    edited = {"policies": [{**OPS, "description": "edited in the UI"}]}

    # database (default): the file seeds an empty database, then the database wins
    db = PolicySync(MemoryPolicyRevisionStore(), source="database")
    db.bootstrap(file_doc, "policies.yaml")
    assert db.revisions.latest().source == "import" and db.revisions.latest().document == {"policies": [OPS]}
    saved = run(db.save(edited, 1, "alice", "tweak"))
    assert saved.revision == 2
    db.bootstrap(file_doc, "policies.yaml")  # the next start: the file no longer overrides
    assert db.revisions.latest_revision() == 2 and db.current_config().policies["ops"].description == "edited in the UI"

    # file (config as code): each start imports a changed file; edits are refused
    code = PolicySync(MemoryPolicyRevisionStore(), source="file")
    code.bootstrap(file_doc, "policies.yaml")
    code.bootstrap(file_doc, "policies.yaml")  # unchanged: no new revision
    assert code.revisions.latest_revision() == 1 and code.revisions.latest().source == "file"
    with pytest.raises(PolicyEditRefused):
        run(code.save(edited, 1, "alice"))
    code.bootstrap({"escalation": edited}, "policies.yaml")
    assert code.revisions.latest_revision() == 2 and code.revisions.latest().author == "system"


def test_memory_revisions_are_compare_and_swap():
    from datetime import datetime, timezone

    revisions = MemoryPolicyRevisionStore()
    draft = PolicyRevision(0, {"policies": []}, "alice", datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert revisions.append(0, draft).revision == 1
    with pytest.raises(RevisionConflict):
        revisions.append(0, draft)


# ---------------------------------------------------------------------------------- replicas


@pytest.fixture
def postgres_store_factory() -> Iterator[Any]:
    try:
        import sqlalchemy as sa

        sa.create_engine(POSTGRES_URL).connect().close()
    except Exception as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    from airflow_escalation.stores.sql import SQLEscalationStore

    prefix = f"t{uuid.uuid4().hex[:8]}_"
    stores: list[Any] = []

    def factory() -> Any:
        store = SQLEscalationStore(POSTGRES_URL, table_prefix=prefix)
        stores.append(store)
        return store

    yield factory
    import sqlalchemy as sa

    with stores[0].engine.begin() as conn:
        for name in ("policy_revision", "delivery", "event", "record"):
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{prefix}{name}" CASCADE'))
    for store in stores:
        store.close()


@pytest.mark.postgres
def test_two_replicas_an_edit_on_one_applies_on_the_other(monkeypatch, postgres_store_factory):
    # the detector reads the metadata database: the real-stack tests run it
    monkeypatch.setenv("AIRFLOW__ESCALATION__DETECT_FAILURES", "false")
    with (
        make_client(monkeypatch, postgres_store_factory()) as a,
        make_client(monkeypatch, postgres_store_factory()) as b,
    ):
        assert b.get(f"{API}/policies").json()["policies"] == []
        saved = put_policy(a, OPS, 0)
        assert saved.status_code == 200, saved.text

        # B follows on its own (it polls the latest revision every 2 s): no restart, no call
        deadline = time.monotonic() + 30
        while "ops" not in engine_of(b).policies:
            assert time.monotonic() < deadline, "replica B never applied the revision saved on A"
            time.sleep(0.2)
        assert b.get(f"{API}/policies/ops").json()["levels"][1]["delay_minutes"] == 15
        assert b.get(f"{API}/policies/revisions").json()["current"] == 1
        triggered = b.post(f"{API}/escalations", json={"incident_id": "on-b", "policy_name": "ops"})
        assert triggered.status_code == 201, triggered.text

        # both edit from revision 1: the first save wins, the second is refused
        first = put_policy(b, {**OPS, "description": "from B"}, 1)
        second = put_policy(a, {**OPS, "description": "from A"}, 1)
        assert first.status_code == 200 and second.status_code == 409
        deadline = time.monotonic() + 30
        while engine_of(a).get_policy("ops").description != "from B":
            assert time.monotonic() < deadline, "replica A never applied the revision saved on B"
            time.sleep(0.2)

        # the other sections of the document follow too: routes, users, schedules, windows
        quiet = {"name": "quiet", "levels": [{"level": 1, "targets": [{"type": "user", "identifier": "lead"}]}]}
        sections = {
            "policies": [{**OPS, "description": "from B"}, quiet],
            "routes": [{"name": "etl", "dag_id": "etl*", "policy": "ops"}],
            "users": [
                {"id": "alice", "contacts": [{"type": "email", "address": "alice@example.com"}]},
                {"id": "bob", "contacts": [{"type": "email", "address": "bob@example.com"}]},
            ],
            "schedules": [
                {
                    "name": "primary",
                    "time_zone": "UTC",
                    "layers": [
                        {
                            "name": "weekly",
                            "rotation": {
                                "participants": ["alice"],
                                "shift_length": 1,
                                "shift_unit": "weeks",
                                "start": "2026-01-05",
                            },
                        }
                    ],
                }
            ],
            # open at every moment (a one-minute cron, an hour long), for another Dag
            "maintenance_windows": [
                {
                    "name": "upkeep",
                    "cron": "* * * * *",
                    "duration_minutes": 60,
                    "time_zone": "UTC",
                    "dag_ids": ["billing"],
                }
            ],
        }
        saved = a.put(f"{API}/policies/document", json={"expected_revision": 2, "document": sections})
        assert saved.status_code == 200, saved.text
        wait_until(lambda: explained_policy(b, "etl_daily") == "ops", "replica B never applied the routes of A")
        assert b.get(f"{API}/schedules/primary/oncall").json()["user"] == "alice"
        before = b.post(
            f"{API}/escalations", json={"incident_id": "etl-1", "policy_name": "quiet", "context": {"dag_id": "etl"}}
        )
        assert before.status_code == 201, before.text

        # on A: the route pages another policy, bob takes the rotation (and gets a Slack id), and
        # the window covers etl
        edited = {
            **sections,
            "routes": [{"name": "etl", "dag_id": "etl*", "policy": "quiet"}],
            "users": [
                sections["users"][0],
                {
                    "id": "bob",
                    "contacts": [
                        {"type": "email", "address": "bob@example.com"},
                        {"type": "slack", "address": "U0BOB"},
                    ],
                },
            ],
            "schedules": [
                {
                    **sections["schedules"][0],
                    "layers": [
                        {
                            "name": "weekly",
                            "rotation": {**sections["schedules"][0]["layers"][0]["rotation"], "participants": ["bob"]},
                        }
                    ],
                }
            ],
            "maintenance_windows": [{**sections["maintenance_windows"][0], "dag_ids": ["billing", "etl"]}],
        }
        saved = a.put(f"{API}/policies/document", json={"expected_revision": 3, "document": edited})
        assert saved.status_code == 200, saved.text
        assert [c.split(":")[0] for c in saved.json()["changes"]] == [
            "maintenance_windows",
            "routes",
            "schedules",
            "users",
        ]
        wait_until(lambda: explained_policy(b, "etl_daily") == "quiet", "replica B never applied the edited route")
        # one swap: the schedule, the directory and the window came with the route
        assert b.get(f"{API}/schedules/primary/oncall").json()["user"] == "bob"
        from airflow_escalation.service.integrations.directory import from_directory, users_directory

        assert from_directory(users_directory(b.app.state.service), "U0BOB") == "bob"
        during = b.post(
            f"{API}/escalations", json={"incident_id": "etl-2", "policy_name": "quiet", "context": {"dag_id": "etl"}}
        )
        assert during.status_code == 200 and during.json()["code"] == "suppressed", during.text
        assert "upkeep" in during.json()["message"]
        # and back on A, which saved it, at once
        assert a.get(f"{API}/schedules/primary/oncall").json()["user"] == "bob"


def explained_policy(client: TestClient, dag_id: str) -> Any:
    answer = client.get(f"{API}/routes/explain", params={"dag_id": dag_id})
    assert answer.status_code == 200, answer.text
    return answer.json()["policy"]


def wait_until(condition: Any, message: str, limit: float = 30.0) -> None:
    """Poll ``condition`` (a replica follows every 2 s); ``limit`` only bounds a broken run."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)
