from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import EscalationTrigger
from airflow_escalation.routing import (
    ActionRouter,
    EscalationAction,
    EscalationRule,
    EscalationRuleConfig,
    SeverityRule,
    create_escalation_route,
)


async def test_severity_route_escalates_critical_and_ignores_low(engine, sent):
    route = create_escalation_route(
        engine=engine, policy_name="critical_alerts", rule=SeverityRule(min_severity="high")
    )
    router = ActionRouter()
    router.add_route(route)
    assert route.name == "escalation:critical_alerts"
    assert isinstance(route.actions[0], EscalationAction)

    ignored = await router.route({"severity": "low", "checkpoint_name": "orders"})
    assert ignored == [] and engine.get_active_escalations() == [] and sent.sent == []

    results = await router.route({"severity": "critical", "checkpoint_name": "orders"})
    assert len(results) == 1 and results[0].success
    record = results[0].result.record
    assert record.incident_id == "orders" and record.policy_name == "critical_alerts"
    assert [r.id for r in engine.get_active_escalations("critical_alerts")] == [record.id]
    await engine.drain()  # deliveries run as tasks after the trigger's write
    assert sent.timeline() == [(0, "channel:#alerts"), (0, "user:lead")]


async def test_default_rule_is_an_escalation_rule_for_the_policy(engine):
    route = create_escalation_route(
        engine, "critical_alerts", name="esc", priority=3, stop_on_match=True, incident_id_template="inc-{run_id}"
    )
    assert isinstance(route.rule, EscalationRule) and route.rule.policy_name == "critical_alerts"
    assert route.rule.clock is engine.clock
    assert (route.name, route.priority, route.stop_on_match) == ("esc", 3, True)
    results = await ActionRouter([route]).route({"run_id": "42"})
    assert results[0].success and results[0].result.record.incident_id == "inc-42"


async def test_escalation_rule_cooldown_starts_when_the_route_escalates(engine, clock, sent):
    rule = EscalationRule(
        EscalationRuleConfig(
            "critical_alerts", severity_filter=["critical"], trigger_type="unacknowledged", cooldown_minutes=30
        ),
        clock=clock,
    )
    router = ActionRouter([create_escalation_route(engine, "critical_alerts", rule=rule)])
    context = {"severity": "critical", "checkpoint_name": "orders"}

    first = await router.route(context)
    assert first[0].success
    await engine.resolve(first[0].result.record.id, resolved_by="lead")
    await engine.advance(timedelta(minutes=10))
    assert await router.route(context) == []  # within the rule's cooldown
    assert (await router.route({**context, "checkpoint_name": "users"}))[0].success
    await engine.advance(timedelta(minutes=20))
    again = await router.route(context)
    assert again[0].success and again[0].result.record.id != first[0].result.record.id


async def test_trigger_type_follows_the_escalation_rule(engine):
    rule = EscalationRule(policy_name="critical_alerts", trigger_type="manual")
    route = create_escalation_route(engine, "critical_alerts", rule=rule)
    assert route.actions[0].trigger_type is EscalationTrigger.MANUAL
    route = create_escalation_route(engine, "critical_alerts", rule=rule, trigger_type="unresolved")
    assert route.actions[0].trigger_type is EscalationTrigger.UNRESOLVED


def test_rule_for_another_policy_is_refused(engine):
    with pytest.raises(ValueError, match="EscalationRule for policy 'other_alerts'"):
        create_escalation_route(engine, "critical_alerts", rule=EscalationRule(policy_name="other_alerts"))


async def test_extra_actions_run_after_the_escalation(engine):
    seen = []
    route = create_escalation_route(
        engine,
        "critical_alerts",
        rule=SeverityRule("high"),
        extra_actions=[lambda ctx: seen.append(ctx["checkpoint_name"])],
    )
    results = await ActionRouter([route]).route({"severity": "high", "checkpoint_name": "orders"})
    assert [r.success for r in results] == [True, True] and seen == ["orders"]
