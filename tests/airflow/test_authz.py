"""Per-Dag authorization in-process: the service app with a real auth manager
(tests/authz_auth_manager.py, SimpleAuthManager granting ``team_a`` only Dag ``A``), real JWTs and
Airflow's own ``get_user`` and ``get_authorized_dag_ids`` (Dags ``A``, ``B`` and ``C`` in a
SQLite metadata database). The same matrix runs against a real API server in
test_authz_api_server.py."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

import authz_checks as checks
from authz_auth_manager import AUTH_MANAGER, USERS, USERS_SETTING

ORIGIN = "http://testserver"
SECRET = "authz-tests-jwt-secret-" + "0123456789abcdef" * 4


def _metadata_dags(*dag_ids: str) -> None:
    """Airflow's Dag tables in the test AIRFLOW_HOME's SQLite database, holding ``dag_ids``."""
    from airflow import settings
    from airflow.models.base import Base
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.revoked_token import RevokedToken
    from airflow.models.team import dag_bundle_team_association_table

    Base.metadata.create_all(
        settings.engine,
        tables=[
            DagBundleModel.__table__,
            DagModel.__table__,
            dag_bundle_team_association_table,
            RevokedToken.__table__,
        ],
    )
    with settings.Session() as session:
        session.merge(DagBundleModel(name="dags-folder"))
        session.commit()
        for dag_id in dag_ids:
            session.merge(DagModel(dag_id=dag_id, bundle_name="dags-folder"))
        session.commit()


class App:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client, self.tokens = client, tokens

    def call(self, user: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        if path.startswith("/act/") and method == "POST":
            headers.setdefault("origin", ORIGIN)
        return self.client.request(method, path, headers=headers, follow_redirects=False, **kw)

    def cookie_call(self, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
        self.client.cookies.set("_token", self.tokens[user])
        try:
            return self.client.request(method, path, follow_redirects=False, **kw)
        finally:
            self.client.cookies.clear()


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
    from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
    from airflow_escalation.scheduling.base import SchedulerConfig
    from airflow_escalation.service.app import create_app
    from airflow_escalation.stores.memory import InMemoryEscalationStore

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__CORE__AUTH_MANAGER", AUTH_MANAGER)
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", USERS_SETTING)
        mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", SECRET)
        mp.setenv("AIRFLOW__ESCALATION__BASE_URL", ORIGIN)
        _metadata_dags("A", "B", "C")
        previous = airflow_app._AuthManagerState.instance
        manager = airflow_app.create_auth_manager()
        mp.setattr(airflow_app._AuthManagerState, "instance", manager)
        tokens = {
            name: manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role)) for name, role in USERS.items()
        }
        engine = EscalationEngine(
            EscalationEngineConfig(
                store=InMemoryEscalationStore(),
                scheduler_config=SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600),
            )
        )
        service = create_app(engine=engine, policy_config=EscalationPolicyConfig())
        service.state.link_secret = SECRET
        try:
            with TestClient(service) as client:
                yield App(client, tokens)
        finally:
            airflow_app._AuthManagerState.instance = previous


def _token_for(record_id: str, action: str) -> str:
    from airflow_escalation.service import links

    return links.make_action_token(record_id, action, secret=SECRET)  # type: ignore[arg-type]


def test_a_user_granted_one_dag_sees_and_acts_on_that_dag_only(app):
    checks.check_one_dag_user(app.call, checks.seed(app.call, "one-dag"), _token_for)
    checks.check_everyone_still_served(app.call)


def test_a_viewer_reads_every_dag_and_changes_nothing(app):
    checks.check_viewer(app.call, checks.seed(app.call, "viewer"))


def test_an_anonymous_caller_gets_nothing(app):
    checks.check_anonymous(app.call, checks.seed(app.call, "anon"))


def test_inline_policies_name_connections_only_for_connection_editors(app):
    checks.check_connections(app.call)


def test_cookie_writes_need_json_or_airflows_origin(app):
    checks.check_cookie_writes(app.cookie_call, app.call, ORIGIN)


def test_a_record_of_no_dag_needs_the_dag_wide_permission(app):
    ids = checks.seed(app.call, "nodag")
    assert app.call("admin", "POST", f"{checks.API}/escalations/{ids['none']}/acknowledge", json={}).status_code == 200
    assert app.call("team_a", "GET", f"{checks.API}/escalations/{ids['none']}").status_code == 404
    assert app.call("viewer", "GET", f"{checks.API}/escalations/{ids['none']}").status_code == 200
