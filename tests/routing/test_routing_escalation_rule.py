from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_escalation import EscalationTrigger
from airflow_escalation.routing import EscalationRule, EscalationRuleConfig, incident_key
from airflow_escalation.testing import FakeClock


def test_config_defaults_and_normalization():
    config = EscalationRuleConfig(policy_name="critical_alerts", severity_filter=["CRITICAL", "high"])
    assert config.trigger_type is EscalationTrigger.UNACKNOWLEDGED
    assert config.severity_filter == ["critical", "high"]
    assert config.cooldown_minutes == 0 and config.metadata == {}
    assert EscalationRuleConfig("p", trigger_type="manual").trigger_type is EscalationTrigger.MANUAL
    assert EscalationRuleConfig("p", trigger_type=EscalationTrigger.CUSTOM).trigger_type is EscalationTrigger.CUSTOM


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"trigger_type": "unacked"}, r"trigger_type: unknown value 'unacked' \(allowed: unacknowledged, unresolved"),
        ({"severity_filter": ["critcal"]}, r"severity_filter: unknown severity 'critcal'"),
        ({"severity_filter": "critical"}, r"severity_filter: expected a list"),
        ({"cooldown_minutes": -1}, r"cooldown_minutes: must be a number >= 0, got -1"),
        ({"cooldown_minutes": "5"}, r"cooldown_minutes"),
        ({"metadata": []}, r"metadata: expected a mapping"),
    ],
)
def test_config_validation_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        EscalationRuleConfig(policy_name="p", **fields)
    with pytest.raises(ValueError, match="policy_name: must be a non-empty string"):
        EscalationRuleConfig(policy_name="")


@pytest.mark.parametrize("severity_filter", [None, []])
@pytest.mark.parametrize("context", [{}, {"severity": "info"}, {"severity": "critical"}])
def test_no_severity_filter_matches_anything(severity_filter, context):
    rule = EscalationRule(EscalationRuleConfig("p", severity_filter=severity_filter))
    assert rule.evaluate(context) is True


@pytest.mark.parametrize(
    "context,expected",
    [
        ({"severity": "critical"}, True),
        ({"severity": "HIGH"}, True),
        ({"severity": "medium"}, False),
        ({"severity": None}, False),
        ({}, False),
    ],
)
def test_severity_filter(context, expected):
    rule = EscalationRule(config=EscalationRuleConfig("p", severity_filter=["critical", "high"]))
    assert rule.evaluate(context) is expected


def test_cooldown_is_per_incident_on_the_injected_clock():
    clock = FakeClock()
    rule = EscalationRule(policy_name="p", cooldown_minutes=30, clock=clock)
    orders, users = {"checkpoint_name": "orders"}, {"checkpoint_name": "users"}
    assert rule.evaluate(orders)
    rule.record_trigger(orders)
    assert not rule.evaluate(orders) and rule.in_cooldown(orders)
    assert rule.cooldown_until(orders) == clock.now() + timedelta(minutes=30)
    assert rule.evaluate(users)  # another incident is not cooling down
    clock.advance(timedelta(minutes=29, seconds=59))
    assert not rule.evaluate(orders)
    clock.advance(timedelta(seconds=1))
    assert rule.evaluate(orders) and rule.cooldown_until(orders) is None


def test_cooldown_key_prefers_incident_id_and_reset_forgets():
    clock = FakeClock()
    rule = EscalationRule(policy_name="p", cooldown_minutes=10, clock=clock)
    assert incident_key({"incident_id": "inc-1", "checkpoint_name": "orders"}) == "inc-1"
    assert incident_key({"checkpoint_name": "orders"}) == "orders" and incident_key({}) == ""
    rule.record_trigger({"incident_id": "inc-1", "checkpoint_name": "orders"})
    assert not rule.evaluate({"incident_id": "inc-1"})
    assert rule.evaluate({"checkpoint_name": "orders"})
    rule.reset({"incident_id": "inc-1"})
    assert rule.evaluate({"incident_id": "inc-1"})
    rule.record_trigger({})
    assert not rule.evaluate({}) and rule.evaluate({"incident_id": "x"})
    rule.reset()
    assert rule.evaluate({})


def test_zero_cooldown_never_suppresses():
    rule = EscalationRule(policy_name="p", clock=FakeClock())
    rule.record_trigger({"checkpoint_name": "orders"})
    assert rule.evaluate({"checkpoint_name": "orders"})


def test_rule_construction_and_description():
    rule = EscalationRule(policy_name="critical_alerts", severity_filter=["critical"], cooldown_minutes=15)
    assert rule.policy_name == "critical_alerts" and rule.trigger_type is EscalationTrigger.UNACKNOWLEDGED
    assert rule.description == "escalate to 'critical_alerts' on severity in [critical], cooldown 15 min"
    assert EscalationRule(policy_name="p").description == "escalate to 'p' on severity in [any]"
    with pytest.raises(TypeError, match="either config= or the config's fields"):
        EscalationRule(EscalationRuleConfig("p"), policy_name="q")
    with pytest.raises(TypeError, match="expected an EscalationRuleConfig"):
        EscalationRule({"policy_name": "p"})
