"""Policies as data in a real ``airflow api-server`` (tests/airflow_stack.py): the revisions
table made by ``airflow db migrate``, the policies file imported on the first start, the auth
manager's answer on who may edit, and the server's two uvicorn workers (two engines, as two
replicas) both applying an edit saved on one of them, without a restart."""

from __future__ import annotations

import time

import pytest

from airflow_stack import API

pytestmark = pytest.mark.slow

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


def test_cli_exports_imports_lists_and_rolls_back(stack, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("airflow-escalation")
    login = ["--url", stack.base, "--username", "admin", "--password", stack.password("admin")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(cli), *args, *login], capture_output=True, text=True, timeout=120)

    exported = tmp_path / "policies.yaml"
    done = run("policy", "export", "--file", str(exported))
    assert done.returncode == 0, done.stderr
    before = stack.get(f"{API}/policies/document").json()["revision"]
    assert f"revision {before} written" in done.stdout and "name: fast" in exported.read_text()

    exported.write_text(
        exported.read_text()
        .replace("delay_minutes: -1", "x")
        .replace("name: restart", "name: restart\n      cooldown: 1")
    )
    refused = run("policy", "import", str(exported))
    assert refused.returncode == 1 and "not saved, 1 errors" in refused.stderr and "cooldown" in refused.stderr

    exported.write_text(
        exported.read_text().replace("      cooldown: 1\n", "").replace("delay_minutes: 0.25", "delay_minutes: 0.5")
    )
    imported = run("policy", "import", str(exported), "--comment", "slower restart")
    assert imported.returncode == 0, imported.stderr
    assert f"saved revision {before + 1}: policy restart changed: levels[1].delay_minutes" in imported.stdout
    assert "restart: L1 at 0 min; L2 at 0.5" in imported.stdout

    listed = run("policy", "revisions", "--limit", "2")
    assert listed.returncode == 0 and "slower restart" in listed.stdout and "database wins" in listed.stdout

    back = run("policy", "rollback", str(before))
    assert back.returncode == 0, back.stderr
    assert f"saved revision {before + 2} with the policies of revision {before}" in back.stdout
    assert (
        stack.get(f"{API}/policies/document").json()["document"]
        == stack.get(f"{API}/policies/revisions/{before}").json()["document"]
    )
    deadline = time.monotonic() + 60
    while not _every_worker_applied(stack, before + 2, "restart"):  # the next tests see the file's policies
        assert time.monotonic() < deadline, "a worker never applied the roll back"
        time.sleep(0.5)
