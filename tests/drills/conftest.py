"""Fixtures of the reliability drills (docs/reliability.md).

``drill_stack`` (session): the private PostgreSQL cluster and the Airflow of
:mod:`drill_stack`, shared by every drill that leaves it healthy; each drill undoes what it broke
(restarts the server it killed, clears the receiver's fault). Under ``CI=true`` a missing
PostgreSQL or Redis binary fails the drill instead of skipping it. The drills' timeouts (900 s)
cover the stack's start-up too, which lands in whichever drill runs first (1.5 min on a quiet
2-core machine, 3.5 min on a loaded one).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drill_stack import DrillStack
from servers import PrivatePostgres, PrivateRedis, ServerUnavailable

from airflow_escalation.demo.sinks import HttpSink


def unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def private_postgres():
    try:
        server = PrivatePostgres()
        server.start()
    except ServerUnavailable as exc:
        unavailable(f"no private PostgreSQL for the drills: {exc}")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_redis():
    try:
        server = PrivateRedis()
        server.start()
    except ServerUnavailable as exc:
        unavailable(f"no private Redis for the drills: {exc}")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def drill_stack(private_postgres, tmp_path_factory):
    private_postgres.create_database("airflow")
    sink = HttpSink()
    stack = DrillStack(tmp_path_factory.mktemp("drill-home"), private_postgres.url("airflow"), sink)
    stack.pg = private_postgres
    began = time.monotonic()
    try:
        timings = stack.start_everything()
        stack.wait(
            lambda: stack.call("GET", "/api/v2/dags/drill_failing").status_code,
            lambda s: s == 200,
            120,
            "drill_failing parsed by the dag-processor",
            interval=0.5,
        )
        print(
            f"\ndrill stack up in {time.monotonic() - began:.1f}s "
            f"({', '.join(f'{k} {v:.1f}s' for k, v in timings.items())})",
            flush=True,
        )
        yield stack
    finally:
        stack.stop_all()
        sink.stop()
        stack.db.dispose()


@pytest.fixture
def sink(drill_stack):
    """The stack's receiver, healthy before and after the drill."""
    drill_stack.sink.fault = None
    drill_stack.sink.hold.set()
    yield drill_stack.sink
    drill_stack.sink.fault = None
    drill_stack.sink.hold.set()
