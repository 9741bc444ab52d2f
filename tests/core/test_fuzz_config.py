"""Hypothesis over every way a policy comes in: ``EscalationPolicy.from_dict``,
``EscalationPolicyManager.from_dict`` and ``from_yaml``. Whatever the input, the answer is a
valid object or a ``ValueError`` whose short message names the field -- never another exception,
never a message that echoes a huge input (docs/security.md)."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_escalation.core import bounds
from airflow_escalation.runtime.manager import EscalationPolicyManager
from airflow_escalation.runtime.policy_config import _CONFIG_FIELDS
from airflow_escalation.core.models import _LEVEL_FIELDS, _POLICY_FIELDS, EscalationPolicy

TARGET_FIELDS = {"type", "identifier", "name", "priority", "metadata", "conn_id"}
# a refusal names the field it is about, or the part of the input it concerns
NAMES = (
    _POLICY_FIELDS
    | _LEVEL_FIELDS
    | TARGET_FIELDS
    | _CONFIG_FIELDS
    | {"policy", "levels", "target", "escalation", "yaml", "policies", "config"}
)
MAX_MESSAGE = 2 * bounds.MAX_ERROR_CHARS

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "\ud800", "critical", "UTC", "Europe/Paris", "user", "webhook", "wait", "trigger", "x" * 300]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True), text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def field_value(name: str) -> st.SearchStrategy:
    """Mostly plausible values for a known field, sometimes anything at all."""
    plausible = {
        "level": st.integers(0, 4),
        "delay_minutes": st.floats(-1, 10**6),
        "repeat_count": st.integers(-1, 2000),
        "repeat_interval_minutes": st.floats(-1, 10),
        "require_ack": st.booleans(),
        "auto_resolve_minutes": st.floats(0, 100),
        "business_hours_start": st.integers(-1, 25),
        "business_hours_end": st.integers(-1, 25),
        "business_days": st.lists(st.integers(-1, 8), max_size=8),
        "triggers": st.lists(st.sampled_from(["unacknowledged", "unresolved", "severity_upgrade", "x"]), max_size=3),
        "severity_filter": st.lists(text, max_size=3),
        "max_escalations": st.integers(-1, 10),
        "cooldown_minutes": st.floats(-1, 10**6),
        "enabled": st.booleans(),
        "business_hours_only": st.booleans(),
        "timezone": text,
        "name": text,
        "description": text,
        "identifier": text,
        "type": text,
        "conditions": json_values,
        "metadata": json_values,
        "priority": st.integers(-(10**10), 10**10),
    }
    return st.one_of(plausible.get(name, scalars), json_values) if name in plausible else json_values


def some_fields(names: set[str], extra: st.SearchStrategy | None = None) -> st.SearchStrategy:
    return st.lists(st.sampled_from(sorted(names)), unique=True, max_size=len(names)).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {n: field_value(n) for n in chosen},
            optional=({"unknown_field": json_values} if extra is None else {"targets": extra}),
        )
    )


targets = st.lists(st.one_of(text, some_fields(TARGET_FIELDS)), max_size=3)
levels = st.lists(some_fields(_LEVEL_FIELDS - {"targets"}, extra=targets), max_size=3)
policies = st.one_of(
    json_values,
    some_fields(_POLICY_FIELDS - {"levels"}).flatmap(lambda fields: levels.map(lambda lv: {**fields, "levels": lv})),
)
configs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "policies": st.one_of(st.lists(policies, max_size=2), json_values),
            "default_policy": text,
            "global_enabled": scalars,
            "store": json_values,
            "store_config": json_values,
            "scheduler_config": json_values,
            "max_concurrent_escalations": scalars,
            "cleanup_interval_minutes": scalars,
            "retention_days": scalars,
            "metrics_enabled": scalars,
            "store_type": scalars,
            "bogus": scalars,
        },
    ).map(lambda block: block if len(block) % 2 else {"escalation": block}),
)


def refused_well(exc: ValueError) -> None:
    message = str(exc)
    assert message and len(message) <= MAX_MESSAGE, message[:300]
    assert any(name in message for name in NAMES), message


@FUZZ
@given(policies)
def test_policy_from_dict_is_valid_or_a_value_error_naming_the_field(data):
    try:
        policy = EscalationPolicy.from_dict(data)
    except ValueError as exc:
        refused_well(exc)
        return
    again = EscalationPolicy.from_dict(policy.to_dict())  # what it accepts, it round-trips
    assert again.fingerprint == policy.fingerprint
    bounds.check_json(policy.to_dict(), "policy", max_bytes=bounds.MAX_POLICY_BYTES, max_depth=bounds.MAX_DEPTH + 4)


@FUZZ
@given(configs)
def test_manager_from_dict_is_valid_or_a_value_error(data):
    try:
        manager = EscalationPolicyManager.from_dict(data)
    except ValueError as exc:
        refused_well(exc)
        return
    assert set(manager.list_policies()) == set(manager.config.policies)


yaml_texts = st.one_of(
    configs.map(lambda data: yaml.safe_dump(data, allow_unicode=True) if _dumpable(data) else "x: 1\n"),
    st.text(max_size=200).map(lambda t: t + "\n"),
    st.sampled_from(
        [
            "a: &x [1]\nb: *x\n",
            "- [" * 80 + "\n",
            "escalation:\n  policies: {}\n",
            ":\n",
            "\t\n",
            "escalation: !!python/object:os.system [ls]\n",
            "x: " + "[" * 70 + "]" * 70 + "\n",
        ]
    ),
)


def _dumpable(data) -> bool:
    try:
        yaml.safe_dump(data)
    except Exception:
        return False
    return True


@FUZZ
@given(yaml_texts)
def test_manager_from_yaml_is_valid_or_a_value_error(source):
    try:
        EscalationPolicyManager.from_yaml(source)
    except ValueError as exc:
        refused_well(exc)
