"""The per-Dag authorization matrix, run in-process (test_authz.py) and against a real API server
(test_authz_api_server.py): a user granted only Dag ``A`` (``team_a``), a viewer, an anonymous
caller, each refused with a 4xx on what is not theirs, while the service keeps answering.

``Caller(user, method, path, **httpx_kwargs)`` sends one request: ``user`` None = anonymous; the
path is relative to the service's mount (``/api/v1/...``, ``/ui/...``, ``/act/...``).
"""

from __future__ import annotations

from typing import Any, Callable

import httpx

Caller = Callable[..., httpx.Response]
API = "/api/v1"
CONN_POLICY = {
    "name": "inline-conn",
    "levels": [{"level": 1, "targets": [{"type": "webhook", "identifier": "/x", "conn_id": "ops_webhook"}]}],
}
PLAIN_POLICY = {"name": "inline-plain", "levels": [{"level": 1, "targets": ["lead"]}]}


def trigger(call: Caller, user: str | None, incident: str, dag_id: str | None, **body: Any) -> httpx.Response:
    context = {"severity": "high", **({"dag_id": dag_id} if dag_id else {})}
    return call(
        user,
        "POST",
        f"{API}/escalations",
        json={"incident_id": incident, "context": context, "policy": PLAIN_POLICY, **body},
    )


def seed(call: Caller, tag: str) -> dict[str, str]:
    """Records of Dag A, Dag B and no Dag, made by the admin: label -> record id."""
    ids = {}
    for label, dag in (("a", "A"), ("b", "B"), ("none", None)):
        r = trigger(call, "admin", f"{tag}-{label}", dag)
        assert r.status_code == 201, r.text
        ids[label] = r.json()["record"]["id"]
    return ids


def listed(call: Caller, user: str, query: str = "") -> set[str]:
    r = call(user, "GET", f"{API}/escalations?limit=500{query}")
    assert r.status_code == 200, r.text
    return {e["id"] for e in r.json()["escalations"]}


def state(call: Caller, record_id: str) -> str:
    return call("admin", "GET", f"{API}/escalations/{record_id}").json()["state"]


def check_one_dag_user(call: Caller, ids: dict[str, str], token_for: Callable[[str, str], str]) -> None:
    """``team_a`` sees, pages and acts on Dag A only; every other record answers 404."""
    a, b, none = ids["a"], ids["b"], ids["none"]
    mine = listed(call, "team_a")
    assert a in mine and b not in mine and none not in mine
    assert listed(call, "team_a", "&dag_id=B") == set()
    assert listed(call, "team_a", f"&ids={a},{b},{none}") == {a}
    every = call("team_a", "GET", f"{API}/escalations?limit=500").json()
    assert all(e["context"].get("dag_id") == "A" for e in every["escalations"]), every
    stats = call("team_a", "GET", f"{API}/stats").json()
    assert stats["total_escalations"] == every["total"]
    assert call("team_a", "GET", f"{API}/escalations/{a}").status_code == 200
    for hidden in (b, none):
        r = call("team_a", "GET", f"{API}/escalations/{hidden}")
        assert r.status_code == 404, r.text
        assert r.json() == {"detail": f"escalation {hidden!r} not found"}  # as if it did not exist
        for action in ("acknowledge", "resolve", "cancel", "escalate"):
            r = call("team_a", "POST", f"{API}/escalations/{hidden}/{action}", json={})
            assert r.status_code == 404, (action, r.text)
            assert r.json()["code"] == "not_found"
        assert state(call, hidden) == "active"
    # /me reveals nothing about other Dags; on its own Dag it may act, Dag-wide it may not
    assert call("team_a", "GET", f"{API}/me?dag_id=B").status_code == 404
    assert call("team_a", "GET", f"{API}/me?dag_id=A").json()["can_act"] is True
    assert call("team_a", "GET", f"{API}/me").json()["can_act"] is False
    # triggers: only for its own Dag
    assert trigger(call, "team_a", "b-from-a", "B").status_code == 403
    assert trigger(call, "team_a", "nodag-from-a", None).status_code == 403
    assert trigger(call, "team_a", "a-from-a", "A").status_code == 201
    # pages and one-click links: the same answers
    assert call("team_a", "GET", f"/ui/records/{a}").status_code == 200
    assert call("team_a", "GET", f"/ui/records/{b}").status_code == 404
    assert call("team_a", "GET", "/ui/ti?dag_id=B&run_id=r&task_id=t").status_code == 404
    assert call("team_a", "GET", "/ui/ti?dag_id=A&run_id=r&task_id=t").status_code == 200
    token = token_for(b, "acknowledge")
    assert call("team_a", "GET", f"/act/{token}").status_code == 404
    r = call("team_a", "POST", f"/act/{token}", data={"record_id": b, "action": "acknowledge"})
    assert r.status_code == 404, r.text
    assert state(call, b) == "active"
    # its own record: acknowledged through the REST API
    assert call("team_a", "POST", f"{API}/escalations/{a}/acknowledge", json={}).status_code == 200


def check_viewer(call: Caller, ids: dict[str, str]) -> None:
    """A viewer reads every Dag's records (the Dag-wide read permission) and changes nothing."""
    assert set(ids.values()) <= listed(call, "viewer")
    for record_id in ids.values():
        assert call("viewer", "GET", f"{API}/escalations/{record_id}").status_code == 200
        for action in ("acknowledge", "resolve", "cancel", "escalate"):
            r = call("viewer", "POST", f"{API}/escalations/{record_id}/{action}", json={})
            assert r.status_code == 403, (action, r.text)
    assert call("viewer", "GET", f"{API}/me?dag_id=B").json()["can_act"] is False
    assert trigger(call, "viewer", "viewer-trigger", "A").status_code == 403


def check_anonymous(call: Caller, ids: dict[str, str]) -> None:
    for method, path in [
        ("GET", f"{API}/escalations"),
        ("GET", f"{API}/escalations/{ids['a']}"),
        ("GET", f"{API}/stats"),
        ("GET", f"{API}/me?dag_id=A"),
        ("POST", f"{API}/escalations/{ids['a']}/acknowledge"),
        ("POST", f"{API}/escalations"),
    ]:
        r = call(None, method, path, json={"incident_id": "anon"})
        assert r.status_code == 401, (method, path, r.text)
    assert call(None, "GET", f"/ui/records/{ids['b']}").status_code == 401
    # a browser's navigation is sent to Airflow's login instead
    assert call(None, "GET", f"/ui/records/{ids['b']}", headers={"accept": "text/html"}).status_code == 303


def check_connections(call: Caller) -> None:
    """Only a user who may edit connections names them in an inline policy."""
    r = trigger(call, "team_a", "conn-from-a", "A", policy=CONN_POLICY)
    assert r.status_code == 403 and "connection" in r.json()["detail"] and "ops_webhook" in r.json()["detail"]
    assert trigger(call, "admin", "conn-from-admin", "A", policy=CONN_POLICY).status_code == 201


def check_cookie_writes(cookie_call: Caller, call: Caller, base_origin: str) -> None:
    """With the session cookie, a write is JSON or comes from Airflow's origin; never a foreign form."""
    rid = trigger(call, "admin", "cookie-case", "A").json()["record"]["id"]
    path = f"{API}/escalations/{rid}/acknowledge"
    for headers in ({"origin": "https://evil.example"}, {}, {"origin": "null"}):
        r = cookie_call("team_a", "POST", path, data={"note": "x"}, headers=headers)
        assert r.status_code == 403, (headers, r.text)
    assert state(call, rid) == "active"
    r = cookie_call("team_a", "POST", path, data={"note": "x"}, headers={"origin": base_origin})
    assert r.status_code in (200, 422), r.text  # from Airflow's origin: allowed past the check
    rid2 = trigger(call, "admin", "cookie-json", "A").json()["record"]["id"]
    assert cookie_call("team_a", "POST", f"{API}/escalations/{rid2}/acknowledge", json={}).status_code == 200


def check_everyone_still_served(call: Caller) -> None:
    for user in ("admin", "viewer", "team_a"):
        assert call(user, "GET", f"{API}/escalations").status_code == 200
        assert call(user, "GET", f"{API}/stats").status_code == 200
