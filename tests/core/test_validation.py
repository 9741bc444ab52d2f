"""Policy validation: ValueError naming the field and the value (semantics 14)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from airflow_escalation import (
    EscalationLevel,
    EscalationPolicy,
    EscalationPolicyManager,
    EscalationTarget,
)


def lv(n, delay=0, **kw):
    return EscalationLevel(n, delay, [EscalationTarget.user("a")], **kw)


def level_dict(n, **kw):
    return {"level": n, "delay_minutes": 0, "targets": [{"type": "user", "identifier": "a"}], **kw}


def policy_dict(**kw):
    return {"name": "p", "levels": [level_dict(1), level_dict(2, delay_minutes=15)], **kw}


CASES = {
    # id: (callable, substrings the message must contain)
    "negative-delay": (lambda: EscalationPolicy(name="p", levels=[lv(1), lv(2, -5)]), ["delay_minutes", "-5"]),
    "negative-delay-dict": (
        lambda: EscalationPolicy.from_dict(policy_dict(levels=[level_dict(1, delay_minutes=-0.5)])),
        ["delay_minutes", "-0.5"],
    ),
    "negative-repeat-interval": (
        lambda: lv(1, repeat_count=1, repeat_interval_minutes=-1),
        ["repeat_interval_minutes", "-1"],
    ),
    "zero-repeat-interval-with-repeats": (
        lambda: lv(1, repeat_count=2, repeat_interval_minutes=0),
        ["repeat_interval_minutes", "0"],
    ),
    "negative-repeat-count": (lambda: lv(1, repeat_count=-1), ["repeat_count", "-1"]),
    "negative-auto-resolve": (lambda: lv(1, auto_resolve_minutes=-3), ["auto_resolve_minutes", "-3"]),
    "non-bool-require-ack": (lambda: lv(1, require_ack="no"), ["require_ack", "'no'"]),
    "string-delay": (lambda: lv(1, "5"), ["delay_minutes", "'5'"]),
    "duplicate-levels": (lambda: EscalationPolicy(name="p", levels=[lv(1), lv(2), lv(2)]), ["duplicate", "[2]"]),
    "gap": (lambda: EscalationPolicy(name="p", levels=[lv(1), lv(3)]), ["levels", "[1, 3]", "missing [2]"]),
    "no-level-one": (lambda: EscalationPolicy(name="p", levels=[lv(2)]), ["levels", "missing [1]"]),
    "level-zero": (lambda: lv(0), ["level", "0"]),
    "unknown-target-type": (
        lambda: EscalationPolicy.from_dict(
            policy_dict(levels=[{"level": 1, "targets": [{"type": "pager", "identifier": "x"}]}])
        ),
        ["target.type", "'pager'"],
    ),
    "empty-target-identifier": (lambda: EscalationTarget.user(""), ["identifier", "''"]),
    "bad-timezone": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], timezone="Mars/Olympus"),
        ["timezone", "'Mars/Olympus'"],
    ),
    "start-after-end": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], business_hours_start=18, business_hours_end=9),
        ["business_hours_start", "18", "9"],
    ),
    "start-equals-end": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], business_hours_start=9, business_hours_end=9),
        ["business_hours_start", "9"],
    ),
    "hour-out-of-range": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], business_hours_end=25),
        ["business_hours_end", "25"],
    ),
    "weekday-7": (lambda: EscalationPolicy(name="p", levels=[lv(1)], business_days=[0, 7]), ["business_days", "7"]),
    "weekday-minus-1": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], business_days=[-1, 2]),
        ["business_days", "-1"],
    ),
    "no-business-days": (lambda: EscalationPolicy(name="p", levels=[lv(1)], business_days=[]), ["business_days"]),
    "empty-levels": (lambda: EscalationPolicy(name="p", levels=[]), ["levels", "[]"]),
    "empty-name": (lambda: EscalationPolicy(name="", levels=[lv(1)]), ["name", "''"]),
    "negative-cooldown": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], cooldown_minutes=-1),
        ["cooldown_minutes", "-1"],
    ),
    "negative-max-escalations": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], max_escalations=-2),
        ["max_escalations", "-2"],
    ),
    "severity-filter-not-a-list": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], severity_filter="critical"),
        ["severity_filter", "'critical'"],
    ),
    "unknown-trigger": (lambda: EscalationPolicy(name="p", levels=[lv(1)], triggers=["boom"]), ["triggers", "'boom'"]),
    "unknown-mode": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], business_hours_mode="sometimes"),
        ["business_hours_mode", "'sometimes'"],
    ),
    "unknown-delay-basis": (
        lambda: EscalationPolicy(name="p", levels=[lv(1)], delay_basis="yesterday"),
        ["delay_basis", "'yesterday'"],
    ),
    "unknown-policy-field": (lambda: EscalationPolicy.from_dict(policy_dict(colour="red")), ["'colour'"]),
    "unknown-level-field": (
        lambda: EscalationPolicy.from_dict(policy_dict(levels=[{"level": 1, "delay": 3}])),
        ["'delay'"],
    ),
}


@pytest.mark.parametrize("build, expected", list(CASES.values()), ids=list(CASES))
def test_bad_policy_raises_value_error_naming_field_and_value(build, expected):
    with pytest.raises(ValueError) as info:
        build()
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_policy_error_names_the_policy():
    with pytest.raises(ValueError, match="policy 'billing'"):
        EscalationPolicy(name="billing", levels=[lv(1)], timezone="Nowhere/Town")


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("field", ["delay_minutes", "repeat_interval_minutes", "auto_resolve_minutes"])
def test_non_finite_minutes_are_rejected(field, value):
    kwargs = {field: value}
    if field == "repeat_interval_minutes":
        kwargs["repeat_count"] = 1
    with pytest.raises(ValueError, match=field):
        EscalationLevel(1, targets=[EscalationTarget.user("a")], **kwargs)


@pytest.mark.parametrize("field", ["enabled", "business_hours_only"])
def test_policy_boolean_fields_reject_strings(field):
    with pytest.raises(ValueError, match=field):
        EscalationPolicy(name="p", levels=[lv(1)], **{field: "false"})


def test_valid_policy_normalises_and_exposes_its_levels():
    policy = EscalationPolicy(
        name="p",
        levels=[lv(3, 30), lv(1), lv(2, 15)],
        severity_filter=["CRITICAL"],
        business_days=[4, 0, 0],
        triggers=["unacknowledged"],
    )
    assert [level.level for level in policy.levels] == [1, 2, 3]
    assert policy.max_level == 3
    assert policy.get_level(2).delay == timedelta(minutes=15)
    assert policy.get_next_level(1).level == 2 and policy.get_next_level(3) is None
    assert policy.severity_filter == ["critical"] and policy.business_days == [0, 4]
    assert EscalationPolicy.from_dict(policy.to_dict()).to_dict() == policy.to_dict()
    assert EscalationPolicy.from_dict(policy.to_dict()).fingerprint == policy.fingerprint


# ------------------------------------------------------------------ manager.from_dict


def _good(name):
    return {"name": name, "levels": [level_dict(1)]}


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"name": "bad", "levels": [level_dict(1, delay_minutes=-3)]}, "delay_minutes"),
        ({"name": "bad", "levels": []}, "levels"),
        ({"name": "bad", "levels": [level_dict(1), level_dict(3)]}, "missing [2]"),
        ({"name": "bad", "levels": [level_dict(1)], "timezone": "Atlantis/Capital"}, "Atlantis/Capital"),
        ({"name": "bad", "levels": [level_dict(1)], "business_days": [7]}, "business_days"),
        ({"levels": [level_dict(1)]}, "name"),
    ],
    ids=["negative-delay", "no-levels", "gap", "timezone", "weekday", "no-name"],
)
def test_manager_from_dict_names_the_bad_policy_index(bad, needle):
    with pytest.raises(ValueError) as info:
        EscalationPolicyManager.from_dict({"policies": [_good("a"), _good("b"), bad]})
    message = str(info.value)
    assert message.startswith("policies[2]: ") and needle in message


def test_manager_from_dict_rejects_duplicates_unknown_default_and_unknown_keys():
    with pytest.raises(ValueError, match=r"policies\[1\].*duplicate.*'a'"):
        EscalationPolicyManager.from_dict({"policies": [_good("a"), _good("a")]})
    with pytest.raises(ValueError, match="default_policy.*'zzz'"):
        EscalationPolicyManager.from_dict({"default_policy": "zzz", "policies": [_good("a")]})
    with pytest.raises(ValueError, match="'polices'"):
        EscalationPolicyManager.from_dict({"polices": []})
