"""Shared pieces of the durability tests: servers, shared storage, the policy, worker processes.

The server URLs (``ESCALATION_TEST_POSTGRES_URL``, ``ESCALATION_TEST_MYSQL_URL``,
``ESCALATION_TEST_REDIS_URL``) and the rule "skip locally, fail under ``CI=true`` when a server is
missing" are those of ``tests/stores/conftest.py``: that module is loaded here by its path (under a
private name, so pytest's own ``conftest`` module of that directory is left alone) and its
session fixtures are re-exported by ``tests/durability/conftest.py``.

Every test gets its own table prefix / Redis key prefix (``SharedStorage``) and removes its tables
and keys at the end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from airflow_escalation import EscalationLevel, EscalationPolicy, EscalationTarget
from airflow_escalation.stores.base import BaseEscalationStore
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.stores.sql import SQLEscalationStore, SQLiteEscalationStore
from airflow_escalation.stores.sql_schema import build_tables

HERE = Path(__file__).resolve().parent
WORKER = HERE / "replica_worker.py"


def _load_store_servers() -> Any:
    path = HERE.parent / "stores" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_escalation_test_store_servers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


servers = _load_store_servers()  # POSTGRES_URL, MYSQL_URL, REDIS_URL, unavailable(), fixtures

UTC = timezone.utc
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
POLICY = "durability-ladder"
L1, L2, L3 = "user:l1", "user:l2", "user:l3"

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("redis", marks=pytest.mark.redis),
]


def ladder(name: str = POLICY, delays: Iterable[float] = (0, 15, 30)) -> EscalationPolicy:
    """L1 (delay 0) → L2 → L3, one user target per level (``user:l1`` …)."""
    return EscalationPolicy(
        name=name,
        levels=[
            EscalationLevel(level=n, delay_minutes=delay, targets=[EscalationTarget.user(f"l{n}")])
            for n, delay in enumerate(delays, start=1)
        ],
    )


def unique_suffix() -> str:
    return uuid.uuid4().hex[:10]


def sql_prefix() -> str:
    return f"d{unique_suffix()}_"


def redis_prefix() -> str:
    return f"escalation-durability:{unique_suffix()}:"


def drop_sql_tables(url: str, prefix: str) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for table in reversed(build_tables(sa.MetaData(), prefix)):
                table.drop(conn, checkfirst=True)
    finally:
        engine.dispose()


def clear_redis(url: str, prefix: str) -> None:
    from airflow_escalation.stores.redis import RedisEscalationStore

    store = RedisEscalationStore(redis_url=url, key_prefix=prefix)
    try:
        store.clear()
    finally:
        store.close()


def delivery_rows(store: BaseEscalationStore, record_id: str) -> list[tuple[int, str, str, int]]:
    """``(level, target key, state, attempts)`` of each delivery of the record, in order."""
    return [(d.level, d.target.key, d.state.value, d.attempts) for d in store.get_deliveries(record_id)]


class SharedStorage:
    """One database (or Redis prefix) that several store objects open, as processes would.

    ``open()`` returns a NEW store object on the same storage each time (memory: the one instance,
    since process memory cannot be shared); ``retire(store)`` closes one as its process exiting
    would; ``destroy()`` closes them all and removes the tables / keys.
    """

    def __init__(self, backend: str, *, url: str | None = None, tmp_path: Path | None = None) -> None:
        self.backend = backend
        self.url = url
        self.tmp_path = tmp_path
        self.prefix = redis_prefix() if backend == "redis" else sql_prefix()
        self.opened: list[BaseEscalationStore] = []
        self._closed: set[int] = set()

    def open(self) -> BaseEscalationStore:
        if self.backend == "memory":
            if not self.opened:
                self.opened.append(InMemoryEscalationStore())
            return self.opened[0]
        if self.backend == "sqlite":
            store: BaseEscalationStore = SQLiteEscalationStore(db_path=str(self.tmp_path / "escalations.db"))
        elif self.backend in ("postgresql", "mysql"):
            store = SQLEscalationStore(url=self.url, table_prefix=self.prefix)
        elif self.backend == "redis":
            from airflow_escalation.stores.redis import RedisEscalationStore

            store = RedisEscalationStore(redis_url=self.url, key_prefix=self.prefix)
        else:  # pragma: no cover
            raise ValueError(self.backend)
        self.opened.append(store)
        return store

    def retire(self, store: BaseEscalationStore) -> None:
        if self.backend != "memory" and id(store) not in self._closed:
            self._closed.add(id(store))
            store.close()

    def destroy(self) -> None:
        for store in self.opened:
            self.retire(store)
        if self.backend in ("postgresql", "mysql"):
            drop_sql_tables(self.url, self.prefix)
        elif self.backend == "redis":
            clear_redis(self.url, self.prefix)


# --------------------------------------------------------------------------- worker processes


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines a worker's handler appended (a partial last line is left out)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


@dataclass
class Worker:
    """One replica process (``replica_worker.py``)."""

    name: str
    proc: subprocess.Popen
    log: Path
    ready: Path  # created once the worker's engine has started (and swept)
    waits_for_go: bool
    ids: list[str] = field(default_factory=list)
    expect_exit: bool = False  # a worker the test kills may die

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text()[-chars:]
        except FileNotFoundError:
            return "(no log)"


class Replicas:
    """Starts, watches and stops worker processes of one scenario."""

    def __init__(
        self, tmp_path: Path, store: str, url: str, prefix: str, *, l2_delay_minutes: float, lease_seconds: float
    ) -> None:
        self.tmp_path = tmp_path
        self.store, self.url, self.prefix = store, url, prefix
        self.l2_delay_minutes = l2_delay_minutes
        self.lease_seconds = lease_seconds
        self.out = tmp_path / "deliveries.jsonl"
        self.go = tmp_path / "go"
        self.workers: list[Worker] = []

    def spawn(
        self, name: str, ids: list[str], *, wait_for_go: bool = True, freeze_on_claim: Path | None = None
    ) -> Worker:
        log = self.tmp_path / f"{name}.log"
        args = [
            sys.executable,
            str(WORKER),
            "--store",
            self.store,
            "--url",
            self.url,
            "--prefix",
            self.prefix,
            "--out",
            str(self.out),
            "--ids",
            ",".join(ids),
            "--l2-delay-minutes",
            str(self.l2_delay_minutes),
            "--lease-seconds",
            str(self.lease_seconds),
        ]
        ready = self.tmp_path / f"{name}.ready"
        args += ["--ready", str(ready)]
        if wait_for_go:
            args += ["--go", str(self.go)]
        if freeze_on_claim is not None:
            args += ["--freeze-on-claim", str(freeze_on_claim)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=self.tmp_path, start_new_session=True
            )
        worker = Worker(name, proc, log, ready, wait_for_go, list(ids))
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} (pid {w.pid}, rc {w.proc.poll()}) ---\n{w.log_tail()}" for w in self.workers)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail (with the workers' logs) on timeout or a crash."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return
            for worker in self.workers:
                if not worker.expect_exit and worker.proc.poll() is not None:
                    pytest.fail(
                        f"{worker.name} exited (rc {worker.proc.returncode}) while waiting for {what}\n{self.logs()}",
                        pytrace=False,
                    )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.logs()}", pytrace=False)
            time.sleep(0.1)

    def release(self, timeout: float = 60) -> float:
        """Wait until every worker started with --go is ready, then let them trigger together."""
        readies = [w.ready for w in self.workers if w.waits_for_go]
        self.wait_for(lambda: all(r.exists() for r in readies), timeout, "the workers to start")
        started = time.time()
        self.go.touch()
        return started

    def lines(self) -> list[dict[str, Any]]:
        return read_lines(self.out)

    def delivered(self, level: int, incidents: Iterable[str]) -> Callable[[], bool]:
        wanted = set(incidents)

        def check() -> bool:
            return wanted <= {line["incident"] for line in self.lines() if line["level"] == level}

        return check

    def kill(self, worker: Worker) -> None:
        worker.expect_exit = True
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)

    def stop_all(self, timeout: float = 60) -> None:
        """SIGTERM every live worker (they stop their engines cleanly) and check they exit 0."""
        live = [w for w in self.workers if w.proc.poll() is None]
        for worker in live:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in live:
            try:
                worker.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
                pytest.fail(f"{worker.name} did not stop within {timeout}s of SIGTERM\n{self.logs()}", pytrace=False)
        bad = [w for w in live if w.proc.returncode != 0]
        assert not bad, f"workers exited uncleanly: {[(w.name, w.proc.returncode) for w in bad]}\n{self.logs()}"

    def kill_all(self) -> None:
        """Teardown: no worker outlives its test."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()


def exactly_once_report(lines: list[dict[str, Any]], expected: set[tuple[str, int]]) -> str:
    """'' when every expected (incident, level) was delivered exactly once and nothing else was."""
    counts = Counter((line["incident"], line["level"]) for line in lines)
    problems = []
    missing = sorted(expected - set(counts))
    if missing:
        problems.append(f"missing {len(missing)}: {missing[:10]}")
    extra = sorted(set(counts) - expected)
    if extra:
        problems.append(f"unexpected {len(extra)}: {extra[:10]}")
    twice = sorted((key, n) for key, n in counts.items() if n > 1)
    if twice:
        problems.append(f"delivered more than once {len(twice)}: {twice[:10]}")
    wrong_target = [line for line in lines if line["target"] != f"user:l{line['level']}"]
    if wrong_target:
        problems.append(f"wrong targets: {wrong_target[:5]}")
    return "; ".join(problems)
