from __future__ import annotations

import itertools

import pytest

from airflow_escalation.routing import (
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
)

T, F = AlwaysRule(), NeverRule()


@pytest.mark.parametrize("minimum", SEVERITY_ORDER)
@pytest.mark.parametrize("severity", SEVERITY_ORDER)
def test_severity_rule_truth_table(minimum, severity):
    expected = SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index(minimum)
    rule = SeverityRule(min_severity=minimum)
    assert rule.evaluate({"severity": severity}) is expected
    assert rule.evaluate({"severity": severity.upper()}) is expected


@pytest.mark.parametrize("context", [{}, {"severity": None}, {"severity": "bogus"}, {"message": "x"}])
def test_severity_rule_does_not_match_missing_or_unknown_severity(context):
    assert SeverityRule("info").evaluate(context) is False


def test_severity_rule_defaults_to_high_and_rejects_unknown_minimum():
    rule = SeverityRule()
    assert rule.min_severity == "high" and rule.description == "severity >= high"
    assert [s for s in SEVERITY_ORDER if rule.evaluate({"severity": s})] == ["high", "critical"]
    with pytest.raises(ValueError, match=r"min_severity: unknown severity 'urgent' \(allowed: info, low"):
        SeverityRule(min_severity="urgent")


@pytest.mark.parametrize("a,b", list(itertools.product([T, F], repeat=2)))
def test_all_any_not_truth_tables(a, b):
    x, y = a.evaluate({}), b.evaluate({})
    assert AllOf(a, b).evaluate({}) is (x and y)
    assert AnyOf(a, b).evaluate({}) is (x or y)
    assert Not(a).evaluate({}) is (not x)
    assert (a & b).evaluate({}) is (x and y)
    assert (a | b).evaluate({}) is (x or y)
    assert (~a).evaluate({}) is (not x)


def test_composites_short_circuit_and_describe():
    class Boom(RoutingRule):
        def evaluate(self, context):
            raise AssertionError("must not be evaluated")

    assert AllOf(F, Boom()).evaluate({}) is False
    assert AnyOf(T, Boom()).evaluate({}) is True
    rule = AllOf(SeverityRule("high"), Not(ContextMatchRule("env", "dev")))
    assert rule.description == "(severity >= high AND NOT env == 'dev')"
    assert rule.evaluate({"severity": "critical", "env": "prod"})
    assert not rule.evaluate({"severity": "critical", "env": "dev"})


def test_composites_validate_their_rules():
    with pytest.raises(ValueError, match="AllOf: needs at least one rule"):
        AllOf()
    with pytest.raises(ValueError, match="AnyOf: needs at least one rule"):
        AnyOf()
    with pytest.raises(TypeError, match=r"AnyOf\[1\]: expected a rule"):
        AnyOf(T, "severity >= high")
    with pytest.raises(TypeError, match="Not: expected a rule"):
        Not(None)


@pytest.mark.parametrize(
    "context,expected",
    [
        ({"env": "prod"}, True),
        ({"env": "dev"}, False),
        ({}, False),
        ({"env": None}, False),
    ],
)
def test_context_match_rule(context, expected):
    assert ContextMatchRule("env", "prod").evaluate(context) is expected


def test_context_match_rule_missing_key_is_not_none():
    rule = ContextMatchRule("owner", None)
    assert rule.evaluate({"owner": None}) is True
    assert rule.evaluate({}) is False
    with pytest.raises(ValueError, match="key: must be a non-empty string"):
        ContextMatchRule("", 1)


@pytest.mark.parametrize(
    "rule,context,expected",
    [
        (TagRule("finance"), {"tags": ["finance", "daily"]}, True),
        (TagRule("finance"), {"tags": ("daily",)}, False),
        (TagRule("finance"), {"tags": {"finance": "yes"}}, True),
        (TagRule("team", "data"), {"tags": {"team": "data"}}, True),
        (TagRule("team", "data"), {"tags": {"team": "web"}}, False),
        (TagRule("team", "data"), {"tags": ["team"]}, False),
        (TagRule("finance"), {}, False),
        (TagRule("finance"), {"tags": "finance"}, False),
    ],
)
def test_tag_rule(rule, context, expected):
    assert rule.evaluate(context) is expected


def test_always_and_never():
    assert AlwaysRule().evaluate({}) and not NeverRule().evaluate({"severity": "critical"})
    assert AlwaysRule().description == "always" and repr(NeverRule()) == "<NeverRule: never>"
