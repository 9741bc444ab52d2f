"""Per-Dag authorization in a real ``airflow api-server``: the matrix of authz_checks.py over HTTP.

One server for this module (tests/airflow_stack.py's :class:`AirflowStack`), with the test auth
manager of tests/authz_auth_manager.py (``AIRFLOW__CORE__AUTH_MANAGER``, tests/ on
``PYTHONPATH``) granting ``team_a`` only Dag ``A``, and Dags ``A``, ``B`` and ``C`` parsed into
the metadata database (``airflow dags reserialize``) so Airflow's own ``get_authorized_dag_ids``
lists them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import authz_checks as checks
from airflow_stack import JWT_SECRET, AirflowStack
from authz_auth_manager import AUTH_MANAGER, USERS_SETTING

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
MOUNT = "/escalation"
DAG_FILE = """\
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

for dag_id in ("A", "B", "C"):
    with DAG(dag_id=dag_id, schedule=None) as dag:
        EmptyOperator(task_id="t")
    globals()[dag_id] = dag
"""


@pytest.fixture(scope="module")
def per_dag_stack(tmp_path_factory) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-home-authz")
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "team_dags.py").write_text(DAG_FILE)
    python_path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    stack = AirflowStack(
        home,
        dags_folder=dags,
        extra_env={
            "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS_SETTING,
            "PYTHONPATH": python_path,
            "AIRFLOW__API__WORKERS": "1",  # one engine is enough here: a faster start
        },
    )
    try:
        stack.migrate()
        parsed = stack.cli("dags", "reserialize")
        assert parsed.returncode == 0, parsed.stdout[-3000:] + parsed.stderr[-3000:]
        stack.start()
        yield stack
    finally:
        stack.stop()


def _call(stack: AirflowStack):
    def call(user: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer {stack.token(user)}"
        if path.startswith("/act/") and method == "POST":
            headers.setdefault("origin", stack.base)
        return httpx.request(method, f"{stack.base}{MOUNT}{path}", headers=headers, timeout=30, **kw)

    return call


def _cookie_call(stack: AirflowStack):
    def call(user: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{stack.base}{MOUNT}{path}", cookies={"_token": stack.token(user)}, timeout=30, **kw
        )

    return call


def _token_for(record_id: str, action: str) -> str:
    from airflow_escalation.service import links

    return links.make_action_token(record_id, action, secret=JWT_SECRET)  # type: ignore[arg-type]


def test_airflow_itself_grants_team_a_dag_a_only(per_dag_stack):
    # Airflow's own API, for comparison: the Dags exist and the auth manager answers per Dag
    assert per_dag_stack.get("/api/v2/dags/A", "team_a").status_code == 200
    assert per_dag_stack.get("/api/v2/dags/B", "team_a").status_code == 403
    assert per_dag_stack.get("/api/v2/dags/B", "viewer").status_code == 200


def test_a_user_granted_one_dag_sees_and_acts_on_that_dag_only(per_dag_stack):
    call = _call(per_dag_stack)
    checks.check_one_dag_user(call, checks.seed(call, "one-dag"), _token_for)
    checks.check_everyone_still_served(call)


def test_a_viewer_reads_every_dag_and_changes_nothing(per_dag_stack):
    call = _call(per_dag_stack)
    checks.check_viewer(call, checks.seed(call, "viewer"))


def test_an_anonymous_caller_gets_nothing(per_dag_stack):
    call = _call(per_dag_stack)
    checks.check_anonymous(call, checks.seed(call, "anon"))


def test_inline_policies_name_connections_only_for_connection_editors(per_dag_stack):
    checks.check_connections(_call(per_dag_stack))


def test_cookie_writes_need_json_or_airflows_origin(per_dag_stack):
    checks.check_cookie_writes(_cookie_call(per_dag_stack), _call(per_dag_stack), per_dag_stack.base)
