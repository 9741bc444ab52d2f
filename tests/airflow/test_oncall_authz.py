"""Who may do what with silences and overrides, with the real auth manager in-process
(test_authz.py's app: SimpleAuthManager granting ``team_a`` only Dag ``A``, real JWTs): a silence
belongs to the Dag of its ``dag_id`` matcher, one without needs the Dag-wide permission, an
override needs the Dag-wide write permission."""

from __future__ import annotations

from test_authz import app  # noqa: F401 - the module's app fixture

API = "/api/v1"


def silence(call, user: str, **matchers):
    return call(user, "POST", f"{API}/silences", json={"matchers": matchers, "duration_minutes": 30})


def listed(call, user: str) -> set[str]:
    answer = call(user, "GET", f"{API}/silences")
    assert answer.status_code == 200, answer.text
    return {s["id"] for s in answer.json()["silences"]}


def test_silences_follow_the_dag_of_their_matcher(app):  # noqa: F811
    call = app.call
    mine = silence(call, "team_a", dag_id="A", incident="authz-*")
    assert mine.status_code == 201, mine.text
    assert mine.json()["created_by"] == "team_a"
    assert silence(call, "team_a", dag_id="B").status_code == 403
    assert silence(call, "team_a", policy="any").status_code == 403  # no dag_id: the Dag-wide permission
    assert silence(call, "viewer", dag_id="A").status_code == 403  # viewers change nothing
    theirs = silence(call, "admin", dag_id="B").json()
    everywhere = silence(call, "admin", policy="any").json()
    assert silence(call, None, dag_id="A").status_code == 401

    assert mine.json()["id"] in listed(call, "team_a")
    assert not {theirs["id"], everywhere["id"]} & listed(call, "team_a")
    assert {mine.json()["id"], theirs["id"], everywhere["id"]} <= listed(call, "viewer")
    assert call("team_a", "GET", f"{API}/silences/{theirs['id']}").status_code == 404
    assert call("team_a", "POST", f"{API}/silences/{theirs['id']}/expire", json={}).status_code == 404
    assert call("viewer", "POST", f"{API}/silences/{theirs['id']}/expire", json={}).status_code == 403
    assert call("team_a", "POST", f"{API}/silences/{mine.json()['id']}/expire", json={}).json()["status"] == "expired"
    assert call("admin", "DELETE", f"{API}/silences/{everywhere['id']}").json()["status"] == "expired"


def test_overrides_need_the_dag_wide_write_permission(app):  # noqa: F811
    body = {"schedule": "s", "user": "u", "start": "2026-03-02T07:00:00Z", "end": "2099-03-02T09:00:00Z"}
    assert app.call("team_a", "POST", f"{API}/overrides", json=body).status_code == 403
    assert app.call("viewer", "POST", f"{API}/overrides", json=body).status_code == 403
    refused = app.call("admin", "POST", f"{API}/overrides", json=body)  # allowed, but no such schedule
    assert refused.status_code == 422 and "schedule: unknown schedule 's'" in str(refused.json()["detail"])
    assert app.call("team_a", "DELETE", f"{API}/overrides/nope").status_code == 403


def test_reading_schedules_needs_the_service_only(app):  # noqa: F811
    for user in ("viewer", "team_a", "admin"):
        answer = app.call(user, "GET", f"{API}/schedules")
        assert answer.status_code == 200 and answer.json()["schedules"] == []
    assert app.call(None, "GET", f"{API}/schedules").status_code == 401
    assert app.call(None, "GET", f"{API}/silences").status_code == 401
