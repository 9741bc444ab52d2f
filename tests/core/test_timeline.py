"""core/timeline.py: a record's history as the steps a person reads, deliveries nested; and the
next step in words (the planner's answer).

Histories come from the engine itself on the fake clock (the spec's policy), so the grouping is
checked against what the engine really writes; a few shapes the engine writes rarely (a level
paged twice, a delivery no step claims) are built by hand.
"""

from __future__ import annotations

from datetime import timedelta

from airflow_escalation.core import planner
from airflow_escalation.core.timeline import next_step, steps

from core_support import CRIT, SEED, seed_policy


def _dicts(engine, record_id):
    record = engine.store.get(record_id)
    return record, record.to_dict()["history"], [d.to_dict() for d in engine.store.get_deliveries(record_id)]


async def test_the_seed_climb_is_one_entry_per_step(make_engine, clock):
    engine = await make_engine(seed_policy())
    rid = (await engine.trigger("orders", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=20))
    await engine.acknowledge(rid, "alice", "on it")
    record, history, deliveries = _dicts(engine, rid)
    assert len(history) == 11  # the engine's bookkeeping: what the timeline folds

    found = steps(history, deliveries)

    assert [s.title for s in found] == [
        "Triggered: level 1 paged",
        "Reminder 1 to level 1",
        "Reminder 2 to level 1",
        "Not acknowledged: escalated to level 2",
        "Acknowledged by alice",
    ]
    assert [s.kind for s in found] == ["triggered", "reminder", "reminder", "escalated", "acknowledged"]
    l1 = ["user:team-lead", "channel:#alerts"]
    assert [s.targets for s in found] == [l1, l1, l1, ["user:eng-manager", "schedule:oncall-primary"], []]
    # every delivery under the step that sent it, each once
    nested = [[(d["level"], d["round"], d["target"]["identifier"]) for d in s.deliveries] for s in found]
    assert nested == [
        [(1, 0, "team-lead"), (1, 0, "#alerts")],
        [(1, 1, "team-lead"), (1, 1, "#alerts")],
        [(1, 2, "team-lead"), (1, 2, "#alerts")],
        [(2, 0, "eng-manager"), (2, 0, "oncall-primary")],
        [],
    ]
    assert sum(len(s.deliveries) for s in found) == len(deliveries) == 8
    assert found[-1].detail == "Note: on it" and found[-1].state == "acknowledged"
    # the engine's transitions stay on the step, for the toggle
    assert found[0].transitions == ["triggered: pending", "start: pending \u2192 active", "notified: active"]
    assert found[3].transitions == [
        "escalate: active \u2192 escalating",
        "escalate_success: escalating \u2192 active",
        "notified: active",
    ]
    assert sum(len(s.events) for s in found) == len(history)
    assert [s.at for s in found] == [
        history[0]["at"],
        (clock.now() - timedelta(minutes=15)).isoformat(),
        (clock.now() - timedelta(minutes=10)).isoformat(),
        (clock.now() - timedelta(minutes=5)).isoformat(),
        clock.now().isoformat(),
    ]


async def test_a_person_escalating_and_closing(make_engine):
    engine = await make_engine(seed_policy())
    rid = (await engine.trigger("orders", CRIT, SEED)).record.id
    await engine.escalate(rid, escalated_by="bob")
    await engine.cancel(rid, "carol", "duplicate")
    _, history, deliveries = _dicts(engine, rid)

    found = steps(history, deliveries)

    assert [s.title for s in found] == [
        "Triggered: level 1 paged",
        "Escalated to level 2 by bob",
        "Cancelled by carol",
    ]
    assert found[1].actor == "bob" and found[1].level == 2 and len(found[1].deliveries) == 2
    assert found[2].detail == "Reason: duplicate" and found[2].state == "cancelled"


def test_a_level_paged_twice_gets_each_times_deliveries():
    def ev(event, level, state="active", **details):
        return {"event": event, "at": "2026-01-05T09:00:00+00:00", "actor": "system", "state": state, "level": level}

    def notified(level, targets):
        return {**ev("notified", level), "details": {"round": 0, "targets": targets}}

    def delivery(level, identifier, state):
        return {"level": level, "round": 0, "target": {"type": "user", "identifier": identifier}, "state": state}

    history = [
        ev("triggered", 1, "pending"),
        ev("start", 1),
        notified(1, ["user:a"]),
        {**ev("escalate", 1, "escalating"), "actor": "bob", "details": {"to_level": 1}},
        {**ev("escalate_success", 1), "actor": "bob"},
        notified(1, ["user:a"]),
    ]
    deliveries = [delivery(1, "a", "failed"), delivery(1, "a", "sent"), delivery(2, "stray", "sent")]

    found = steps(history, deliveries)

    assert [s.title for s in found] == ["Triggered: level 1 paged", "Escalated to level 1 by bob", "Other deliveries"]
    assert [[d["state"] for d in s.deliveries] for s in found] == [["failed"], ["sent"], ["sent"]]
    assert found[2].kind == "deliveries" and found[2].deliveries[0]["target"]["identifier"] == "stray"


def test_unknown_and_edge_events_stay_visible():
    history = [
        {"event": "triggered", "at": "t0", "actor": "x", "state": "pending", "level": 1},
        {"event": "notified", "at": "t1", "actor": "system", "state": "active", "level": 1},  # no start first
        {"event": "something_new", "at": "t2", "actor": "eve", "state": "active", "level": 1},
        {"event": "max_level_reached", "at": "t3", "actor": "system", "state": "timed_out", "level": 3},
    ]
    found = steps(history)
    assert [s.title for s in found] == [
        "Triggered by x: level 1 paged",
        "something_new by eve",
        "Timed out: no more escalations allowed (max_escalations)",
    ]
    assert steps([]) == []


async def test_next_step_names_the_level_and_whom_it_tells(make_engine):
    policy = seed_policy()
    engine = await make_engine(policy)
    rid = (await engine.trigger("orders", CRIT, SEED)).record.id

    record = engine.store.get(rid)
    step = next_step(record, policy)
    assert step is not None and step.action == planner.REPEAT
    assert step.due_at == record.next_escalation_at  # the engine's plan, not a second computation
    assert step.text == "reminder 1 to level 1 \u2192 Team Lead, Alerts Channel"

    await engine.advance(timedelta(minutes=10))
    step = next_step(engine.store.get(rid), policy)
    assert step is not None and step.action == planner.ESCALATE and step.level == 2
    assert step.targets == ["Engineering Manager", "Primary On-call"]
    assert step.text == "level 2 \u2192 Engineering Manager, Primary On-call"
    assert step.to_dict()["due_at"] == engine.store.get(rid).next_escalation_at.isoformat()

    await engine.acknowledge(rid, "alice")
    assert next_step(engine.store.get(rid), policy) is None  # nothing planned: nothing promised


def test_paged_level_per_action():
    from airflow_escalation.core.models import EscalationRecord

    policy = seed_policy()
    record = EscalationRecord(id="r", incident_id="i", policy_name=SEED, current_level=2)
    assert planner.paged_level(record, policy, planner.START).level == 1
    assert planner.paged_level(record, policy, planner.REPEAT).level == 2
    assert planner.paged_level(record, policy, planner.ESCALATE).level == 3
    assert planner.paged_level(record, policy, planner.AUTO_RESOLVE) is None


async def test_next_step_at_the_top_level_is_the_timeout(make_engine):
    policy = seed_policy(timeout_minutes=30)
    engine = await make_engine(policy)
    rid = (await engine.trigger("orders", CRIT, SEED)).record.id
    await engine.advance(timedelta(minutes=46))  # level 3 paged at 45

    step = next_step(engine.store.get(rid), policy)
    assert step is not None and step.action == planner.TIME_OUT and step.level is None
    assert step.text == "times out at level 3" and step.targets == []
    await engine.advance(timedelta(minutes=30))
    found = steps(engine.store.get(rid).to_dict()["history"])
    assert found[-1].title == "Timed out: nobody acknowledged at the top level"


def test_silences_and_maintenance_windows_are_told():
    def ev(event, at, **details):
        return {"event": event, "at": at, "actor": "system", "state": "active", "level": 1, "details": details}

    muted_by = {"kind": "silence", "id": "s-1", "comment": "deploy", "ends_at": "2026-01-05T10:00:00.123456+00:00"}
    history = [
        {**ev("triggered", "t0"), "state": "pending"},
        ev("start", "t0"),
        ev("notified", "t0", round=0, targets=["user:a"]),
        ev("notify", "t1", repeat=1),
        ev("notification_muted", "t1", round=1, **muted_by),
        {**ev("suppressed", "t2", kind="maintenance_window", id="mw-7"), "actor": "bob"},
    ]
    found = steps(history)
    assert [s.title for s in found] == [
        "Triggered: level 1 paged",
        "Reminder 1 to level 1",
        "Suppressed by maintenance window mw-7",
    ]
    assert found[1].detail == "Muted by silence s-1 \u00b7 Comment: deploy \u00b7 until 2026-01-05 10:00:00 UTC"
    assert found[1].targets == [] and len(found[1].events) == 2
