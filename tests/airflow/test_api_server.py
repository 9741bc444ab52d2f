"""The escalation service in a real Airflow API server (``airflow api-server`` subprocess).

One server per session (tests/airflow_stack.py, shared with tests/ui), on a temporary AIRFLOW_HOME
with a SQLite metadata database, SimpleAuthManager users ``admin`` (role ADMIN) and ``viewer``
(role VIEWER), and a policies file. It checks what only a real server shows: the plugin is mounted
and its lifespan runs the engine, Airflow's authentication and authorization answer as documented,
records land in the metadata database, the clock fires on time, and a restart loses nothing and
doubles nothing.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

# the stack and its session fixture `stack` (exposed by tests/conftest.py) are shared with tests/ui
from airflow_stack import API, FAST_DELAY_S, JWT_SECRET, WORKERS, AirflowStack, _parse

pytestmark = pytest.mark.slow


def _trigger(stack: AirflowStack, incident: str, user: str = "admin", **body: Any) -> httpx.Response:
    return stack.post(f"{API}/escalations", user, json={"incident_id": incident, **body})


def _wait_for(fetch, done, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last: {last}")


# ---------------------------------------------------------------------------------- mounting


def test_plugin_app_is_mounted_and_engine_runs(stack):
    spec = httpx.get(f"{stack.base}/escalation/openapi.json", timeout=30)
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/api/v1/escalations/{record_id}/acknowledge" in paths
    health = stack.get(f"{API}/health")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["running"] is True and body["store"] == "sql", body
    policies = stack.get(f"{API}/policies").json()["policies"]
    assert [p["name"] for p in policies] == ["fast", "restart"]
    assert stack.get(f"{API}/no-such-route").status_code == 404
    # every worker entered the plugin app's lifespan and runs its own engine
    _wait_for(stack.engines_started, lambda ids: len(ids) == int(WORKERS), timeout=30)


# ---------------------------------------------------------------------------------- auth


def test_unauthenticated_is_401(stack):
    for method, path in [
        ("GET", f"{API}/escalations"),
        ("GET", f"{API}/health"),
        ("POST", f"{API}/escalations"),
        ("POST", f"{API}/escalations/x/acknowledge"),
    ]:
        r = stack.request(method, path, user=None, json={"incident_id": "nobody"})
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == {"detail": "Not authenticated"}


def test_invalid_token_is_403(stack):
    r = stack.get(f"{API}/escalations", user=None, headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 403 and r.json() == {"detail": "Invalid JWT token"}
    # a token signed with another secret is just as invalid
    forged = stack.token("admin")[:-4] + "AAAA"
    r = stack.get(f"{API}/escalations", user=None, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 403 and r.json() == {"detail": "Invalid JWT token"}


def test_expired_token_is_401(stack):
    import jwt

    token = stack.token("admin")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(iat=int(time.time()) - 600, nbf=int(time.time()) - 600, exp=int(time.time()) - 300)
    expired = jwt.encode(
        claims,
        JWT_SECRET,
        algorithm=header["alg"],
        headers={k: v for k, v in header.items() if k not in ("alg", "typ")},
    )
    r = stack.get(f"{API}/health", user=None, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json() == {"detail": "Token Expired"}
    # the same claims, still valid, pass: only the expiry made the difference
    claims["exp"] = int(time.time()) + 300
    fresh = jwt.encode(
        claims,
        JWT_SECRET,
        algorithm=header["alg"],
        headers={k: v for k, v in header.items() if k not in ("alg", "typ")},
    )
    assert stack.get(f"{API}/health", user=None, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_ui_cookie_authenticates(stack):
    r = httpx.get(f"{stack.base}{API}/stats", cookies={"_token": stack.token("viewer")}, timeout=30)
    assert r.status_code == 200 and "total_escalations" in r.json()


def test_viewer_reads_but_cannot_act(stack):
    created = _trigger(stack, "viewer-case", context={"dag_id": "etl"})
    assert created.status_code == 201, created.text
    rid = created.json()["record"]["id"]
    assert stack.get(f"{API}/escalations/{rid}", "viewer").status_code == 200
    assert stack.get(f"{API}/escalations", "viewer").status_code == 200
    assert stack.get(f"{API}/stats", "viewer").status_code == 200
    assert stack.get(f"{API}/policies/fast", "viewer").status_code == 200
    for action in ("acknowledge", "resolve", "cancel", "escalate"):
        r = stack.post(f"{API}/escalations/{rid}/{action}", "viewer", json={})
        assert r.status_code == 403 and r.json() == {"detail": "Forbidden"}, (action, r.text)
    r = _trigger(stack, "viewer-trigger", user="viewer")
    assert r.status_code == 403 and r.json() == {"detail": "Forbidden"}
    # the refusals changed nothing
    assert stack.get(f"{API}/escalations/{rid}").json()["state"] == "active"
    assert stack.post(f"{API}/escalations/{rid}/cancel", json={"reason": "test done"}).status_code == 200


def test_admin_triggers_acknowledges_resolves(stack):
    created = _trigger(stack, "admin-case", context={"severity": "high", "dag_id": "etl"})
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    rid = record["id"]
    assert record["history"][0]["actor"] == "admin"
    ack = stack.post(f"{API}/escalations/{rid}/acknowledge", json={"note": "looking"})
    assert ack.status_code == 200, ack.text
    assert ack.json()["record"]["acknowledged_by"] == "admin"
    assert ack.json()["record"]["state"] == "acknowledged"
    done = stack.post(f"{API}/escalations/{rid}/resolve")
    assert done.status_code == 200 and done.json()["record"]["resolved_by"] == "admin"
    # the record is in the metadata database, in the escalation tables
    row = stack.db_row(rid)
    assert row is not None and row["state"] == "resolved" and row["incident_id"] == "admin-case"


# ---------------------------------------------------------------------------------- errors


def test_error_statuses(stack):
    assert stack.get(f"{API}/escalations/does-not-exist").status_code == 404
    r = stack.post(f"{API}/escalations/does-not-exist/acknowledge")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert _trigger(stack, "e1", policy_name="no-such-policy").status_code == 404
    assert stack.get(f"{API}/policies/no-such-policy").status_code == 404
    rid = _trigger(stack, "e2").json()["record"]["id"]
    assert stack.post(f"{API}/escalations/{rid}/resolve").status_code == 200
    r = stack.post(f"{API}/escalations/{rid}/resolve")
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    assert stack.post(f"{API}/escalations", json={"incident_id": ""}).status_code == 422
    assert (
        stack.post(f"{API}/escalations", content=b"{oops", headers={"content-type": "application/json"}).status_code
        == 422
    )
    r = _trigger(stack, "e3", policy={"name": "bad", "levels": [{"level": 1, "delay_minutes": -5}]})
    assert r.status_code == 422 and "delay_minutes" in r.json()["detail"]
    assert stack.get(f"{API}/escalations?limit=0").status_code == 422
    assert stack.get(f"{API}/escalations?state=bogus").status_code == 422


# ---------------------------------------------------------------------------------- clock


def test_level_two_arrives_on_time_from_the_server_clock(stack):
    created = _trigger(stack, "clock-case", policy_name="fast")
    assert created.status_code == 201, created.text
    rid = created.json()["record"]["id"]

    def level2_sent(record: dict) -> bool:
        # the record and its deliveries are two reads: wait until both show the sent delivery
        return (
            record["current_level"] == 2
            and record["notification_count"] == 2
            and any(d["level"] == 2 and d["state"] == "sent" for d in record["deliveries"])
        )

    record = _wait_for(lambda: stack.get(f"{API}/escalations/{rid}").json(), level2_sent, timeout=FAST_DELAY_S + 20)
    created_at = _parse(record["created_at"])
    (climb,) = [h for h in record["history"] if h["event"] == "escalate"]
    late = (_parse(climb["at"]) - created_at).total_seconds() - FAST_DELAY_S
    assert -0.05 <= late < 3.0, f"level 2 fired {late:+.2f}s from its due time"
    (sent,) = [d for d in record["deliveries"] if d["level"] == 2]
    assert sent["target"]["identifier"] == "manager" and sent["attempts"] == 1
    _wait_for(
        lambda: stack.log_path.read_text(),
        lambda text: f"target=user:manager level=2 incident=clock-case escalation={rid}" in text,
        timeout=10,
    )
    assert stack.post(f"{API}/escalations/{rid}/resolve").status_code == 200


def test_listing_and_stats(stack):
    r = stack.get(f"{API}/escalations?dag_id=etl&limit=10")
    assert r.status_code == 200, r.text
    assert r.json()["total"] >= 2 and all(e["context"]["dag_id"] == "etl" for e in r.json()["escalations"])
    stats = stack.get(f"{API}/stats").json()
    assert stats["total_escalations"] >= 4 and 0 <= stats["resolution_rate"] <= 1


# ---------------------------------------------------------------------------------- CLI


def test_cli_lists_provider_plugin_and_config(stack):
    providers = json.loads(_json_part(stack.background_output("providers")))
    (ours,) = [p for p in providers if p["package_name"] == "airflow-provider-escalation"]
    assert ours["version"] == "0.1.0"
    plugins = json.loads(_json_part(stack.background_output("plugins")))
    (plugin,) = [p for p in plugins if p["name"] == "escalation"]
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/escalation", "name": "Escalation service"}
    ]
    config = stack.background_output("config")
    assert "[escalation]" in config
    for option in (
        "policies_file",
        "store_url",
        "scheduler",
        "check_interval_seconds",
        "max_concurrent_deliveries",
        "enabled",
        "base_url",
    ):
        assert option in config, option


def _json_part(text: str) -> str:
    start = min(i for i in (text.find("["), text.find("{")) if i >= 0)
    return text[start : text.rindex("]") + 1]


# ---------------------------------------------------------------------------------- restart


def test_restart_loses_nothing_and_fires_a_missed_escalation_once(stack):
    kept = _trigger(stack, "kept-case").json()["record"]["id"]
    assert stack.post(f"{API}/escalations/{kept}/acknowledge").status_code == 200  # nothing more is due
    kept_before = stack.get(f"{API}/escalations/{kept}").json()
    created = _trigger(stack, "restart-case", policy_name="restart")
    assert created.status_code == 201, created.text
    rid = created.json()["record"]["id"]

    stack.stop()
    row = stack.db_row(rid)
    assert row is not None and row["current_level"] == 1, f"level 2 fired before the stop: {row}"
    due = _parse(created.json()["record"]["next_escalation_at"])
    # wait (server down) until level 2 is overdue, then start again
    while datetime.now().astimezone() < due:
        time.sleep(0.2)
    assert stack.db_row(rid)["current_level"] == 1  # nobody fired it while the server was down
    stack.start()
    _wait_for(stack.engines_started, lambda ids: len(ids) == int(WORKERS), timeout=30)

    after = stack.get(f"{API}/escalations/{kept}").json()
    assert after["id"] == kept and after["history"] == kept_before["history"]

    def level2_sent(record: dict) -> bool:
        return record["current_level"] == 2 and any(
            d["level"] == 2 and d["state"] == "sent" for d in record["deliveries"]
        )

    record = _wait_for(lambda: stack.get(f"{API}/escalations/{rid}").json(), level2_sent, timeout=30)
    climbs = [h for h in record["history"] if h["event"] == "escalate"]
    assert len(climbs) == 1
    assert _parse(climbs[0]["at"]) >= stack.started_at  # fired by the restarted server
    assert len([d for d in record["deliveries"] if d["level"] == 2]) == 1
    time.sleep(2.5)  # a few more sweeps (check_interval_seconds = 1) must not fire it again
    again = stack.get(f"{API}/escalations/{rid}").json()
    assert [h for h in again["history"] if h["event"] == "escalate"] == climbs
    assert len([d for d in again["deliveries"] if d["level"] == 2]) == 1
    assert stack.log_path.read_text().count(f"level=2 incident=restart-case escalation={rid}") == 1


def test_db_migrate_creates_the_tables_and_a_second_run_changes_nothing(stack):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{stack.db_path}")

    def snapshot():
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version_escalation")).all()
            records = connection.execute(sa.text("SELECT count(*) FROM escalation_record")).scalar()
        return tables, version, records

    tables, version, records = snapshot()
    assert {"escalation_record", "escalation_event", "escalation_delivery", "escalation_policy_revision"} <= tables
    assert version == [("0003",)]
    again = stack.cli("db", "migrate")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after_tables, after_version, after_records = snapshot()
    assert (after_tables, after_version) == (tables, version)
    assert after_records >= records  # the running service may add records, never lose them
    engine.dispose()
