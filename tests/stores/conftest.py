"""Fixtures of the store tests: ``store`` (and ``store_factory``) over every backend.

Servers come from ``ESCALATION_TEST_POSTGRES_URL``, ``ESCALATION_TEST_MYSQL_URL`` and
``ESCALATION_TEST_REDIS_URL`` (local defaults below). A server that cannot be reached skips its
tests, except under ``CI=true``, where it fails them: CI must not pass by skipping.

The SQL servers get one set of tables per test run (``RUN_PREFIX``), cleared before each test and
dropped at the end of the session.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from airflow_escalation.stores.base import BaseEscalationStore
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.stores.sql import SQLEscalationStore, SQLiteEscalationStore
from airflow_escalation.stores.sql_schema import build_oncall_table, build_tables

POSTGRES_URL = os.environ.get("ESCALATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("ESCALATION_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("ESCALATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

RUN_PREFIX = f"t{uuid.uuid4().hex[:8]}_"  # table (and Redis key) prefix of this test run

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("redis", marks=pytest.mark.redis),
]
SQL_SERVERS = ("postgresql", "mysql")

StoreFactory = Callable[[], BaseEscalationStore]


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the test servers must be up)", pytrace=False)
    pytest.skip(reason)


def _sql_server(url: str, env_var: str) -> Iterator[str]:
    shown = sa.make_url(url).render_as_string(hide_password=True)
    try:
        # short connect timeout: a server that is down should not stall the run
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
    except Exception as error:
        unavailable(f"no database at {shown} (set {env_var}): {error}")
    yield url
    with engine.begin() as conn:
        for table in reversed(build_tables(sa.MetaData(), RUN_PREFIX)):
            table.drop(conn, checkfirst=True)
        build_oncall_table(sa.MetaData(), RUN_PREFIX).drop(conn, checkfirst=True)
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from _sql_server(POSTGRES_URL, "ESCALATION_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    yield from _sql_server(MYSQL_URL, "ESCALATION_TEST_MYSQL_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as error:
        unavailable(f"no Redis at {REDIS_URL} (set ESCALATION_TEST_REDIS_URL): {error}")
    return REDIS_URL


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[StoreFactory]:
    """Opens stores on one shared storage, as separate processes would (memory: one instance)."""
    opened: list[BaseEscalationStore] = []

    def open_store() -> BaseEscalationStore:
        if backend == "memory":
            if opened:
                return opened[0]
            store: BaseEscalationStore = InMemoryEscalationStore()
        elif backend == "sqlite":
            store = SQLiteEscalationStore(str(tmp_path / "escalations.db"))
        elif backend == "postgresql":
            store = SQLEscalationStore(request.getfixturevalue("postgres_url"), table_prefix=RUN_PREFIX)
        elif backend == "mysql":
            store = SQLEscalationStore(request.getfixturevalue("mysql_url"), table_prefix=RUN_PREFIX)
        else:
            # ---- redis: the Redis store is written by another engineer -------------------------
            try:
                from airflow_escalation.stores.redis import RedisEscalationStore
            except ImportError:
                pytest.skip("redis store not yet available")
            store = RedisEscalationStore(
                request.getfixturevalue("redis_url"), key_prefix=f"escalation-test:{RUN_PREFIX}:"
            )
        opened.append(store)
        return store

    yield open_store
    if backend == "redis" and opened:
        opened[0].clear()  # the Redis database outlives the run
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> BaseEscalationStore:
    """An empty store of the backend."""
    store = store_factory()
    store.clear()
    return store
