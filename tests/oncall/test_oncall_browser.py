"""The On call page in headless Chromium, against the service app served over HTTP (Airflow's
authentication replaced by a header, as in tests/ui): who is on call, the two-week strip,
creating and expiring a silence from the page, and a suppressed escalation showing why."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ui"))

from ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    _fake_authorize_write,
    _fake_get_user,
    _fake_may_edit,
    _fake_read_dep,
    _fake_read_scope,
    _fake_require_read,
    _fake_write_dep,
    screenshot,
    unavailable,
)

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig, parse_yaml
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.service.routes import oncall as oncall_routes
from airflow_escalation.service.ui import act, api, pages  # noqa: F401  - routes declared before auth is patched
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.testing import FakeClock

from oncall_support import T0
from test_oncall_api import POLICIES


@pytest.fixture
def base_url(monkeypatch) -> Iterator[str]:
    real_read, real_write, real_scope = auth.require_read, auth.require_write, auth.read_scope
    monkeypatch.setattr(auth, "get_user", _fake_get_user)
    monkeypatch.setattr(auth, "require_read", _fake_require_read)
    monkeypatch.setattr(auth, "authorize_write", _fake_authorize_write)
    monkeypatch.setattr(oncall_routes, "authorize_write", _fake_authorize_write)
    monkeypatch.setattr(auth, "read_scope", _fake_read_scope)
    monkeypatch.setattr(auth, "may_edit", _fake_may_edit)
    monkeypatch.setattr(auth, "may_manage_connections", _fake_may_edit)  # GET /me: policy edits, admin only
    config = EscalationPolicyConfig.from_dict(parse_yaml(POLICIES))
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=InMemoryEscalationStore(),
            clock=FakeClock(T0),
            scheduler_config=SchedulerConfig(scheduler_type="memory"),
        )
    )
    for policy in config.policies.values():
        engine.register_policy(policy)
    service = create_app(engine=engine, policy_config=config)
    service.dependency_overrides[real_read] = _fake_read_dep
    service.dependency_overrides[real_write] = _fake_write_dep
    service.dependency_overrides[real_scope] = _fake_read_scope
    root = FastAPI(lifespan=lambda _: service.router.lifespan_context(service))
    root.mount("/escalation", service)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/escalation"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(base_url) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(extra_http_headers={"x-test-user": "admin"}, timezone_id="UTC")
        tab = context.new_page()
        errors: list[str] = []
        tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        tab.errors = errors
        try:
            yield tab
        finally:
            browser.close()


def test_on_call_page(page, base_url):
    page.goto(f"{base_url}/ui/oncall")
    card = page.locator("[data-testid=schedule][data-schedule=oncall-primary]")
    card.locator("[data-testid=on-call-now]").filter(has_text="Alice").wait_for()
    assert "layer:daily" in card.locator("[data-testid=on-call-now]").inner_text()
    # fourteen days of daily shifts starting mid-shift: 15 segments, alternating alice and bob
    users = card.locator("[data-testid=shift]").evaluate_all("nodes => nodes.map(n => n.dataset.user)")
    assert users[:4] == ["alice", "bob", "alice", "bob"] and len(users) == 15
    assert "Mar 2, 08:00 AM: bob" in card.locator(".handoffs li").first.inner_text()
    assert "billing-nightly" in page.locator("[data-testid=window]").inner_text()
    # create a silence from the form
    form = page.locator("[data-testid=silence-form]")
    form.locator("input[name=dag_id]").fill("etl")
    form.locator("input[name=duration_minutes]").fill("30")
    form.locator("input[name=comment]").fill("deploy")
    form.locator("button[type=submit]").click()
    row = page.locator("[data-testid=silence][data-status=active]")
    row.wait_for()
    assert "dag_id=etl" in row.inner_text() and "deploy" in row.inner_text()
    screenshot(page, "oncall")
    # a failure of etl now is suppressed, and its page says why
    answer = page.request.post(
        f"{base_url}/api/v1/escalations", data={"incident_id": "etl.load", "context": {"dag_id": "etl"}}
    ).json()
    assert answer["code"] == "suppressed"
    page.goto(f"{base_url}/ui/records/{answer['record']['id']}")
    page.locator("[data-testid=event][data-event=suppressed]").wait_for()
    text = page.locator("[data-testid=event][data-event=suppressed]").inner_text()
    assert "Suppressed by silence" in text and "deploy" in text
    # expire it from the On call page
    page.goto(f"{base_url}/ui/oncall")
    page.locator("[data-testid=silence] [data-testid=expire]").click()
    page.locator("#no-silences").wait_for(state="visible")
    assert page.locator("[data-testid=silence]").count() == 0
    assert page.errors == []
