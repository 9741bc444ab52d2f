from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_escalation import (
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
)
from airflow_escalation.testing import FakeClock, RecordingHandler

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)  # a Monday


def ladder(name: str = "critical_alerts", **overrides) -> EscalationPolicy:
    """L1 at 0 (two targets, one repeat after 5 min), L2 at +15, L3 at +30 after L2 (= 45)."""
    fields = dict(
        name=name,
        levels=[
            EscalationLevel(
                1,
                0,
                [EscalationTarget.user("lead"), EscalationTarget.channel("#alerts")],
                repeat_count=1,
                repeat_interval_minutes=5,
            ),
            EscalationLevel(2, 15, [EscalationTarget.user("manager"), EscalationTarget.schedule("oncall")]),
            EscalationLevel(3, 30, [EscalationTarget.user("director")]),
        ],
    )
    fields.update(overrides)
    return EscalationPolicy(**fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sent(clock) -> RecordingHandler:
    return RecordingHandler(clock)


@pytest.fixture
async def engine(clock, sent):
    engine = EscalationEngine(EscalationEngineConfig(clock=clock, default_notification_handler=sent))
    engine.register_policy(ladder())
    engine.register_policy(ladder("other_alerts"))
    await engine.start()
    yield engine
    await engine.stop()
