"""Routing integration: rules, routes and the router; escalation rules/actions; level actions.

Nothing here imports Airflow: notifiers are recognised by their ``notify``/``async_notify``
methods, so an Airflow ``BaseNotifier`` works as an action without this package depending on it.
"""

from airflow_escalation.routing.escalation_action import EscalationAction
from airflow_escalation.routing.escalation_route import create_escalation_route
from airflow_escalation.routing.escalation_rule import EscalationRule, EscalationRuleConfig, incident_key
from airflow_escalation.routing.invoke import action_kind, action_name, outcome_failed, run_action
from airflow_escalation.routing.level_actions import (
    LevelActionHandler,
    LevelActionsFailed,
    anchor_target,
    level_context,
    setup_escalation_with_existing_actions,
)
from airflow_escalation.routing.router import ActionRouter, Route, RouteResult
from airflow_escalation.routing.rules import (
    SEVERITY_ORDER,
    AllOf,
    AlwaysRule,
    AnyOf,
    ContextMatchRule,
    NeverRule,
    Not,
    RoutingRule,
    SeverityRule,
    TagRule,
    normalize_severity,
    severity_rank,
)

__all__ = [
    "SEVERITY_ORDER",
    "ActionRouter",
    "AllOf",
    "AlwaysRule",
    "AnyOf",
    "ContextMatchRule",
    "EscalationAction",
    "EscalationRule",
    "EscalationRuleConfig",
    "LevelActionHandler",
    "LevelActionsFailed",
    "NeverRule",
    "Not",
    "Route",
    "RouteResult",
    "RoutingRule",
    "SeverityRule",
    "TagRule",
    "action_kind",
    "action_name",
    "anchor_target",
    "create_escalation_route",
    "incident_key",
    "level_context",
    "normalize_severity",
    "outcome_failed",
    "run_action",
    "setup_escalation_with_existing_actions",
    "severity_rank",
]
