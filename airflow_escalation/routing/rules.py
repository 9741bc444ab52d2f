"""Routing rules: small predicates over a context dict.

Every rule has ``evaluate(context) -> bool`` and a human-readable ``description``. Rules compose
with ``AllOf``/``AnyOf``/``Not`` or the operators ``&``, ``|`` and ``~``.
"""

from __future__ import annotations

from typing import Any, Iterable

# one normalisation for core and routing (core/severity.py); re-exported here for routing's API
from airflow_escalation.core.severity import SEVERITY_ORDER, normalize_severity, severity_rank

__all__ = [
    "SEVERITY_ORDER",
    "AllOf",
    "AlwaysRule",
    "AnyOf",
    "ContextMatchRule",
    "NeverRule",
    "Not",
    "RoutingRule",
    "SeverityRule",
    "TagRule",
    "normalize_severity",
    "severity_rank",
]

_RANK = {name: rank for rank, name in enumerate(SEVERITY_ORDER)}
_MISSING = object()


class RoutingRule:
    """Base rule. Subclasses implement ``evaluate`` and ``description``."""

    def evaluate(self, context: dict[str, Any]) -> bool:
        raise NotImplementedError

    @property
    def description(self) -> str:
        return type(self).__name__

    def __and__(self, other: RoutingRule) -> AllOf:
        return AllOf(self, other)

    def __or__(self, other: RoutingRule) -> AnyOf:
        return AnyOf(self, other)

    def __invert__(self) -> Not:
        return Not(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"


def _check_rule(rule: Any, where: str) -> Any:
    if not callable(getattr(rule, "evaluate", None)):
        raise TypeError(f"{where}: expected a rule with evaluate(context), got {rule!r}")
    return rule


def _describe(rule: Any) -> str:
    return getattr(rule, "description", None) or repr(rule)


class AlwaysRule(RoutingRule):
    """Matches every context."""

    def evaluate(self, context: dict[str, Any]) -> bool:
        return True

    @property
    def description(self) -> str:
        return "always"


class NeverRule(RoutingRule):
    """Matches no context."""

    def evaluate(self, context: dict[str, Any]) -> bool:
        return False

    @property
    def description(self) -> str:
        return "never"


class SeverityRule(RoutingRule):
    """Matches when ``context["severity"]`` is at least ``min_severity`` (info < low < medium < high < critical).

    A context without a severity, or with one outside the known scale, does not match.
    """

    def __init__(self, min_severity: str = "high") -> None:
        severity_rank(min_severity, "min_severity")
        self.min_severity = normalize_severity(min_severity)

    def evaluate(self, context: dict[str, Any]) -> bool:
        severity = normalize_severity(context.get("severity"))
        if severity not in _RANK:
            return False
        return _RANK[severity] >= _RANK[self.min_severity]

    @property
    def description(self) -> str:
        return f"severity >= {self.min_severity}"


class ContextMatchRule(RoutingRule):
    """Matches when ``context[key] == value`` (a missing key never matches, not even ``None``)."""

    def __init__(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"key: must be a non-empty string, got {key!r}")
        self.key = key
        self.value = value

    def evaluate(self, context: dict[str, Any]) -> bool:
        found = context.get(self.key, _MISSING)
        return found is not _MISSING and found == self.value

    @property
    def description(self) -> str:
        return f"{self.key} == {self.value!r}"


class TagRule(RoutingRule):
    """Matches on ``context["tags"]``.

    With a list/set of tags (Airflow DAG tags): matches when ``tag`` is among them.
    With a mapping of tags: matches when ``tag`` is a key and, if ``value`` is given, maps to it.
    """

    def __init__(self, tag: str, value: Any = _MISSING) -> None:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag: must be a non-empty string, got {tag!r}")
        self.tag = tag
        self.value = value

    def evaluate(self, context: dict[str, Any]) -> bool:
        tags = context.get("tags")
        if isinstance(tags, dict):
            if self.tag not in tags:
                return False
            return self.value is _MISSING or tags[self.tag] == self.value
        if isinstance(tags, (list, tuple, set, frozenset)):
            return self.value is _MISSING and self.tag in tags
        return False

    @property
    def description(self) -> str:
        return f"tag {self.tag}" if self.value is _MISSING else f"tag {self.tag} == {self.value!r}"


class AllOf(RoutingRule):
    """Matches when every rule matches (evaluation stops at the first miss)."""

    def __init__(self, *rules: RoutingRule) -> None:
        self.rules = _collect(rules, type(self).__name__)

    def evaluate(self, context: dict[str, Any]) -> bool:
        return all(rule.evaluate(context) for rule in self.rules)

    @property
    def description(self) -> str:
        return "(" + " AND ".join(_describe(r) for r in self.rules) + ")"


class AnyOf(RoutingRule):
    """Matches when at least one rule matches (evaluation stops at the first hit)."""

    def __init__(self, *rules: RoutingRule) -> None:
        self.rules = _collect(rules, type(self).__name__)

    def evaluate(self, context: dict[str, Any]) -> bool:
        return any(rule.evaluate(context) for rule in self.rules)

    @property
    def description(self) -> str:
        return "(" + " OR ".join(_describe(r) for r in self.rules) + ")"


class Not(RoutingRule):
    """Matches when ``rule`` does not."""

    def __init__(self, rule: RoutingRule) -> None:
        self.rule = _check_rule(rule, "Not")

    def evaluate(self, context: dict[str, Any]) -> bool:
        return not self.rule.evaluate(context)

    @property
    def description(self) -> str:
        return f"NOT {_describe(self.rule)}"


def _collect(rules: Iterable[Any], where: str) -> list[Any]:
    found = [_check_rule(rule, f"{where}[{i}]") for i, rule in enumerate(rules)]
    if not found:
        raise ValueError(f"{where}: needs at least one rule")
    return found
