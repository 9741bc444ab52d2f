"""Policies as data in a real ``airflow api-server`` (tests/airflow_stack.py): the revisions
table made by ``airflow db migrate``, the policies file imported on the first start, the auth
manager's answer on who may edit, and the server's two uvicorn workers (two engines, as two
replicas) both applying an edit saved on one of them, without a restart."""

from __future__ import annotations

import time

from airflow_stack import API

LADDER = {
    "name": "api-server-edited",
    "levels": [
        {"level": 1, "targets": [{"type": "user", "identifier": "lead"}]},
        {"level": 2, "delay_minutes": 15, "targets": [{"type": "user", "identifier": "manager"}]},
    ],
}


def _put(stack, policy, expected, user="admin"):
    return stack.request(
        "PUT",
        f"{API}/policies/{policy['name']}/definition",
        user=user,
        json={"policy": policy, "expected_revision": expected, "comment": "from the real-stack test"},
    )


def _every_worker_applied(stack, revision: int, name: str) -> bool:
    """Twenty answers in a row (the kernel spreads them over both workers) at ``revision``."""
    for _ in range(20):
        current = stack.get(f"{API}/policies/revisions?limit=1").json()["current"]
        if current != revision or stack.get(f"{API}/policies/{name}").status_code != 200:
            return False
    return True


def test_the_policies_file_is_revision_one_and_an_edit_reaches_both_workers(stack):
    document = stack.get(f"{API}/policies/document").json()
    assert document["revision"] >= 1
    first = stack.get(f"{API}/policies/revisions/1").json()
    assert first["source"] == "import" and {p["name"] for p in first["document"]["policies"]} >= {"fast", "restart"}
    assert first["author"] == "system"

    # a viewer may read but not edit; the auth manager says so (connections permission)
    refused = _put(stack, LADDER, document["revision"], user="viewer")
    assert refused.status_code == 403, refused.text

    saved = _put(stack, LADDER, document["revision"])
    assert saved.status_code == 200, saved.text
    revision = saved.json()["revision"]
    assert saved.json()["previews"]["api-server-edited"] == "L1 at 0 min; L2 at 15"

    deadline = time.monotonic() + 60
    while not _every_worker_applied(stack, revision, LADDER["name"]):
        assert time.monotonic() < deadline, "a worker never applied the new revision"
        time.sleep(0.5)
    triggered = stack.post(f"{API}/escalations", json={"incident_id": "edited-policy", "policy_name": LADDER["name"]})
    assert triggered.status_code == 201, triggered.text
    stack.post(f"{API}/escalations/{triggered.json()['record']['id']}/resolve", json={})

    # an invalid edit: every error, and the revision in force stays
    broken = {**LADDER, "levels": [{"level": 1, "delay_minutes": -1, "targets": ["x"]}], "colour": "red"}
    invalid = _put(stack, broken, revision)
    assert invalid.status_code == 422 and len(invalid.json()["errors"]) == 2, invalid.text
    assert stack.get(f"{API}/policies/document").json()["revision"] == revision

    # the session's other tests see the policies file's policies again
    removed = stack.request(
        "DELETE", f"{API}/policies/{LADDER['name']}/definition", params={"expected_revision": revision}
    )
    assert removed.status_code == 200, removed.text
    deadline = time.monotonic() + 60
    while not all(stack.get(f"{API}/policies/revisions?limit=1").json()["current"] == revision + 1 for _ in range(20)):
        assert time.monotonic() < deadline, "a worker never applied the removal"
        time.sleep(0.5)
