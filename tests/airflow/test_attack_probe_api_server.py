"""The attack probe of test_attack_probe.py against a real ``airflow api-server`` (the per-Dag
stack of test_authz_api_server.py: ``team_a`` granted Dag ``A``, a viewer, an anonymous caller),
through Airflow's own mount, middleware and cookie handling."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from airflow_stack import AirflowStack
from authz_auth_manager import USERS
from test_attack_probe import (  # the probes, collected here with this module's ``app``
    seeded as seeded,
    test_anonymous_and_bad_tokens_read_nothing as test_anonymous_and_bad_tokens_read_nothing,
    test_cookie_writes_from_another_origin_are_refused as test_cookie_writes_from_another_origin_are_refused,
    test_cross_dag_actions_are_refused_through_every_route_and_body as test_cross_dag_actions_are_refused_through_every_route_and_body,
    test_cross_dag_reads_never_show_another_dags_records as test_cross_dag_reads_never_show_another_dags_records,
    test_cross_dag_record_reads_are_404_as_if_missing as test_cross_dag_record_reads_are_404_as_if_missing,
    test_deep_huge_surrogate_and_nan_contexts_are_refused as test_deep_huge_surrogate_and_nan_contexts_are_refused,
    test_an_incident_never_joins_another_dags_record as test_an_incident_never_joins_another_dags_record,
    test_inline_policies_never_name_connections_for_a_dag_user as test_inline_policies_never_name_connections_for_a_dag_user,
    test_odd_limits_offsets_and_ids_are_refused as test_odd_limits_offsets_and_ids_are_refused,
    test_retrigger_floods_keep_history_bounded as test_retrigger_floods_keep_history_bounded,
    test_triggers_for_another_dag_no_dag_or_odd_dag_ids_are_refused as test_triggers_for_another_dag_no_dag_or_odd_dag_ids_are_refused,
    test_yaml_bombs_and_deep_yaml_are_refused as test_yaml_bombs_and_deep_yaml_are_refused,
)
from test_authz_api_server import MOUNT, per_dag_stack as per_dag_stack

pytestmark = pytest.mark.slow


class Server:
    """The probe's ``app``: ``call``/``cookie_call`` as in test_authz.py, over HTTP."""

    def __init__(self, stack: AirflowStack) -> None:
        self.tokens = {name: stack.token(name) for name in USERS}
        self.origin = stack.base
        self.client = httpx.Client(base_url=f"{stack.base}{MOUNT}", timeout=60, follow_redirects=False)

    def call(self, user: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        if path.startswith("/act/") and method == "POST":
            headers.setdefault("origin", self.origin)
        return self.client.request(method, path, headers=headers, **kw)

    def cookie_call(self, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
        self.client.cookies.set("_token", self.tokens[user])
        try:
            return self.client.request(method, path, **kw)
        finally:
            self.client.cookies.clear()


@pytest.fixture(scope="module")
def app(per_dag_stack: AirflowStack) -> Iterator[Server]:
    server = Server(per_dag_stack)
    try:
        yield server
    finally:
        server.client.close()
