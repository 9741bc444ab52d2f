""" "Which route would catch this, and what would happen": one answer for the REST API, the CLI and
the Escalations page. No Airflow import."""

from __future__ import annotations

from typing import Any, Optional

from airflow_escalation.core.models import EscalationPolicy
from airflow_escalation.detection.routes import FailureEvent, RouteTable, incident_key, route_dict


def what_would_happen(policy: Optional[EscalationPolicy], severity: str) -> dict[str, Any]:
    """The policy's levels as steps (who, and minutes after the trigger), or why nothing pages."""
    if policy is None:
        return {"pages": False, "why": "the policy is not registered (fix the policies file)", "steps": []}
    if not policy.enabled:
        return {"pages": False, "why": f"policy {policy.name!r} is disabled", "steps": []}
    if not policy.matches_severity(severity):
        return {
            "pages": False,
            "why": f"severity {severity!r} is not in policy {policy.name!r}'s severity_filter {policy.severity_filter}",
            "steps": [],
        }
    steps = []
    at = 0.0
    for level in sorted(policy.levels, key=lambda lv: lv.level):
        at += level.delay_minutes
        steps.append(
            {
                "level": level.level,
                "after_minutes": round(at, 3),
                "targets": [
                    f"{t.type.value if hasattr(t.type, 'value') else t.type}:{t.identifier}" for t in level.targets
                ],
            }
        )
    return {"pages": True, "why": None, "steps": steps}


def explain(table: RouteTable, policies: dict[str, EscalationPolicy], event: FailureEvent) -> dict[str, Any]:
    """Every route checked against ``event`` in precedence order, the one that wins, and its effect."""
    checks = table.check(event)
    winner = next((c for c in checks if c.matches), None)
    answer: dict[str, Any] = {
        "event": {
            "kind": event.kind,
            "dag_id": event.dag_id,
            "task_id": event.task_id,
            "run_type": event.run_type,
            "try_number": event.try_number,
            "tags": sorted(event.tags),
            "owners": sorted(event.owners),
        },
        "precedence": "the first route in the file that matches wins",
        "routes": [
            {
                "index": c.index,
                "name": c.route.label,
                "matches": c.matches,
                "wins": winner is not None and c.index == winner.index,
                "reason": c.reason,
            }
            for c in checks
        ],
        "route": None,
        "incident_id": None,
        "policy": None,
        "severity": None,
        "outcome": {"pages": False, "why": "no route matches: the service does not page for it", "steps": []},
    }
    if winner is not None:
        route = winner.route
        answer.update(
            route=route_dict(route, winner.index),
            incident_id=incident_key(route, event),
            policy=route.policy,
            severity=route.severity,
            outcome=what_would_happen(policies.get(route.policy), route.severity),
        )
    return answer


__all__ = ["explain", "what_would_happen"]
