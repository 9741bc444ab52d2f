from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from airflow_escalation import (
    DeliveryState,
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
)
from airflow_escalation.routing import (
    EscalationAction,
    LevelActionHandler,
    anchor_target,
    setup_escalation_with_existing_actions,
)

from .conftest import START, ladder


def minutes(clock) -> float:
    return (clock.now() - START).total_seconds() / 60


class SyncSlack:
    """Stands in for a blocking action: a plain sync callable (runs in a worker thread)."""

    def __init__(self, clock):
        self.clock, self.calls, self.threads = clock, [], set()

    def __call__(self, context):
        self.threads.add(threading.get_ident())
        self.calls.append((minutes(self.clock), context["level"], context["incident_id"]))
        return True


class DuckNotifier:
    """Duck-typed Airflow BaseNotifier: only notify(context)."""

    def __init__(self, clock):
        self.clock, self.calls = clock, []

    def notify(self, context):
        self.calls.append((minutes(self.clock), context["level"]))


@pytest.fixture
def actions(clock):
    pager_calls, contexts = [], []

    async def pagerduty(context):  # an async callable
        pager_calls.append((minutes(clock), context["level"]))
        contexts.append(context)

    return SyncSlack(clock), pagerduty, pager_calls, DuckNotifier(clock), contexts


async def test_each_level_runs_its_actions_once_per_round(engine, clock, sent, actions):
    slack, pagerduty, pager_calls, notifier, contexts = actions
    handler = setup_escalation_with_existing_actions(
        engine=engine,
        policy_name="critical_alerts",
        level_actions={1: [slack, notifier], 2: [pagerduty, notifier]},  # level 3 keeps the old handler
    )
    assert isinstance(handler, LevelActionHandler) and handler.fallback is sent

    main = await engine.trigger("inc-1", {"severity": "critical", "checkpoint_name": "orders"}, "critical_alerts")
    other = await engine.trigger("inc-2", {"severity": "high"}, "other_alerts")
    assert main.success and other.success
    await engine.advance(timedelta(minutes=60))

    # L1 fires at 0 and repeats at 5 (two targets, yet one run per round); L2 fires at 15
    assert slack.calls == [(0, 1, "inc-1"), (5, 1, "inc-1")]
    assert slack.threads and threading.get_ident() not in slack.threads  # sync work left the loop
    assert notifier.calls == [(0, 1), (5, 1), (15, 2)]
    assert pager_calls == [(15, 2)]
    # level 3 has no actions: its target went to the original handler at 15 + 30
    assert sent.timeline("inc-1") == [(45, "user:director")]
    # the other policy still reaches the original handler, every target of every round
    assert sent.timeline("inc-2") == [
        (0, "channel:#alerts"),
        (0, "user:lead"),
        (5, "channel:#alerts"),
        (5, "user:lead"),
        (15, "schedule:oncall"),
        (15, "user:manager"),
        (45, "user:director"),
    ]
    # every delivery of the main incident counts as sent, including the anchor-less targets
    deliveries = engine.get_deliveries(main.record.id)
    assert len(deliveries) == 7 and {d.state for d in deliveries} == {DeliveryState.SENT}

    context = contexts[0]
    assert context["record"].id == main.record.id and context["record_id"] == main.record.id
    assert context["incident_id"] == "inc-1" and context["policy_name"] == "critical_alerts"
    assert context["level"] == 2 and context["escalation_level"].level == 2
    assert [t.key for t in context["targets"]] == ["user:manager", "schedule:oncall"]
    assert context["severity"] == "critical" and context["checkpoint_name"] == "orders"  # merged in


async def test_failed_actions_are_retried_without_rerunning_the_ones_that_succeeded(engine, clock, sent):
    ok_calls, flaky_calls = [], []

    async def ok(context):
        ok_calls.append(minutes(clock))

    def flaky(context):
        flaky_calls.append(minutes(clock))
        if len(flaky_calls) == 1:
            raise ConnectionError("webhook down")
        return True

    setup_escalation_with_existing_actions(engine, "critical_alerts", {1: [ok, flaky]})
    result = await engine.trigger("inc-1", {"severity": "critical"}, "critical_alerts")
    await engine.advance(timedelta(minutes=10))
    # round 0 at 0: ok succeeded, flaky failed -> retried 30 s later; round 1 (repeat) at 5
    assert flaky_calls == [0, 0.5, 5]
    assert ok_calls == [0, 5]
    anchor = [d for d in engine.get_deliveries(result.record.id) if d.target.key == "user:lead"]
    assert [(d.round, d.attempts, d.state) for d in anchor] == [(0, 2, DeliveryState.SENT), (1, 1, DeliveryState.SENT)]


async def test_a_false_result_fails_the_round(engine, clock):
    calls = []

    def refuses(context):
        calls.append(minutes(clock))
        return False

    handler = setup_escalation_with_existing_actions(engine, "critical_alerts", {3: refuses})
    level = engine.get_policy("critical_alerts").get_level(3)
    record = (await engine.trigger("inc-1", {}, "critical_alerts")).record
    with pytest.raises(
        Exception, match=r"policy .critical_alerts. level 3: 1 of 1 action\(s\) failed: refuses: reported failure"
    ):
        await handler(record, level, level.targets)


async def test_setups_chain_and_a_level_action_can_escalate_elsewhere(engine, clock, sent):
    l1 = []
    setup_escalation_with_existing_actions(
        engine, "critical_alerts", {2: [EscalationAction(engine, "other_alerts", "from-{incident_id}")]}
    )
    setup_escalation_with_existing_actions(engine, "other_alerts", {1: lambda ctx: l1.append(ctx["incident_id"])})
    await engine.trigger("inc-1", {}, "critical_alerts")
    await engine.advance(timedelta(minutes=20))
    # critical L1 -> original handler; critical L2 -> starts "other_alerts" for from-inc-1, whose L1 runs the lambda
    assert sent.timeline("inc-1") == [
        (0, "channel:#alerts"),
        (0, "user:lead"),
        (5, "channel:#alerts"),
        (5, "user:lead"),
    ]
    assert l1 == ["from-inc-1", "from-inc-1"]  # fired at 15, repeated at 20
    assert [r.policy_name for r in engine.get_records_for_incident("from-inc-1")] == ["other_alerts"]


async def test_without_a_previous_handler_other_levels_fail_loudly(clock):
    engine = EscalationEngine(EscalationEngineConfig(clock=clock))
    engine.register_policy(ladder())
    handler = setup_escalation_with_existing_actions(engine, "critical_alerts", {1: lambda ctx: None})
    assert handler.fallback is None
    level = engine.get_policy("critical_alerts").get_level(2)
    record = (await engine.trigger("inc-1", {}, "critical_alerts")).record
    with pytest.raises(LookupError, match="no notification handler delivers to user:manager"):
        await handler(record, level, level.targets[:1])
    await engine.drain()


def test_anchor_is_the_first_target_by_priority_without_a_conn_id():
    level = EscalationLevel(
        1,
        targets=[
            EscalationTarget.channel("#ops", priority=2),
            EscalationTarget.webhook("https://pd", priority=0, conn_id="pagerduty"),
            EscalationTarget.user("lead", priority=1),
        ],
    )
    assert anchor_target(level).key == "user:lead"
    only_conn = EscalationLevel(1, targets=[EscalationTarget.email("a@b.c", conn_id="smtp")])
    assert anchor_target(only_conn).key == "email:a@b.c"
    assert anchor_target(EscalationLevel(1)) is None


def test_setup_validates_levels_and_actions(engine):
    with pytest.raises(ValueError, match=r"policy 'critical_alerts' has no level\(s\) \[7\]"):
        setup_escalation_with_existing_actions(engine, "critical_alerts", {7: [print]})
    with pytest.raises(TypeError, match=r"level_actions\[1\]\[1\]: action 'slack' is not runnable"):
        setup_escalation_with_existing_actions(engine, "critical_alerts", {1: [print, "slack"]})
    with pytest.raises(ValueError, match=r"level_actions\[2\]: no actions"):
        setup_escalation_with_existing_actions(engine, "critical_alerts", {2: []})
    with pytest.raises(ValueError, match="level numbers must be integers >= 1"):
        setup_escalation_with_existing_actions(engine, "critical_alerts", {"1": [print]})
    with pytest.raises(ValueError, match="level_actions: expected a non-empty mapping"):
        setup_escalation_with_existing_actions(engine, "critical_alerts", {})
    engine.register_policy(EscalationPolicy("silent", levels=[EscalationLevel(1)]))
    with pytest.raises(ValueError, match="level 1 of policy 'silent' has no targets"):
        setup_escalation_with_existing_actions(engine, "silent", {1: [print]})
    # an unregistered policy is accepted (checked when it fires)
    setup_escalation_with_existing_actions(engine, "later", {1: [print]})


def test_routing_package_does_not_import_airflow():
    code = (
        "import sys, airflow_escalation.routing\n"
        "loaded = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_notifier_placeholder_async_notify_falls_back_to_notify_in_a_thread():
    from airflow_escalation.routing import run_action

    class BaseNotifier:  # looks like Airflow's: async_notify is a placeholder
        async def async_notify(self, context):
            raise NotImplementedError

        def notify(self, context):
            raise NotImplementedError

    BaseNotifier.__module__ = "airflow.sdk.bases.notifier"

    class SyncOnly(BaseNotifier):
        def notify(self, context):
            return ("notify", threading.get_ident() != loop_thread)

    class Both(BaseNotifier):
        async def async_notify(self, context):
            return "async"

    class NominalAsync:  # claims async_notify but does not implement it
        async def async_notify(self, context):
            raise NotImplementedError

        def notify(self, context):
            return "notify"

    loop_thread = threading.get_ident()
    assert await run_action(SyncOnly(), {}) == ("notify", True)
    assert await run_action(SyncOnly(), {}, sync_in_thread=False) == ("notify", False)
    assert await run_action(Both(), {}) == "async"
    assert await run_action(NominalAsync(), {}) == "notify"
    assert asyncio.iscoroutinefunction(Both.async_notify)
