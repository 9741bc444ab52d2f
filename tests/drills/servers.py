"""Private database servers for the drills that restart them: a PostgreSQL cluster and a Redis
server of their own, on free ports in temporary directories, removed afterwards.

The shared servers (PostgreSQL on :5432, Redis on :6379) are used by other tests and people at
the same time: a drill never restarts them. PostgreSQL runs as the ``postgres`` OS user (initdb
refuses root) from the newest ``/usr/lib/postgresql/*/bin``; Redis from ``redis-server`` on the
PATH, with an append-only file fsynced on every write, so a restart keeps every key.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from airflow_escalation.demo.local_airflow import free_port


class ServerUnavailable(RuntimeError):
    """The server binaries or the OS user are missing: the drill cannot run here."""


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


class PrivatePostgres:
    """A PostgreSQL cluster of its own: ``start()``, ``restart()``, ``destroy()``; ``url(db)``."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            raise ServerUnavailable("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1])
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="escalation-drill-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        done = _as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args], timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{self.log_tail()}")

    def start(self) -> None:
        if not self.data.exists():
            done = _as_postgres(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                timeout=120,
            )
            if done.returncode != 0:
                raise ServerUnavailable(f"initdb failed: {done.stdout}{done.stderr}")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=300 -c shared_buffers=64MB"
        )
        self._pg_ctl("start", "-o", options)

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (every session is disconnected, as in a failover or an
        operator's restart); return the seconds the server was unavailable."""
        began = time.monotonic()
        self._pg_ctl("restart", "-m", "fast")
        return time.monotonic() - began

    def create_database(self, name: str) -> None:
        done = _as_postgres(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-c",
                f"CREATE DATABASE {name}",
            ],
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name} failed: {done.stdout}{done.stderr}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of its own with an fsync-always append-only file: ``start()``,
    ``restart()``, ``destroy()``; ``url``."""

    def __init__(self) -> None:
        self.exe = shutil.which("redis-server")
        if not self.exe:
            raise ServerUnavailable("redis-server is not on the PATH")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="escalation-drill-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.root / "server.log").open("a") as log:
            self.proc = subprocess.Popen(
                [
                    self.exe,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.root),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--protected-mode",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start:\n{(self.root / 'server.log').read_text()}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def restart(self) -> float:
        """SIGTERM, then start again on the same port and files; return the seconds it was down."""
        began = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - began

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
