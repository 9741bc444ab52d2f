"""Property tests: random policies and random action sequences keep the engine's invariants (18)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_escalation import (
    DeliveryState,
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationPolicy,
    EscalationState,
    EscalationTarget,
)
from airflow_escalation.testing import FakeClock, RecordingHandler
from core_support import T0

STATES = {s.value for s in EscalationState}
TERMINAL = {s.value for s in EscalationState if s.is_terminal}
INCIDENTS = ("inc-0", "inc-1")

levels_st = st.lists(
    st.fixed_dictionaries(
        {
            "delay_minutes": st.sampled_from([0, 0, 0.5, 1, 5, 15, 30]),
            "repeat_count": st.integers(0, 3),
            "repeat_interval_minutes": st.sampled_from([1, 2.5, 5]),
            "require_ack": st.sampled_from([True, True, True, False]),
            "auto_resolve_minutes": st.sampled_from([0, 0, 0, 7, 20, 90]),
            "targets": st.integers(1, 2),
        }
    ),
    min_size=1,
    max_size=4,
)

policy_st = st.fixed_dictionaries(
    {
        "levels": levels_st,
        "max_escalations": st.sampled_from([0, 0, 1, 2, 3]),
        "cooldown_minutes": st.sampled_from([0, 0, 10]),
        "delay_basis": st.sampled_from(["previous_level", "trigger"]),
        "until_resolved": st.sampled_from([False, False, False, True]),
        "business_hours_only": st.sampled_from([False, False, True]),
        "business_hours_mode": st.sampled_from(["wait", "skip", "notify"]),
    }
)

incident_st = st.sampled_from(INCIDENTS)
action_st = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0, 0.5, 1, 2.5, 5, 10, 30, 120, 600])),
    st.tuples(st.sampled_from(["ack", "resolve", "cancel", "escalate", "escalate_force", "trigger"]), incident_st),
)


def build_policy(spec: dict) -> EscalationPolicy:
    levels = [
        EscalationLevel(
            level=n,
            delay_minutes=lv["delay_minutes"],
            targets=[EscalationTarget.user(f"l{n}-{k}") for k in range(lv["targets"])],
            repeat_count=lv["repeat_count"],
            repeat_interval_minutes=lv["repeat_interval_minutes"],
            require_ack=lv["require_ack"],
            auto_resolve_minutes=lv["auto_resolve_minutes"],
        )
        for n, lv in enumerate(spec["levels"], start=1)
    ]
    triggers = ["unacknowledged"] + (["unresolved"] if spec["until_resolved"] else [])
    return EscalationPolicy(
        name="prop",
        levels=levels,
        triggers=triggers,
        max_escalations=spec["max_escalations"],
        cooldown_minutes=spec["cooldown_minutes"],
        delay_basis=spec["delay_basis"],
        business_hours_only=spec["business_hours_only"],
        business_hours_mode=spec["business_hours_mode"],
        timezone="America/New_York",
    )


class Checker:
    def __init__(self, engine: EscalationEngine, recorder: RecordingHandler, policy: EscalationPolicy) -> None:
        self.engine = engine
        self.recorder = recorder
        self.policy = policy
        self.terminal: dict[str, tuple] = {}  # record id -> (state, version, history length, sent)
        self.acked: dict[str, int] = {}  # record id -> notifications sent when it was acknowledged
        self.ids: set[str] = set()

    def sent_per_record(self) -> Counter:
        return Counter(n.record_id for n in self.recorder.sent)

    def records(self):
        return [r for inc in INCIDENTS for r in self.engine.get_records_for_incident(inc)]

    def latest(self, incident: str):
        found = self.engine.get_records_for_incident(incident)
        return found[-1] if found else None

    def note_ack(self, record_id: str) -> None:
        if not self.policy.continues_after_ack:
            self.acked[record_id] = self.sent_per_record()[record_id]

    def check(self, now: datetime, after_advance: bool = False) -> None:
        sent = self.sent_per_record()
        records = self.records()
        assert {r.id for r in records} >= self.ids, "a record disappeared"
        self.ids |= {r.id for r in records}
        assert set(sent) <= self.ids, "a notification for an unknown record"
        for record in records:
            assert record.state in STATES
            # history: valid states, ordered timestamps, never in the future, nothing after a terminal event
            times = [datetime.fromisoformat(h["at"]) for h in record.history]
            assert times == sorted(times), record.history
            assert all(t <= now for t in times)
            assert all(h["state"] in STATES for h in record.history)
            terminal_at = [i for i, h in enumerate(record.history) if h["state"] in TERMINAL]
            if terminal_at:
                assert terminal_at[0] == len(record.history) - 1, record.history
                assert record.state == record.history[-1]["state"]
            # counters agree with the outbox
            deliveries = self.engine.get_deliveries(record.id)
            sent_deliveries = sum(d.state is DeliveryState.SENT for d in deliveries)
            assert record.notification_count == sent_deliveries == sent[record.id]
            assert not any(
                d.state in (DeliveryState.PENDING, DeliveryState.SENDING) and d.next_attempt_at is None
                for d in deliveries
            ), "a delivery was left behind"
            # bounds
            assert 1 <= record.current_level <= self.policy.max_level
            if self.policy.max_escalations:
                assert record.escalation_count <= self.policy.max_escalations
            if record.is_open:
                # a manual action may leave a step due now (the scheduler is woken for it); after
                # advance() nothing due may be left behind
                if after_advance:
                    assert record.next_escalation_at is None or record.next_escalation_at > now, "left overdue"
            else:
                assert record.next_escalation_at is None and record.closed_at is not None
            # terminal states are final: no change, no notification
            snapshot = (record.state, record.version, len(record.history), sent[record.id])
            if record.id in self.terminal:
                assert snapshot == self.terminal[record.id], f"terminal record changed: {record.history}"
            elif record.state in TERMINAL:
                self.terminal[record.id] = snapshot
            # nothing is sent after an acknowledgement (until a forced escalation re-activates)
            if record.id in self.acked:
                assert sent[record.id] == self.acked[record.id], f"notified after ack: {record.history}"
        stats = self.engine.get_stats()
        assert 0 <= stats.acknowledgment_rate <= 1 and 0 <= stats.resolution_rate <= 1
        assert stats.total_escalations == len(records)
        assert stats.notifications_sent == len(self.recorder.sent)


async def run_scenario(policy: EscalationPolicy, actions: list[tuple]) -> None:
    clock = FakeClock(T0)
    recorder = RecordingHandler(clock)
    engine = EscalationEngine(EscalationEngineConfig(clock=clock, default_notification_handler=recorder))
    engine.register_policy(policy)
    await engine.start()
    checker = Checker(engine, recorder, policy)
    try:
        first = await engine.trigger(INCIDENTS[0], {}, "prop")
        assert first.success
        await engine.drain()
        checker.check(clock.now())
        for kind, arg in actions:
            if kind == "advance":
                await engine.advance(timedelta(minutes=arg))
            elif kind == "trigger":
                before = checker.latest(arg)
                result = await engine.trigger(arg, {}, "prop")
                if before is not None and before.is_open:
                    assert result.success and result.action == "trigger_existing" and result.record.id == before.id
                    assert result.targets_notified == []
                elif result.success:
                    assert result.action == "trigger" and (before is None or result.record.id != before.id)
                else:
                    assert result.code == "suppressed" and policy.cooldown_minutes > 0
            else:
                record = checker.latest(arg)
                if record is None:
                    continue
                if kind == "ack":
                    result = await engine.acknowledge(record.id, "prop")
                elif kind == "resolve":
                    result = await engine.resolve(record.id, "prop")
                elif kind == "cancel":
                    result = await engine.cancel(record.id, "prop")
                else:
                    result = await engine.escalate(record.id, force=kind == "escalate_force")
                if record.state in TERMINAL:
                    assert not result.success and result.code == "conflict"
                if kind == "ack" and record.state == "acknowledged":
                    assert not result.success and result.code == "conflict"
                if kind in ("resolve", "cancel") and record.state not in TERMINAL:
                    assert result.success and result.record.state == ("resolved" if kind == "resolve" else "cancelled")
                if result.success and kind == "ack":
                    checker.note_ack(record.id)
                if result.success and kind.startswith("escalate") and result.record.state != "acknowledged":
                    checker.acked.pop(record.id, None)
            await engine.drain()
            checker.check(clock.now(), after_advance=kind == "advance")
        await engine.advance(timedelta(hours=12))
        checker.check(clock.now(), after_advance=True)
    finally:
        await engine.stop()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=policy_st, actions=st.lists(action_st, max_size=14))
def test_random_policies_and_actions_keep_the_invariants(spec, actions):
    asyncio.run(run_scenario(build_policy(spec), actions))


@settings(max_examples=60, deadline=None)
@given(spec=policy_st)
def test_policies_round_trip_through_dicts(spec):
    policy = build_policy(spec)
    again = EscalationPolicy.from_dict(policy.to_dict())
    assert again.to_dict() == policy.to_dict() and again.fingerprint == policy.fingerprint
