"""Severity is normalised in one place (core/severity.py): the policy's filter in the engine and
routing's rules accept and refuse the same values (issue 11)."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

import pytest

from airflow_escalation.core import severity as core_severity
from airflow_escalation.routing import EscalationRule, EscalationRuleConfig, SeverityRule, normalize_severity
from core_support import SEED, SEED_L1, at, seed_policy


class Severity(str, Enum):
    HIGH = "high"
    LOW = "low"


ACCEPTED = [" high", "HIGH\n", Severity.HIGH]
REFUSED = ["low", Severity.LOW, "hig h", None]


def test_routing_uses_the_core_normalisation():
    assert normalize_severity is core_severity.normalize_severity


@pytest.mark.parametrize("value", ACCEPTED)
async def test_engine_filter_accepts_blanks_and_enum_members(make_engine, recorder, value):
    engine = await make_engine(seed_policy())  # severity_filter: critical, high
    result = await engine.trigger("inc", {"severity": value}, SEED)
    assert result.success, result.error
    await engine.advance(timedelta(minutes=1))
    assert recorder.timeline() == at(0, SEED_L1)


@pytest.mark.parametrize("value", REFUSED)
async def test_engine_filter_refuses_what_routing_refuses(make_engine, recorder, value):
    engine = await make_engine(seed_policy())
    result = await engine.trigger("inc", {"severity": value}, SEED)
    assert not result.success and result.code == "filtered"
    rule = EscalationRule(EscalationRuleConfig(policy_name=SEED, severity_filter=["critical", "high"]))
    assert not rule.matches_severity({"severity": value})
    await engine.advance(timedelta(hours=1))
    assert recorder.timeline() == []


@pytest.mark.parametrize("value", ACCEPTED)
def test_routing_and_policy_agree(value):
    rule = EscalationRule(EscalationRuleConfig(policy_name=SEED, severity_filter=[" High", Severity.HIGH]))
    assert rule.config.severity_filter == ["high", "high"]
    assert rule.matches_severity({"severity": value})
    assert SeverityRule(Severity.HIGH).evaluate({"severity": value})
    assert seed_policy().matches_severity(value)


def test_record_severity_is_normalised():
    from airflow_escalation.core.models import EscalationRecord

    record = EscalationRecord(id="r", incident_id="i", policy_name=SEED, context={"severity": Severity.HIGH})
    assert record.severity == "high"
    record.context["severity"] = "  Critical "
    assert record.severity == "critical"
