"""Bad input gets a clear 4xx naming the field and changes nothing; nothing once stored breaks a
read (core/bounds.py, docs/security.md). In-process service, memory and SQLite stores."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from airflow_escalation.core import bounds
from airflow_escalation.core.models import Delivery, EscalationRecord, EscalationTarget
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.stores.sql import SQLEscalationStore

from test_service_inprocess import API, make_client

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

SURROGATE_BODY = b'{"incident_id": "s", "context": {"x": "\\ud800"}}'


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def post_raw(client, path: str, raw: bytes):
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def assert_422_naming(response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in response.text, response.text
    assert len(response.content) < 4000  # the answer names the problem, never echoes the input


@pytest.fixture
def client():
    with make_client() as c:
        yield c


def total(client) -> int:
    response = client.get(f"{API}/escalations")
    assert response.status_code == 200, response.text
    return response.json()["total"]


# ------------------------------------------------------------------ refused, nothing stored


@pytest.mark.parametrize(
    "raw, field",
    [
        (SURROGATE_BODY, "context"),
        (b'{"incident_id": "\\udfff"}', "incident_id"),
        (b'{"incident_id": "i", "policy_name": "\\ud800x"}', "policy_name"),
        (b'{"incident_id": "i", "context": {"\\ud800": 1}}', "context"),
        (b'{"incident_id": "i", "context": {"x": NaN}}', "context"),
        (b'{"incident_id": "i", "context": {"x": [Infinity]}}', "context"),
        (json.dumps({"incident_id": "i", "context": nested(33)}).encode(), "context"),
        (json.dumps({"incident_id": "i", "context": nested(300)}).encode(), "context"),
        (json.dumps({"incident_id": "i", "context": {"x": "y" * (64 * 1024)}}).encode(), "context"),
        (json.dumps({"incident_id": "i" * 256}).encode(), "incident_id"),
        (
            json.dumps(
                {"incident_id": "i", "policy": {"name": "p", "description": "\ud800", "levels": [{"level": 1}]}}
            ).encode(),
            "description",
        ),
        (
            json.dumps(
                {
                    "incident_id": "i",
                    "policy": {
                        "name": "p",
                        "levels": [{"level": 1, "targets": [{"identifier": "x", "metadata": nested(40)}]}],
                    },
                }
            ).encode(),
            "policy",
        ),
        (
            json.dumps(
                {
                    "incident_id": "i",
                    "policy": {
                        "name": "p",
                        "levels": [{"level": 1, "repeat_count": 10**6, "repeat_interval_minutes": 0.01}],
                    },
                }
            ).encode(),
            "repeat_count",
        ),
    ],
)
def test_trigger_refused_422_and_nothing_stored(client, raw, field):
    assert_422_naming(post_raw(client, f"{API}/escalations", raw), field)
    assert total(client) == 0


def test_context_at_the_limits_is_accepted(client):
    ok = {"incident_id": "i", "context": {**nested(bounds.MAX_DEPTH - 1), "pad": "y" * 60_000}}
    assert client.post(f"{API}/escalations", json=ok).status_code == 201


def test_eight_megabyte_context_is_413(client):
    raw = json.dumps({"incident_id": "i", "context": {"x": "y" * 8_000_000}}).encode()
    response = post_raw(client, f"{API}/escalations", raw)
    assert response.status_code == 413 and "body" in response.json()["detail"]
    # without a Content-Length (chunked) too
    response = client.post(
        f"{API}/escalations", content=iter([raw[:1_000_000]] * 3), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert total(client) == 0


@pytest.mark.parametrize(
    "action, raw, field",
    [
        ("acknowledge", b'{"note": "\\ud800"}', "note"),
        ("acknowledge", json.dumps({"note": "n" * 4001}).encode(), "note"),
        ("resolve", b'{"note": "ok \\udc00"}', "note"),
        ("cancel", b'{"reason": "\\ud800"}', "reason"),
        ("cancel", json.dumps({"reason": "r" * 4001}).encode(), "reason"),
    ],
)
def test_actions_refuse_bad_text_and_change_nothing(client, action, raw, field):
    record = client.post(f"{API}/escalations", json={"incident_id": "a"}).json()["record"]
    assert_422_naming(post_raw(client, f"{API}/escalations/{record['id']}/{action}", raw), field)
    after = client.get(f"{API}/escalations/{record['id']}").json()
    assert after["state"] == record["state"] and after["version"] == record["version"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("offset=1e23", "offset"),
        (f"offset={10**23}", "offset"),
        (f"offset={bounds.MAX_LIST_OFFSET + 1}", "offset"),
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("incident=" + "x" * 256, "incident"),
    ],
)
def test_list_query_bounds(client, query, field):
    assert_422_naming(client.get(f"{API}/escalations?{query}"), field)


def test_list_offset_at_the_bound_answers():
    with make_client(store=SQLEscalationStore(url="sqlite://", create_tables=True)) as c:
        assert c.get(f"{API}/escalations?offset={bounds.MAX_LIST_OFFSET}").status_code == 200


# ------------------------------------------------------------------ YAML


ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(7)]
)


def test_validate_refuses_yaml_aliases_quickly_and_briefly(client):
    assert len(ALIAS_BOMB) < 400
    response = client.post(f"{API}/policies/validate", json={"yaml": ALIAS_BOMB})
    assert_422_naming(response, "aliases")
    assert len(response.content) < 2000


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("policies:\n  - &p {name: a, levels: [{level: 1}]}\n  - *p\n", "aliases"),
        ("x: " + "[" * 200 + "]" * 200, "nested deeper"),
        ("x: " + "[" * 100_000, "yaml"),
    ],
)
def test_validate_unreadable_yaml_is_422_briefly(client, text, fragment):
    response = client.post(f"{API}/policies/validate", json={"yaml": text})
    assert_422_naming(response, fragment)
    assert len(response.json()["detail"][0]["msg"]) <= bounds.MAX_ERROR_CHARS + 40


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "name: p\nlevels: [{level: 1}]\n" + "".join(f"bogus_field_{i:04d}_{'z' * 40}: 1\n" for i in range(300)),
            "unknown field",
        ),
    ],
)
def test_validate_yaml_errors_are_bounded(client, text, fragment):
    response = client.post(f"{API}/policies/validate", json={"yaml": text})
    assert response.status_code == 200 and response.json()["valid"] is False
    assert fragment in response.json()["errors"][0]
    assert len(response.json()["errors"][0]) <= bounds.MAX_ERROR_CHARS + 40


def test_validate_yaml_over_the_size_limit_is_422(client):
    response = client.post(f"{API}/policies/validate", json={"yaml": "#" * (bounds.MAX_YAML_BYTES + 1)})
    assert_422_naming(response, "yaml")


def test_manager_from_yaml_refuses_aliases_and_big_files(tmp_path):
    from airflow_escalation.runtime.manager import EscalationPolicyManager

    with pytest.raises(ValueError, match="aliases"):
        EscalationPolicyManager.from_yaml("escalation:\n" + "\n".join("  " + line for line in ALIAS_BOMB.splitlines()))
    big = tmp_path / "policies.yaml"
    big.write_text("# padding\n" * (bounds.MAX_YAML_BYTES // 10 + 1))
    with pytest.raises(ValueError, match="at most"):
        EscalationPolicyManager.from_yaml(big)
    # anchors without aliases and the spec's own example still load
    from pathlib import Path

    example = next(Path("dags_examples/policies").glob("*.y*ml"))
    assert EscalationPolicyManager.from_yaml(example).list_policies()


def test_policies_file_with_aliases_degrades_the_service(tmp_path):
    from test_service_inprocess import _client_for, _settings

    bad = tmp_path / "policies.yaml"
    bad.write_text("escalation:\n" + "\n".join("  " + line for line in ALIAS_BOMB.splitlines()))
    with _client_for(_settings(policies_file=str(bad), store_url=f"sqlite:///{tmp_path}/s.db")) as c:
        health = c.get(f"{API}/health").json()
        assert health["status"] == "degraded" and "aliases" in health["errors"][0]
        assert len(health["errors"][0]) < 1000


# ------------------------------------------------------------------ history does not grow


def test_retriggers_are_counted_not_appended(client):
    for _ in range(bounds.MAX_RETRIGGER_EVENTS + 30):
        client.post(f"{API}/escalations", json={"incident_id": "flappy"})
    record = client.get(f"{API}/escalations").json()["escalations"][0]
    retriggers = [e for e in record["history"] if e["event"] == "retriggered"]
    assert len(retriggers) == bounds.MAX_RETRIGGER_EVENTS
    assert record["metadata"]["trigger_count"] == bounds.MAX_RETRIGGER_EVENTS + 30
    assert record["metadata"]["last_triggered_by"] == "alice" and record["metadata"]["last_triggered_at"]


# ------------------------------------------------------------------ stored earlier: still readable


def _bad_record(incident: str, context: dict) -> EscalationRecord:
    now = datetime.now(timezone.utc)
    record = EscalationRecord(
        id=EscalationRecord.generate_id(),
        incident_id=incident,
        policy_name="ops",
        state="active",
        created_at=now,
        updated_at=now,
        context=context,
    )
    record.add_history_event("triggered", now, "\ud800someone", note="\udc00")
    return record


@pytest.mark.parametrize(
    "make_store",
    [
        InMemoryEscalationStore,
        lambda: SQLEscalationStore(url="sqlite://", create_tables=True),
    ],
    ids=["memory", "sqlite"],
)
def test_stored_bad_values_never_break_a_read(make_store):
    store = make_store()
    records = [
        _bad_record("surrogate", {"x": "\ud800", "dag_id": "etl"}),
        _bad_record("deep", nested(300)),
        _bad_record("nan", {"x": float("nan"), "y": [float("inf")]}),
        _bad_record("huge", {"x": "y" * 200_000}),
    ]
    for record in records:
        delivery = Delivery(
            id=EscalationRecord.generate_id(),
            record_id=record.id,
            level=1,
            round=0,
            target=EscalationTarget.user("u"),
            last_error="boom " * 10_000,
        )
        assert store.create(record, [delivery]) is not None
    with make_client(store=store) as c:
        listing = c.get(f"{API}/escalations")
        assert listing.status_code == 200, listing.text
        assert listing.json()["total"] == 4
        by_incident = {r["incident_id"]: r for r in listing.json()["escalations"]}
        assert by_incident["surrogate"]["context"]["x"] == "?"
        assert "_truncated" in by_incident["huge"]["context"]
        for record in records:
            one = c.get(f"{API}/escalations/{record.id}")
            assert one.status_code == 200, one.text
            assert len(one.json()["deliveries"][0]["last_error"]) < bounds.MAX_ERROR_CHARS + 40
        assert c.get(f"{API}/stats").status_code == 200
        # and the store keeps working for everyone else
        assert c.post(f"{API}/escalations", json={"incident_id": "fresh"}).status_code == 201


# ------------------------------------------------------------------ found by the schema fuzzer


def test_a_body_that_is_not_utf8_is_422(client):
    response = post_raw(client, f"{API}/escalations", b'{"incident_id": "\xff\xfe"}')
    assert_422_naming(response, "body")
    assert total(client) == 0


@pytest.mark.parametrize(
    "path, allow",
    [
        ("/policies/validate", "POST"),
        ("/escalations", "GET, POST"),
        ("/policies/ops", "GET"),
    ],
)
def test_405_lists_the_paths_methods(client, path, allow):
    response = client.request("OPTIONS", f"{API}{path}")
    assert response.status_code == 405 and response.headers["allow"] == allow
