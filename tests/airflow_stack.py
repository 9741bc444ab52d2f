"""A real Airflow stack for tests: a temporary AIRFLOW_HOME and one ``airflow api-server``.

Shared by ``tests/airflow`` (the service in a real API server) and ``tests/ui`` (browser and
one-click link tests): the session fixture ``stack`` (exposed by ``tests/conftest.py``) starts
one server per test session, whichever of those directories asks first.

The server: SQLite metadata database, SimpleAuthManager users ``admin`` (role ADMIN) and
``viewer`` (role VIEWER) whose generated passwords :meth:`AirflowStack.password` reads, fixed
JWT and API secrets (tokens and one-click links stay valid across a restart), two uvicorn
workers (two engines on one store, as with several replicas) and the policies below.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from airflow_escalation.stores import sql_schema

AIRFLOW = str(Path(sys.executable).parent / "airflow")
API = "/escalation/api/v1"
STARTUP_TIMEOUT = 150
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


# optional components (start_components): each its own process on 127.0.0.1, no log servers
COMPONENT_COMMANDS = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}


class AirflowStack:
    """A temporary Airflow home, its CLI, one ``airflow api-server`` process and, optionally, a
    scheduler, a dag-processor and a triggerer (:meth:`start_components`).

    ``policies_yaml`` replaces the policies file, ``dags_folder`` the (empty) DAGs folder, and
    ``extra_env`` adds or overrides environment variables of every process.
    """

    def __init__(self, home: Path, *, policies_yaml: str = POLICIES_YAML, dags_folder: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db_path = home / "airflow.db"
        self.log_path = home / "api-server.log"
        (home / "dags").mkdir()
        self.dags_folder = dags_folder or home / "dags"
        policies = home / "escalation_policies.yaml"
        policies.write_text(policies_yaml)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": WORKERS,
            # fixed secrets: tokens issued before a restart stay valid after it
            "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
            "AIRFLOW__API__SECRET_KEY": "escalation-tests-secret-key",
            "AIRFLOW__ESCALATION__POLICIES_FILE": str(policies),
            "AIRFLOW__ESCALATION__CHECK_INTERVAL_SECONDS": "1",
            # links in notifications point at this server (same host as the browser's cookie)
            "AIRFLOW__ESCALATION__BASE_URL": self.base,
            # where task processes (LocalExecutor) and the triggerer reach the Execution API
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
        })
        env.update(extra_env or {})
        self.env = env
        self.components: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.server: subprocess.Popen | None = None
        self.started_at: datetime | None = None
        self.background: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.tokens: dict[str, str] = {}

    # ------------------------------------------------------------------ CLI
    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.home)

    def cli_in_background(self, name: str, *args: str) -> None:
        out = self.home / f"cli-{name}.out"
        with out.open("w") as handle:
            proc = subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=handle,
                                    stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True)
        self.background[name] = (proc, out)

    def background_output(self, name: str, timeout: float = 240) -> str:
        proc, out = self.background[name]
        rc = proc.wait(timeout=timeout)
        text = out.read_text()
        assert rc == 0, f"airflow {name} failed ({rc}):\n{text[-3000:]}"
        return text

    # ------------------------------------------------------------------ server
    def start(self) -> None:
        assert self.server is None
        with self.log_path.open("a") as log:
            log.write(f"\n===== api-server start {datetime.now().isoformat()} =====\n")
            log.flush()
            self.started_at = datetime.now().astimezone()
            self.server = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home,
                start_new_session=True,  # its own process group: stop() ends all its children
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"api-server exited with {self.server.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"api-server not healthy after {STARTUP_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.server = self.server, None
        if proc is None or proc.poll() is not None:
            return
        _kill_group(proc, signal.SIGTERM, wait=45)

    def restart(self) -> None:
        self.stop()
        self.start()

    # ------------------------------------------------------------------ optional components
    def start_components(self, *names: str) -> None:
        """Start ``scheduler``, ``dag-processor`` and/or ``triggerer``, each in its own process
        group, logging to ``<home>/<name>.log``."""
        for name in names:
            assert name not in self.components, f"{name} already started"
            log_path = self.home / f"{name}.log"
            with log_path.open("a") as log:
                proc = subprocess.Popen([AIRFLOW, *COMPONENT_COMMANDS[name]], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True)
            self.components[name] = (proc, log_path)

    def component_log(self, name: str, chars: int = 6000) -> str:
        path = self.components[name][1] if name in self.components else self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def check_components(self) -> None:
        """Fail with the component's log if one of them exited."""
        for name, (proc, _) in self.components.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.component_log(name)}")

    def stop_components(self) -> None:
        for name, (proc, _) in list(self.components.items()):
            if proc.poll() is None:
                _kill_group(proc, signal.SIGTERM, wait=30)
            del self.components[name]

    def stop_all(self) -> None:
        """Components first (they talk to the API server), then the API server."""
        self.stop_components()
        self.stop()

    def engines_started(self) -> set[str]:
        """Engine ids started by the current server (one per API-server worker)."""
        text = self.log_path.read_text().rsplit("===== api-server start", 1)[-1]
        return set(re.findall(r"escalation engine (\S+) started on sql store", text))

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else "(no log)"

    # ------------------------------------------------------------------ HTTP
    def password(self, user: str) -> str:
        """SimpleAuthManager's generated password of ``user``."""
        passwords_file = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(passwords_file.read_text())[user]

    def token(self, user: str) -> str:
        if user not in self.tokens:
            password = self.password(user)
            r = httpx.post(f"{self.base}/auth/token", json={"username": user, "password": password},
                           timeout=30)
            assert r.status_code in (200, 201), r.text
            self.tokens[user] = r.json()["access_token"]
        return self.tokens[user]

    def request(self, method: str, path: str, user: str | None = "admin", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def get(self, path: str, user: str | None = "admin", **kw: Any) -> httpx.Response:
        return self.request("GET", path, user, **kw)

    def post(self, path: str, user: str | None = "admin", **kw: Any) -> httpx.Response:
        return self.request("POST", path, user, **kw)

    def db_row(self, record_id: str) -> dict | None:
        engine = sa.create_engine(f"sqlite:///{self.db_path}")
        try:
            table = sql_schema.record_table.name
            with engine.connect() as conn:
                row = conn.execute(sa.text(
                    f"SELECT id, incident_id, policy_name, state, current_level, next_escalation_at "
                    f"FROM {table} WHERE id = :id"), {"id": record_id}).mappings().first()
            return dict(row) if row else None
        finally:
            engine.dispose()


def _kill_group(proc: subprocess.Popen, sig: int, wait: float) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


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
                _kill_group(proc, signal.SIGKILL, wait=10)
