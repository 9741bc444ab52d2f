"""What the engine reports to its metrics sink (runtime/metrics.py), on the fake clock: each event
once, per policy, with exact durations; a failing sink never fails the engine; metrics_enabled
off reports nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_escalation import EscalationLevel, EscalationPolicy, EscalationTarget
from airflow_escalation.runtime.metrics import EngineMetrics


class Recorded(EngineMetrics):
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def escalation(self, event: str, policy_name: str) -> None:
        self.seen.append(("escalation", event, policy_name))

    def time_to(self, what: str, policy_name: str, seconds: float) -> None:
        self.seen.append(("time_to", what, policy_name, seconds))

    def delivery(self, outcome: str, delivery: Any) -> None:
        self.seen.append(("delivery", outcome, delivery.target.key))

    def lateness(self, seconds: float) -> None:
        self.seen.append(("lateness", seconds))


def two_levels(name: str = "p", **kw: Any) -> EscalationPolicy:
    return EscalationPolicy(
        name=name,
        levels=[
            EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.user("lead")]),
            EscalationLevel(level=2, delay_minutes=10, targets=[EscalationTarget.user("boss")]),
        ],
        **kw,
    )


async def test_an_escalations_life_in_metrics(make_engine, clock):
    engine = await make_engine(two_levels(cooldown_minutes=60))
    sink = Recorded()
    engine.set_metrics(sink)
    record_id = (await engine.trigger("inc", {}, "p")).record.id
    assert (await engine.trigger("inc", {}, "p")).success  # joins the open one
    await engine.advance(timedelta(minutes=10, seconds=2))  # level 2, two seconds late at most
    assert (await engine.acknowledge(record_id, "alice")).success
    await engine.advance(timedelta(minutes=5))
    assert (await engine.resolve(record_id, "alice")).success
    assert (await engine.trigger("inc", {}, "p")).code == "suppressed"
    await engine.drain()

    events = [s for s in sink.seen if s[0] in ("escalation", "time_to")]
    assert events == [
        ("escalation", "triggered", "p"),
        ("escalation", "joined", "p"),
        ("escalation", "escalated", "p"),
        ("escalation", "acknowledged", "p"),
        ("time_to", "acknowledge", "p", 602.0),
        ("escalation", "resolved", "p"),
        ("time_to", "resolve", "p", 902.0),
        ("escalation", "suppressed", "p"),
    ]
    assert [s for s in sink.seen if s[0] == "delivery"] == [
        ("delivery", "sent", "user:lead"),
        ("delivery", "sent", "user:boss"),
    ]
    lateness = [s[1] for s in sink.seen if s[0] == "lateness"]
    assert lateness and all(0 <= late <= 2 for late in lateness)


async def test_a_failing_sink_never_fails_the_engine(make_engine, caplog):
    class Broken(EngineMetrics):
        def escalation(self, event: str, policy_name: str) -> None:
            raise RuntimeError("metrics backend down")

    engine = await make_engine(two_levels())
    engine.set_metrics(Broken())
    result = await engine.trigger("inc", {}, "p")
    assert result.success and (await engine.resolve(result.record.id, "alice")).success
    assert any("escalation metrics failed" in r.getMessage() for r in caplog.records)


async def test_metrics_enabled_false_reports_nothing(make_engine):
    engine = await make_engine(two_levels(), metrics_enabled=False)
    sink = Recorded()
    engine.set_metrics(sink)
    record_id = (await engine.trigger("inc", {}, "p")).record.id
    await engine.advance(timedelta(minutes=11))
    assert (await engine.resolve(record_id, "alice")).success
    assert sink.seen == [] and engine.metrics is not sink
