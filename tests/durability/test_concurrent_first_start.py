"""Replicas starting together on a fresh SQL database must all start.

``SQLEscalationStore(create_tables=True)`` (the default) checks which tables exist and creates
the missing ones. Two replicas starting at the same moment both see the tables missing; the
second CREATE TABLE then fails. The test forces that interleaving: each store's engine waits at
its first CREATE TABLE until the other has reached its own (or 5 s have passed, so a store that
serialises the creation, e.g. under a lock, is not held up for good).
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from airflow_escalation.stores.sql import SQLEscalationStore

from durability_support import drop_sql_tables, sql_prefix

BARRIER_TIMEOUT = 5


@pytest.mark.parametrize(
    "url_fixture",
    [
        pytest.param("postgres_url", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("mysql_url", marks=pytest.mark.mysql, id="mysql"),
    ],
)
def test_replicas_opening_a_fresh_database_together_all_start(url_fixture, request):
    url = request.getfixturevalue(url_fixture)
    prefix = sql_prefix()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    engines = []

    def replica() -> None:
        kwargs = {"isolation_level": "READ COMMITTED"} if url.startswith("mysql") else {}
        engine = sa.create_engine(url, poolclass=NullPool, **kwargs)
        engines.append(engine)
        waited = False

        @sa.event.listens_for(engine, "before_cursor_execute")
        def meet_at_first_create(conn, cursor, statement, parameters, context, executemany):
            nonlocal waited
            if not waited and statement.lstrip().upper().startswith("CREATE TABLE"):
                waited = True
                try:
                    barrier.wait(BARRIER_TIMEOUT)
                except threading.BrokenBarrierError:
                    pass

        try:
            SQLEscalationStore(engine=engine, table_prefix=prefix)
        except BaseException as error:
            errors.append(error)

    try:
        threads = [threading.Thread(target=replica) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for engine in engines:
            engine.dispose()
        drop_sql_tables(url, prefix)
    for error in errors:
        raise error
