"""Helpers of the UI tests: headless Chromium, screenshots, the service app in-process.

In-process, Airflow's authentication is replaced by a header naming the user: ``admin`` may act,
``viewer`` may only read, no header = not logged in (401, so pages redirect to the login).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from airflow_escalation.service import auth, links

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
DOC_IMAGES = REPO / "docs" / "images"
CHROMIUM = os.environ.get("ESCALATION_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]

SECRET = "link-tests-secret-0123456789"
#: Airflow's public URL in-process ([escalation] base_url): the origin the link form must come from
ORIGIN = "http://testserver"
API = "/api/v1"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
POLICY = {
    "name": "ops",
    "levels": [
        {"level": 1, "targets": [{"type": "user", "identifier": "lead"}]},
        {"level": 2, "delay_minutes": 60, "targets": [{"type": "user", "identifier": "manager"}]},
    ],
}


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true (CI must not pass by skipping)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{reason} (CI=true: browser tests must run; install Debian's chromium, see .ci/run)", pytrace=False
        )
    pytest.skip(reason)


def screenshot(page: Any, name: str, *, doc: bool = False) -> Path:
    """Save a PNG of ``page`` to test-artifacts/ui/ (and to docs/images/ when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if doc and os.environ.get("ESCALATION_UPDATE_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / path.name)
    return path


# ---------------------------------------------------------------------------------- in-process


class _User:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name

    def get_id(self) -> str:
        return self.name


USERS = {"admin": _User("admin"), "viewer": _User("viewer")}


async def _fake_get_user(request: Request, *_: Any) -> _User:
    name = request.headers.get("x-test-user")
    if name not in USERS:
        raise HTTPException(401, "Not authenticated")
    return USERS[name]


async def _fake_read_dep(request: Request) -> _User:
    return await _fake_get_user(request)


async def _fake_write_dep(request: Request) -> _User:
    user = await _fake_get_user(request)
    await _fake_authorize_write(user)
    return user


async def _fake_require_read(user: Any = None) -> Any:
    return user


async def _fake_authorize_write(user: Any, dag_id: Any = None) -> None:
    if user.name != "admin":
        raise HTTPException(403, "Forbidden")


async def _fake_may_edit(user: Any, dag_id: Any = None) -> bool:
    return user.name == "admin"


async def _fake_read_scope(user: Any = None) -> auth.DagScope:
    return auth.DagScope.everything()  # per-Dag reads: tests/airflow/test_authz*.py


class Service:
    def __init__(self, client: TestClient, app: Any, engine: Any) -> None:
        self.client, self.app, self.engine = client, app, engine

    def headers(self, user: str | None) -> dict[str, str]:
        return {"x-test-user": user} if user else {}

    def trigger(self, incident: str = "inc-1", **context: Any) -> dict:
        r = self.client.post(
            f"{API}/escalations",
            headers=self.headers("admin"),
            json={"incident_id": incident, "policy": POLICY, "context": {"dag_id": "etl", **context}},
        )
        assert r.status_code == 201, r.text
        return r.json()["record"]

    def record(self, record_id: str) -> dict:
        r = self.client.get(f"{API}/escalations/{record_id}", headers=self.headers("admin"))
        assert r.status_code == 200, r.text
        return r.json()

    def token(self, record_id: str, action: str = "acknowledge", **kw: Any) -> str:
        return links.make_action_token(record_id, action, secret=SECRET, **kw)  # type: ignore[arg-type]

    def open(self, token: str, user: str | None = "admin") -> httpx.Response:
        return self.client.get(f"/act/{token}", headers=self.headers(user), follow_redirects=False)

    def confirm(
        self, token: str, user: str | None = "admin", form: dict | None = None, **headers: str
    ) -> httpx.Response:
        """POST the confirmation form as a browser on Airflow's origin does (``origin=`` changes it,
        ``origin=None`` leaves the header out)."""
        if form is None:
            claims = links.verify_action_token(token, secret=SECRET)
            form = {"record_id": claims.record_id, "action": claims.action}
        sent = {"origin": ORIGIN, **headers}
        return self.client.post(
            f"/act/{token}",
            data=form,
            headers={**self.headers(user), **{k: v for k, v in sent.items() if v is not None}},
            follow_redirects=False,
        )


def make_service(monkeypatch: Any, clock: Any = None, handler: Any = None) -> Any:
    """The service app on a memory store with fake authentication; yields a :class:`Service`.
    With a ``clock`` (a FakeClock) the engine runs on it, woken by ``engine.advance``; a
    ``handler`` delivers every notification (testing.RecordingHandler)."""
    from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
    from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
    from airflow_escalation.scheduling.base import SchedulerConfig
    from airflow_escalation.service.app import create_app
    from airflow_escalation.stores.memory import InMemoryEscalationStore

    # routes capture their dependencies when their module is first imported: import them
    # before auth is patched, so the overrides below apply whichever test runs first
    from airflow_escalation.service.routes import escalations, policies, policy_revisions  # noqa: F401
    from airflow_escalation.service.ui import act, api, pages  # noqa: F401

    # REST routes captured Airflow's dependencies when they were declared: override those
    real_read, real_write, real_scope = auth.require_read, auth.require_write, auth.read_scope
    # the pages and link routes call through the module: patch it
    monkeypatch.setenv("AIRFLOW__ESCALATION__BASE_URL", ORIGIN)
    monkeypatch.setattr(auth, "get_user", _fake_get_user)
    monkeypatch.setattr(auth, "require_read", _fake_require_read)
    monkeypatch.setattr(auth, "authorize_write", _fake_authorize_write)
    monkeypatch.setattr(auth, "may_edit", _fake_may_edit)
    monkeypatch.setattr(auth, "may_manage_connections", _fake_may_edit)  # policy edits: admin only
    monkeypatch.setattr(auth, "read_scope", _fake_read_scope)
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=InMemoryEscalationStore(),
            scheduler_config=SchedulerConfig(
                scheduler_type="memory" if clock is not None else "asyncio", check_interval_seconds=3600
            ),
            clock=clock,
            default_notification_handler=handler,
        )
    )
    app = create_app(engine=engine, policy_config=EscalationPolicyConfig())
    app.state.link_secret = SECRET
    app.dependency_overrides[real_read] = _fake_read_dep
    app.dependency_overrides[real_write] = _fake_write_dep
    app.dependency_overrides[real_scope] = _fake_read_scope
    with TestClient(app) as client:
        yield Service(client, app, engine)
