"""Fixtures of the durability tests: servers, a shared storage per backend, an engine factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from airflow_escalation import EscalationEngine, EscalationEngineConfig, SchedulerConfig
from airflow_escalation.testing import FakeClock, RecordingHandler

from durability_support import BACKENDS, T0, SharedStorage, ladder, servers

# the servers of tests/stores/conftest.py: same URLs, same skip-or-fail-under-CI rule
postgres_url = servers.postgres_url
mysql_url = servers.mysql_url
redis_url = servers.redis_url

_URL_FIXTURE = {"postgresql": "postgres_url", "mysql": "mysql_url", "redis": "redis_url"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedStorage]:
    """A fresh storage of the backend that store objects can be opened on (see SharedStorage)."""
    backend = request.param
    url = request.getfixturevalue(_URL_FIXTURE[backend]) if backend in _URL_FIXTURE else None
    shared = SharedStorage(backend, url=url, tmp_path=tmp_path)
    yield shared
    shared.destroy()


@pytest.fixture
async def make_engine(storage: SharedStorage, clock: FakeClock) -> AsyncIterator[Any]:
    """``await make_engine(store, handler, start=True, send_before_return=False, **SchedulerConfig fields)``.

    An engine on ``store`` with the fake clock, the in-memory (passive) scheduler and the ladder
    policy registered. Every engine made is stopped before the storage is destroyed.
    """
    engines: list[EscalationEngine] = []

    async def factory(
        store, handler: RecordingHandler, *, start: bool = True, send_before_return: bool = False, **sched: Any
    ) -> EscalationEngine:
        engine = EscalationEngine(
            EscalationEngineConfig(
                store=store,
                clock=clock,
                default_notification_handler=handler,
                scheduler_config=SchedulerConfig(**{"scheduler_type": "memory", **sched}),
                # these tests race engines over the outbox: a trigger leaves its deliveries there
                send_before_return=send_before_return,
            )
        )
        engine.register_policy(ladder())
        engines.append(engine)
        if start:
            await engine.start()
        return engine

    yield factory
    for engine in engines:
        await engine.stop(timeout=5)
