"""The tests' Airflow: :class:`~airflow_escalation.demo.local_airflow.LocalAirflow` (a temporary
AIRFLOW_HOME, its CLI, one ``airflow api-server``, optional components) with the tests' setup.

Shared by ``tests/airflow`` (the service in a real API server) and ``tests/ui`` (browser and
one-click link tests): the session fixture ``stack`` (exposed by ``tests/conftest.py``) starts
one server per test session, whichever of those directories asks first; ``tests/dags`` builds
its own with the scheduler, dag-processor and triggerer.

The server: SQLite metadata database, SimpleAuthManager users ``admin`` (role ADMIN) and
``viewer`` (role VIEWER) whose generated passwords :meth:`AirflowStack.password` reads, fixed
JWT and API secrets (tokens and one-click links stay valid across a restart), two uvicorn
workers (two engines on one store, as with several replicas) and the policies below.
"""

from __future__ import annotations

import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_escalation.demo.local_airflow import AIRFLOW, LocalAirflow, kill_group
from airflow_escalation.stores import sql_schema

API = "/escalation/api/v1"
FAST_DELAY_S = 3  # level 2 of policy "fast": delay_minutes 0.05
RESTART_DELAY_S = 15  # level 2 of policy "restart": delay_minutes 0.25
JWT_SECRET = "escalation-tests-jwt-secret-0123456789abcdef"
# two uvicorn workers: two engines on one store, as with several API-server replicas
WORKERS = "2"

POLICIES_YAML = """\
escalation:
  default_policy: fast
  policies:
    - name: fast
      levels:
        - level: 1
          targets: [{type: user, identifier: lead}]
        - level: 2
          delay_minutes: 0.05
          targets: [{type: user, identifier: manager}]
    - name: restart
      levels:
        - level: 1
          targets: [{type: user, identifier: lead}]
        - level: 2
          delay_minutes: 0.25
          targets: [{type: user, identifier: director}]
"""


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


class AirflowStack(LocalAirflow):
    """:class:`LocalAirflow` with the tests' policies, fixed secrets, two API-server workers and
    CLI runs in the background; ``policies_yaml`` replaces the policies file."""

    def __init__(
        self,
        home: Path,
        *,
        policies_yaml: str = POLICIES_YAML,
        dags_folder: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        policies = home / "escalation_policies.yaml"
        policies.write_text(policies_yaml)
        super().__init__(
            home,
            dags_folder=dags_folder,
            policies_file=policies,
            workers=int(WORKERS),
            jwt_secret=JWT_SECRET,
            # fixed: tokens issued before a restart stay valid after it
            extra_env={"AIRFLOW__API__SECRET_KEY": "escalation-tests-secret-key", **(extra_env or {})},
        )
        self.background: dict[str, tuple[subprocess.Popen, Path]] = {}

    def cli_in_background(self, name: str, *args: str) -> None:
        out = self.home / f"cli-{name}.out"
        with out.open("w") as handle:
            proc = subprocess.Popen(
                [AIRFLOW, *args],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )
        self.background[name] = (proc, out)

    def background_output(self, name: str, timeout: float = 240) -> str:
        proc, out = self.background[name]
        rc = proc.wait(timeout=timeout)
        text = out.read_text()
        assert rc == 0, f"airflow {name} failed ({rc}):\n{text[-3000:]}"
        return text

    def engines_started(self) -> set[str]:
        """Engine ids started by the current server (one per API-server worker)."""
        text = self.log_path.read_text().rsplit("===== api-server start", 1)[-1]
        return set(re.findall(r"escalation engine (\S+) started on sql store", text))

    def db_row(self, record_id: str) -> dict | None:
        engine = sa.create_engine(f"sqlite:///{self.db_path}")
        try:
            table = sql_schema.record_table.name
            with engine.connect() as conn:
                row = (
                    conn.execute(
                        sa.text(
                            f"SELECT id, incident_id, policy_name, state, current_level, next_escalation_at "
                            f"FROM {table} WHERE id = :id"
                        ),
                        {"id": record_id},
                    )
                    .mappings()
                    .first()
                )
            return dict(row) if row else None
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> AirflowStack:
    stack = AirflowStack(tmp_path_factory.mktemp("airflow-home"))
    try:
        migrated = stack.cli("db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        # CLI checks run beside the server start (each CLI start costs seconds)
        stack.cli_in_background("providers", "providers", "list", "-o", "json")
        stack.cli_in_background("plugins", "plugins", "-o", "json")
        stack.cli_in_background("config", "config", "list", "--section", "escalation")
        stack.start()
        yield stack
    finally:
        stack.stop()
        for proc, _ in stack.background.values():
            if proc.poll() is None:
                kill_group(proc, signal.SIGKILL, wait=10)
