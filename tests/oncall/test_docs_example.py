"""docs/oncall.md's complete example, minute by minute, exactly as the page tells it: the YAML
is read from the page itself, driven through ``EscalationPolicyManager`` on the fake clock."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow_escalation import EscalationPolicyManager
from airflow_escalation.testing import FakeClock, RecordingHandler

DOC = Path(__file__).resolve().parents[2] / "docs" / "oncall.md"
UTC = timezone.utc


def example_yaml() -> str:
    return re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL).group(1)


def utc(hour: int, minute: int = 0, day: int = 6) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


async def test_the_worked_example():
    clock = FakeClock(utc(15, 30))  # Friday 2026-03-06, 16:30 in Berlin
    recorder = RecordingHandler(clock)
    manager = EscalationPolicyManager.from_yaml(example_yaml(), clock=clock)
    manager.set_notification_handler(recorder)
    await manager.start()
    engine = manager.engine
    oncall = engine.oncall
    try:

        def sent_at(hour: int, minute: int) -> list[str]:
            return sorted(n.target for n in recorder.sent if n.at == utc(hour, minute))

        # 15:30 a task of etl fails: level 1 to oncall-primary, carol has business hours
        failure = {"dag_id": "etl", "task_id": "load", "severity": "high"}
        first = await manager.trigger("etl.load", failure)
        await engine.drain()
        assert sent_at(15, 30) == ["webhook:/pager/carol"]
        # 15:45 bob covers 16:15-17:15
        await engine.advance(timedelta(minutes=15))
        override = oncall.create_override("oncall-primary", "bob", utc(16, 15), utc(17, 15), created_by="lead")
        # 16:00 repeat 1: business hours are over (17:00 Berlin): the weekly layer, alice's week
        await engine.advance(timedelta(minutes=15))
        assert sent_at(16, 0) == ["channel:U024BE7LH", "email:alice@example.com"]
        # 16:30 repeat 2: bob's override
        await engine.advance(timedelta(minutes=30))
        assert sent_at(16, 30) == ["email:bob@example.com"]
        # 16:40 a silence on etl for 30 minutes
        await engine.advance(timedelta(minutes=10))
        silence = oncall.create_silence({"dag_id": "etl"}, duration=timedelta(minutes=30), comment="hotfix deploy")
        # 16:50 another failure of etl: suppressed, recorded, nothing sent
        await engine.advance(timedelta(minutes=10))
        second = await manager.trigger("etl.report", {"dag_id": "etl", "task_id": "report"})
        assert second.code == "suppressed" and second.record.state == "cancelled"
        assert second.record.metadata["suppressed_by"]["id"] == silence.id
        # 17:00 repeat 3 is muted
        await engine.advance(timedelta(minutes=10))
        assert sent_at(17, 0) == []
        muted = [e for e in engine.get_record(first.record.id).history if e["event"] == "notification_muted"]
        assert [(e["at"], e["details"]["round"], e["details"]["id"]) for e in muted] == [
            (utc(17).isoformat(), 3, silence.id)
        ]
        # 17:10 the silence ends; 17:30 level 2: dana
        await engine.advance(timedelta(minutes=30))
        assert sent_at(17, 30) == ["email:dana@example.com"]
        assert len(recorder.sent) == 5  # nothing else was sent
        labels = [r["label"] for r in oncall.resolutions(first.record.id)]
        assert labels == [
            "schedule:oncall-primary → carol",
            "schedule:oncall-primary → alice",
            "schedule:oncall-primary → bob",
            "user:dana → dana",
        ]
        assert override.user == "bob"
        # 23:00 Berlin (22:00 UTC) billing_daily is in its maintenance window until 01:00
        clock.set(utc(21, 59) + timedelta(seconds=59))
        assert (await manager.trigger("billing.a", {"dag_id": "billing_daily"})).success
        clock.set(utc(22))
        nightly = await manager.trigger("billing.b", {"dag_id": "billing_daily"})
        assert nightly.code == "suppressed"
        assert nightly.record.metadata["suppressed_by"] == {
            "kind": "maintenance_window",
            "id": "billing-nightly",
            "comment": "nightly ledger rebuild",
            "ends_at": utc(0, 0, day=7).isoformat(),
        }
        clock.set(utc(0, 0, day=7))
        assert (await manager.trigger("billing.c", {"dag_id": "billing_daily"})).success
    finally:
        await manager.stop()
