"""``create_escalation_route``: a Route whose action starts an escalation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_escalation.core.types import EscalationTrigger
from airflow_escalation.routing.escalation_action import EscalationAction
from airflow_escalation.routing.escalation_rule import EscalationRule, EscalationRuleConfig
from airflow_escalation.routing.router import Route
from airflow_escalation.routing.rules import RoutingRule

if TYPE_CHECKING:
    from airflow_escalation.runtime.engine import EscalationEngine

__all__ = ["create_escalation_route"]


def create_escalation_route(
    engine: EscalationEngine,
    policy_name: str,
    rule: RoutingRule | None = None,
    name: str | None = None,
    *,
    incident_id_template: str = "{checkpoint_name}",
    trigger_type: EscalationTrigger | str | None = None,
    priority: int = 0,
    stop_on_match: bool = False,
    extra_actions: list[Any] | None = None,
) -> Route:
    """A route that triggers ``policy_name`` on ``engine`` when ``rule`` matches.

    ``rule`` defaults to ``EscalationRule`` for the policy (any severity, no cooldown) on the
    engine's clock. When ``rule`` is an ``EscalationRule``, its trigger type is used unless
    ``trigger_type`` is given, and its cooldown starts each time the escalation is triggered.
    ``extra_actions`` run after the escalation action on the same match.
    """
    if rule is None:
        rule = EscalationRule(EscalationRuleConfig(policy_name=policy_name), clock=engine.clock)
    cooldown_rule = rule if isinstance(rule, EscalationRule) else None
    if cooldown_rule is not None and cooldown_rule.policy_name != policy_name:
        raise ValueError(
            f"rule is an EscalationRule for policy {cooldown_rule.policy_name!r}, "
            f"but the route escalates to {policy_name!r}"
        )
    if trigger_type is None:
        trigger_type = cooldown_rule.trigger_type if cooldown_rule else EscalationTrigger.UNACKNOWLEDGED
    action = EscalationAction(engine, policy_name, incident_id_template, trigger_type, cooldown_rule=cooldown_rule)
    return Route(
        name=name or f"escalation:{policy_name}",
        rule=rule,
        actions=[action, *(extra_actions or [])],
        priority=priority,
        stop_on_match=stop_on_match,
    )
