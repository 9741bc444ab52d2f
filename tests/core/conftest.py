"""Fixtures for the core suite: a fake clock, a recording handler and an engine factory."""

from __future__ import annotations

import pytest

from airflow_escalation import EscalationEngine, EscalationEngineConfig, SchedulerConfig
from airflow_escalation.testing import FakeClock, RecordingHandler

from core_support import T0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def recorder(clock: FakeClock) -> RecordingHandler:
    return RecordingHandler(clock)


@pytest.fixture
async def make_engine(clock, recorder):
    """``await make_engine(*policies, handler=..., start=True, **EscalationEngineConfig fields)``.

    Defaults: the fake clock, the recording handler, the in-memory store and scheduler.
    Every engine made is stopped at teardown.
    """
    engines: list[EscalationEngine] = []

    async def factory(*policies, handler=None, start=True, **config):
        config.setdefault("clock", clock)
        config.setdefault("default_notification_handler", handler if handler is not None else recorder)
        sched = config.get("scheduler_config")
        if isinstance(sched, dict):
            config["scheduler_config"] = SchedulerConfig(**{"scheduler_type": "memory", **sched})
        engine = EscalationEngine(EscalationEngineConfig(**config))
        for policy in policies:
            engine.register_policy(policy)
        engines.append(engine)
        if start:
            await engine.start()
        return engine

    yield factory
    for engine in engines:
        await engine.stop(timeout=5)
