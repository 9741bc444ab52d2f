"""A local Airflow on 127.0.0.1: a fresh AIRFLOW_HOME, its CLI, an ``airflow api-server`` and,
optionally, a scheduler, a dag-processor and a triggerer, each its own process group.

Used by ``make demo`` (:mod:`airflow_escalation.demo.run`) and by the test suite's real-stack
fixtures. The metadata database is SQLite in the home unless ``db_url`` names another (the
reliability drills use PostgreSQL, with a second API server on it: :meth:`LocalAirflow.start_api_server`);
SimpleAuthManager users ``admin`` (ADMIN), ``viewer`` (VIEWER) and the service account
``airflow-escalation`` (USER, the login of ``escalation_default``) log in with the passwords given,
or with the ones Airflow
generates (:meth:`LocalAirflow.password`). Nothing here is meant for production.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import httpx

AIRFLOW = str(Path(sys.executable).parent / "airflow")
#: the SimpleAuthManager user (role USER) DAG code authenticates as: ``escalation_default``'s login
SERVICE_ACCOUNT = "airflow-escalation"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STARTUP_TIMEOUT = 150

# each optional component on 127.0.0.1, without its log server
COMPONENT_COMMANDS = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}


PIDS_FILE = "pids"  # every process started, so a later run can stop what a killed one left


class LocalAirflowError(RuntimeError):
    """A process of the local Airflow did not start or exited; the message ends with its log."""


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for port in ((preferred,) if preferred else ()) + (0,):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise LocalAirflowError("no free port on 127.0.0.1")


class LocalAirflow:
    """A temporary Airflow home with an API server and optional components.

    ``policies_file`` becomes ``[escalation] policies_file``; ``dags_folder`` defaults to an empty
    ``<home>/dags``; ``passwords`` (user → password) fixes the login instead of generated
    passwords; ``db_url`` is the metadata database's SQLAlchemy URL (default: SQLite in the home);
    ``extra_env`` adds or overrides environment variables of every process.
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        dags_folder: Path | None = None,
        policies_file: Path | None = None,
        workers: int = 1,
        jwt_secret: str | None = None,
        passwords: dict[str, str] | None = None,
        db_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db_path = home / "airflow.db"
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        self.log_path = home / "api-server.log"
        (home / "dags").mkdir(parents=True, exist_ok=True)
        self.dags_folder = dags_folder or home / "dags"
        # SimpleAuthManager only generates passwords for users missing from this file; the
        # service account's is always set here, since the connection below carries it
        passwords_file = home / "simple_auth_manager_passwords.json.generated"
        known = json.loads(passwords_file.read_text()) if passwords_file.exists() else {}
        known.setdefault(SERVICE_ACCOUNT, secrets.token_urlsafe(18))
        passwords_file.write_text(json.dumps({**known, **(passwords or {})}) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,viewer:viewer,{SERVICE_ACCOUNT}:user",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": str(workers),
                "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret or secrets.token_hex(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__ESCALATION__CHECK_INTERVAL_SECONDS": "1",
                # links in notifications point at this server (the browser's cookie is for this host)
                "AIRFLOW__ESCALATION__BASE_URL": self.base,
                # where task processes (LocalExecutor) and the triggerer reach the Execution API
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            }
        )
        if policies_file is not None:
            env["AIRFLOW__ESCALATION__POLICIES_FILE"] = str(policies_file)
        # callbacks, operators and sensors reach the service through this connection
        env["AIRFLOW_CONN_ESCALATION_DEFAULT"] = json.dumps(self.escalation_connection())
        env.update(extra_env or {})
        self.env = env
        self.server: subprocess.Popen | None = None
        self.started_at: datetime | None = None
        self.components: dict[str, tuple[subprocess.Popen, Path]] = {}
        self._commands: dict[str, tuple[str, ...]] = {}
        self.stopped: set[str] = set()  # components stopped on purpose (kill_component)
        self.api_ports: dict[str, int] = {}  # API servers started by start_api_server
        self.tokens: dict[str, str] = {}

    # ------------------------------------------------------------------ CLI
    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.home
        )

    def migrate(self) -> None:
        """``airflow db migrate`` (Airflow's tables and, through the provider's DB manager, ours)."""
        done = self.cli("db", "migrate")
        if done.returncode != 0:
            raise LocalAirflowError(
                f"airflow db migrate failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )

    # ------------------------------------------------------------------ API server
    def start(self) -> None:
        """Start the API server and wait until it answers its health check."""
        assert self.server is None, "api-server already started"
        with self.log_path.open("a") as log:
            log.write(f"\n===== api-server start {datetime.now().isoformat()} =====\n")
            log.flush()
            self.started_at = datetime.now().astimezone()
            self.server = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # its own process group: stop() ends its workers too
            )
        self._remember(self.server)
        self.wait_healthy(self.base, self.server, self.log_tail)

    def _remember(self, proc: subprocess.Popen) -> None:
        with (self.home / PIDS_FILE).open("a") as pids:
            pids.write(f"{proc.pid}\n")

    def stop(self) -> None:
        proc, self.server = self.server, None
        if proc is not None and proc.poll() is None:
            kill_group(proc, signal.SIGTERM, wait=45)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def handoff_ms(self, dag_id: str, task_id: str, run_id: str = "") -> int | None:
        """How long the task's failure callback took to hand its trigger over, from the task's log
        (the notifier's ``escalation trigger of incident … (N ms)`` line)."""
        for path in (self.home / "logs").rglob("*.log"):
            name = str(path)
            if f"dag_id={dag_id}" in name and f"task_id={task_id}" in name and run_id in name:
                found = re.findall(r"escalation trigger of incident .*?\((\d+) ms\)", path.read_text(errors="replace"))
                if found:
                    return int(found[-1])
        return None

    # ------------------------------------------------------------------ components
    def start_components(self, *names: str) -> None:
        """Start ``scheduler``, ``dag-processor`` and/or ``triggerer``, each logging to
        ``<home>/<name>.log``."""
        for name in names:
            self._start_component(name, COMPONENT_COMMANDS[name])

    def _start_component(self, name: str, command: tuple[str, ...]) -> None:
        assert name not in self.components or self.components[name][0].poll() is not None, f"{name} already running"
        log_path = self.home / f"{name}.log"
        with log_path.open("a") as log:
            log.write(f"\n===== {name} start {datetime.now().isoformat()} =====\n")
            log.flush()
            proc = subprocess.Popen(
                [AIRFLOW, *command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )
        self._remember(proc)
        self.components[name] = (proc, log_path)
        self._commands[name] = command
        self.stopped.discard(name)

    def start_api_server(self, name: str, port: int | None = None, wait: bool = True) -> str:
        """Start another ``airflow api-server`` (its own process, not a worker of the first) on
        ``port`` (default: a free one), on the same metadata database and configuration; it is a
        component called ``name``. Return its base URL once it is healthy (``wait=False``: at
        once; :meth:`wait_api_server` waits)."""
        port = port or self.api_ports.get(name) or free_port()
        self.api_ports[name] = port
        self._start_component(name, ("api-server", "--host", "127.0.0.1", "--port", str(port)))
        if wait:
            self.wait_api_server(name)
        return f"http://127.0.0.1:{port}"

    def wait_api_server(self, name: str) -> None:
        self.wait_healthy(
            f"http://127.0.0.1:{self.api_ports[name]}", self.components[name][0], lambda: self.component_log(name)
        )

    def wait_healthy(self, base: str, proc: subprocess.Popen, log_tail: Any) -> None:
        """Wait until the API server at ``base`` answers its health check."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalAirflowError(f"api-server at {base} exited with {proc.returncode}:\n{log_tail()}")
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise LocalAirflowError(f"api-server at {base} not healthy after {STARTUP_TIMEOUT}s:\n{log_tail()}")

    def kill_component(self, name: str, sig: int = signal.SIGKILL, wait: float = 30) -> int:
        """Send ``sig`` to the component's process group (SIGKILL: nothing runs its shutdown) and
        wait for it to exit; return its exit code. :meth:`restart_component` starts it again."""
        proc = self.components[name][0]
        self.stopped.add(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        return proc.returncode

    def restart_component(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop the component (``sig``, SIGKILL after 30 s) and start it again with the same
        command; an extra API server is waited for until healthy."""
        self.kill_component(name, sig)
        if name in self.api_ports:
            self.start_api_server(name)
        else:
            self._start_component(name, self._commands[name])

    def wait(
        self,
        fetch: Callable[[], Any],
        done: Callable[[Any], bool],
        timeout: float,
        what: str,
        interval: float = 0.25,
        check: bool = True,
    ) -> Any:
        """Poll ``fetch`` until ``done``; :class:`LocalAirflowError` with the logs on timeout or,
        unless ``check`` is false, when a component exited (the tests' real stacks share it)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = fetch()
            if done(last):
                return last
            if check:
                self.check_components()
            time.sleep(interval)
        logs = "\n".join(f"--- {name} ---\n{self.component_log(name, 2500)}" for name in self.components)
        raise LocalAirflowError(
            f"{what}: not within {timeout:.0f}s; last: {str(last)[:1500]}\n{logs}\n"
            f"--- api-server ---\n{self.log_tail(2500)}"
        )

    def component_log(self, name: str, chars: int = 6000) -> str:
        path = self.components[name][1] if name in self.components else self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def check_components(self) -> None:
        """Raise with the component's log if one of them exited (one stopped on purpose with
        :meth:`kill_component` and not restarted yet is left out)."""
        for name, (proc, _) in self.components.items():
            if proc.poll() is not None and name not in self.stopped:
                raise LocalAirflowError(f"{name} exited with {proc.returncode}:\n{self.component_log(name)}")

    def stop_components(self) -> None:
        for name, (proc, _) in list(self.components.items()):
            if proc.poll() is None:
                kill_group(proc, signal.SIGTERM, wait=30)
            del self.components[name]

    def stop_all(self) -> None:
        """Components first (they talk to the API server), then the API server."""
        self.stop_components()
        self.stop()

    # ------------------------------------------------------------------ HTTP
    def escalation_connection(self, **extra: Any) -> dict[str, Any]:
        """``escalation_default``: the service account's login (role USER, the least that may
        trigger and act), exchanged for a short-lived token at POST /auth/token."""
        connection: dict[str, Any] = {
            "conn_type": "escalation",
            "host": self.base,
            "login": SERVICE_ACCOUNT,
            "password": self.password(SERVICE_ACCOUNT),
        }
        if extra:
            connection["extra"] = extra
        return connection

    def password(self, user: str) -> str:
        """SimpleAuthManager's password of ``user`` (given, or generated at the first start)."""
        passwords_file = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(passwords_file.read_text())[user]

    def token(self, user: str) -> str:
        if user not in self.tokens:
            r = httpx.post(
                f"{self.base}/auth/token", json={"username": user, "password": self.password(user)}, timeout=30
            )
            if r.status_code not in (200, 201):
                raise LocalAirflowError(f"login of {user} failed: HTTP {r.status_code} {r.text[:300]}")
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


def stop_leftovers(home: Path, wait: float = 20) -> list[int]:
    """Stop the Airflow processes a :class:`LocalAirflow` in ``home`` started and left running
    (its owner was killed); return their pids."""
    import psutil

    pids_file = home / PIDS_FILE
    if not pids_file.exists():
        return []
    alive = []
    for pid in {int(line) for line in pids_file.read_text().split() if line.isdigit()}:
        try:
            if "airflow" in " ".join(psutil.Process(pid).cmdline()):  # not a recycled pid
                os.killpg(pid, signal.SIGTERM)
                alive.append(pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(running(pid) for pid in alive):
        time.sleep(0.2)
    for pid in alive:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return sorted(alive)


def kill_group(proc: subprocess.Popen, sig: int, wait: float) -> None:
    """Signal ``proc``'s process group; SIGKILL it when it has not exited after ``wait`` s."""
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
