"""Routes (a rule and the actions it runs) and the router that evaluates them.

Routes are evaluated highest ``priority`` first (ties keep insertion order). By default every
matching route runs ("all matches"); ``first_match=True`` stops after the first matching route,
and a route with ``stop_on_match=True`` stops evaluation when it matches. The router never
raises for a failing rule or action: each shows up as a failed ``RouteResult``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from airflow_escalation.routing.invoke import action_kind, action_name, outcome_failed, run_action
from airflow_escalation.routing.rules import RoutingRule

__all__ = ["ActionRouter", "Route", "RouteResult"]

log = logging.getLogger("airflow_escalation.routing")


@dataclass
class Route:
    """``actions`` run when ``rule`` matches a context. A single action may be given bare."""

    name: str
    rule: RoutingRule
    actions: list[Any] = field(default_factory=list)
    priority: int = 0
    stop_on_match: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"route.name: must be a non-empty string, got {self.name!r}")
        if not callable(getattr(self.rule, "evaluate", None)):
            raise TypeError(f"route {self.name!r}: rule must have evaluate(context), got {self.rule!r}")
        if not isinstance(self.actions, (list, tuple)):
            self.actions = [self.actions]
        self.actions = list(self.actions)
        for index, action in enumerate(self.actions):
            try:
                action_kind(action)
            except TypeError as exc:
                raise TypeError(f"route {self.name!r}: actions[{index}]: {exc}") from None
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"route {self.name!r}: priority must be an integer, got {self.priority!r}")


@dataclass
class RouteResult:
    """What one action of a matched route did (``action`` is None when the rule itself failed)."""

    route_name: str
    action_name: str
    success: bool
    result: Any = None
    error: str | None = None
    action: Any = None


class ActionRouter:
    """Evaluates routes against a context and runs the matching routes' actions."""

    def __init__(self, routes: Iterable[Route] = (), *, first_match: bool = False) -> None:
        self.first_match = first_match
        self._routes: list[Route] = []
        for route in routes:
            self.add_route(route)

    @property
    def routes(self) -> list[Route]:
        """Routes in evaluation order: highest priority first, ties in insertion order."""
        return sorted(self._routes, key=lambda r: -r.priority)

    def add_route(self, route: Route) -> Route:
        if not isinstance(route, Route):
            raise TypeError(f"add_route: expected a Route, got {route!r}")
        if any(r.name == route.name for r in self._routes):
            raise ValueError(f"route {route.name!r} already exists (remove it first)")
        self._routes.append(route)
        return route

    def remove_route(self, name: str) -> bool:
        before = len(self._routes)
        self._routes = [r for r in self._routes if r.name != name]
        return len(self._routes) != before

    def get_route(self, name: str) -> Route | None:
        return next((r for r in self._routes if r.name == name), None)

    def match(self, context: dict[str, Any]) -> list[Route]:
        """The routes that would run for ``context`` (rules that raise count as no match)."""
        return [route for route, error in self._evaluate(context) if error is None]

    async def route(self, context: dict[str, Any]) -> list[RouteResult]:
        """Run the matching routes' actions in order; one result per action run (or failed rule)."""
        results: list[RouteResult] = []
        for route, error in self._evaluate(context):
            if error is not None:
                results.append(RouteResult(route.name, "<rule>", False, error=error))
                continue
            for action in route.actions:
                results.append(await _run(route, action, context))
        return results

    def _evaluate(self, context: dict[str, Any]) -> list[tuple[Route, str | None]]:
        chosen: list[tuple[Route, str | None]] = []
        for route in self.routes:
            try:
                matched = bool(route.rule.evaluate(context))
            except Exception as exc:
                log.exception("route %r: rule %r raised", route.name, route.rule)
                chosen.append((route, f"rule raised {type(exc).__name__}: {exc}"))
                continue
            if not matched:
                continue
            chosen.append((route, None))
            if self.first_match or route.stop_on_match:
                break
        return chosen


async def _run(route: Route, action: Any, context: dict[str, Any]) -> RouteResult:
    name = action_name(action)
    try:
        outcome = await run_action(action, dict(context))
    except Exception as exc:
        log.exception("route %r: action %s failed", route.name, name)
        return RouteResult(route.name, name, False, error=f"{type(exc).__name__}: {exc}", action=action)
    if outcome_failed(outcome):
        error = getattr(outcome, "error", None) or f"action {name} reported failure"
        return RouteResult(route.name, name, False, outcome, str(error), action)
    return RouteResult(route.name, name, True, outcome, action=action)
