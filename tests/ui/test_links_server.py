"""One-click links against a real ``airflow api-server`` (tests/airflow_stack.py): Airflow's own
session cookie, login redirect and permissions, the metadata-database store, two workers.

Links are signed with the server's ``[api_auth] jwt_secret`` (the stack's fixed JWT_SECRET), as
the notification channels sign them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from airflow_escalation.service.links import action_url, make_action_token, verify_action_token
from airflow_stack import API, JWT_SECRET, AirflowStack

pytestmark = pytest.mark.slow

POLICY = {
    "name": "links-test",
    "levels": [
        {"level": 1, "targets": [{"type": "user", "identifier": "lead"}]},
        {"level": 2, "delay_minutes": 120, "targets": [{"type": "user", "identifier": "manager"}]},
    ],
}


def _trigger(stack: AirflowStack, incident: str, **context: Any) -> str:
    r = stack.post(
        f"{API}/escalations",
        json={"incident_id": incident, "policy": POLICY, "context": {"dag_id": "links_dag", **context}},
    )
    assert r.status_code == 201, r.text
    return r.json()["record"]["id"]


def _browser(stack: AirflowStack, user: str | None) -> httpx.Client:
    """A client that authenticates as the UI does: Airflow's ``_token`` cookie, no header."""
    cookies = {"_token": stack.token(user)} if user else {}
    # a browser on Airflow's pages sends their Origin with every POST
    # and asks for HTML when it opens a page (which is what earns the login redirect)
    return httpx.Client(
        base_url=stack.base,
        cookies=cookies,
        timeout=30,
        follow_redirects=False,
        headers={"origin": stack.base, "accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )


def _form(token: str) -> dict[str, str]:
    claims = verify_action_token(token, secret=JWT_SECRET)
    return {"record_id": claims.record_id, "action": claims.action}


def _state(stack: AirflowStack, record_id: str) -> dict:
    return stack.get(f"{API}/escalations/{record_id}").json()


def test_link_valid_once_through_airflows_session(stack):
    rid = _trigger(stack, "link-valid-once")
    token = make_action_token(rid, "acknowledge", secret=JWT_SECRET)
    url = action_url(stack.base, token)
    assert url == f"{stack.base}/escalation/act/{token}"
    path = url[len(stack.base) :]

    with _browser(stack, None) as anonymous:
        login = anonymous.get(path)
        assert login.status_code == 303
        # Airflow's login endpoint accepts the link as its `next` (same origin) and hands over to
        # the auth manager's login page with it
        hop = anonymous.get(login.headers["location"])
        assert hop.status_code == 307 and hop.headers["location"].startswith("/auth/login?next=")
        assert httpx.URL(hop.headers["location"]).params["next"] == url

    with _browser(stack, "viewer") as viewer:
        refused = viewer.get(path)
        assert refused.status_code == 403 and "viewer" in refused.text
        assert viewer.post(path, data=_form(token)).status_code == 403

    with _browser(stack, "admin") as admin:
        page = admin.get(path)
        assert page.status_code == 200 and "link-valid-once" in page.text
        assert _state(stack, rid)["state"] == "active"  # opening the link changed nothing
        done = admin.post(path, data=_form(token), headers={"origin": stack.base})
        assert done.status_code == 200, done.text
        record = _state(stack, rid)
        assert record["state"] == "acknowledged" and record["acknowledged_by"] == "admin"
        # replayed, on either worker: refused, nothing more happens
        for _ in range(3):
            again = admin.post(path, data=_form(token))
            assert again.status_code == 409 and "already used" in again.text
        assert admin.get(path).status_code == 409
    acks = [h for h in _state(stack, rid)["history"] if h["event"] == "acknowledge"]
    assert len(acks) == 1 and acks[0]["actor"] == "admin"


def test_link_expired_tampered_and_wrong_record(stack):
    rid, other = _trigger(stack, "link-bad-1"), _trigger(stack, "link-bad-2")
    with _browser(stack, "admin") as admin:
        old = make_action_token(
            rid, "resolve", secret=JWT_SECRET, ttl_seconds=60, now=datetime.now(timezone.utc) - timedelta(hours=2)
        )
        assert admin.get(f"/escalation/act/{old}").status_code == 410
        assert admin.post(f"/escalation/act/{old}", data={"record_id": rid, "action": "resolve"}).status_code == 410

        token = make_action_token(rid, "resolve", secret=JWT_SECRET)
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert admin.get(f"/escalation/act/{tampered}").status_code == 400
        foreign = make_action_token(rid, "resolve", secret="not-this-servers-secret")
        assert admin.get(f"/escalation/act/{foreign}").status_code == 400

        wrong = admin.post(f"/escalation/act/{token}", data={"record_id": other, "action": "resolve"})
        assert wrong.status_code == 409
        gone = make_action_token("0" * 32, "resolve", secret=JWT_SECRET)
        assert admin.get(f"/escalation/act/{gone}").status_code == 404

        assert _state(stack, rid)["state"] == _state(stack, other)["state"] == "active"
        # the genuine link still works after all that
        assert admin.post(f"/escalation/act/{token}", data=_form(token)).status_code == 200
        assert _state(stack, rid)["state"] == "resolved"
    for record_id in (other,):
        stack.post(f"{API}/escalations/{record_id}/cancel", json={"reason": "test done"})


def test_me_and_cookie_authenticated_actions(stack):
    """The pages' buttons: GET /me mirrors the write check, and the REST API takes the cookie
    for POSTs too (the browser never holds a bearer token)."""
    rid = _trigger(stack, "cookie-actions")
    with _browser(stack, "viewer") as viewer:
        assert viewer.get(f"{API}/me").json() == {
            "username": "viewer",
            "can_act": False,
            "dag_id": None,
            "can_edit_policies": False,
        }
        assert viewer.get(f"{API}/me?dag_id=links_dag").json()["can_act"] is False
        r = viewer.post(f"{API}/escalations/{rid}/acknowledge", json={})
        assert r.status_code == 403 and r.json() == {"detail": "Forbidden"}
    with _browser(stack, "admin") as admin:
        assert admin.get(f"{API}/me?dag_id=links_dag").json() == {
            "username": "admin",
            "can_act": True,
            "dag_id": "links_dag",
            "can_edit_policies": True,
        }
        r = admin.post(f"{API}/escalations/{rid}/acknowledge", json={})
        assert r.status_code == 200 and r.json()["record"]["acknowledged_by"] == "admin"
        assert admin.post(f"{API}/escalations/{rid}/resolve", json={}).status_code == 200
    with _browser(stack, None) as anonymous:
        assert anonymous.get(f"{API}/me").status_code == 401
        page = anonymous.get("/escalation/ui/")
        assert page.status_code == 303 and page.headers["location"].startswith("/api/v2/auth/login?next=")
        assert anonymous.get("/escalation/ui/", headers={"accept": "*/*"}).status_code == 401


def test_plugin_views_reach_the_ui(stack):
    """The UI's plugin list (what the navigation is built from) carries the views."""
    plugins = stack.get("/api/v2/plugins").json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "escalation"]
    routes = {v["url_route"]: v for v in ours["external_views"]}
    assert set(routes) == {"escalations", "escalation-ti", "escalation-task", "escalation-run"}
    assert routes["escalations"]["destination"] == "nav" and routes["escalations"]["nav_top_level"] is True
    assert stack.get("/api/v2/plugins/importErrors").json()["total_entries"] == 0
    for view in routes.values():
        icon = httpx.get(f"{stack.base}/{view['icon']}", timeout=30)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
