"""Fixtures of the on-call suite: a fake clock, a recording handler, and engines with an OnCall."""

from __future__ import annotations


import pytest

from airflow_escalation import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import parse_yaml
from airflow_escalation.oncall.config import OnCallConfig
from airflow_escalation.oncall.runtime import OnCall
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.testing import FakeClock, RecordingHandler

from oncall_support import T0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def recorder(clock: FakeClock) -> RecordingHandler:
    return RecordingHandler(clock)


@pytest.fixture
async def make_engine(clock, recorder):
    """``await make_engine(yaml_text, *policies, store=None)``: an engine on the fake clock with
    the on-call sections of ``yaml_text``; every engine made is stopped at teardown."""
    engines: list[EscalationEngine] = []

    async def factory(sections: str, *policies, store=None, handler=None, cache_seconds=None):
        store = store or InMemoryEscalationStore()
        engine = EscalationEngine(
            EscalationEngineConfig(clock=clock, store=store, default_notification_handler=handler or recorder)
        )
        for policy in policies:
            engine.register_policy(policy)
        config = OnCallConfig.from_sections(parse_yaml(sections) or {})
        engine.set_oncall(OnCall(config, store, clock, cache_seconds=cache_seconds))
        engines.append(engine)
        await engine.start()
        return engine

    yield factory
    for engine in engines:
        await engine.stop(timeout=5)
