"""A whole policies document checked at once: every error named, or the config it defines.

The one check every save goes through (``service/policy_sync.py``, the REST routes): each
top-level field, each policy, each level of each policy (``core/policy_doc.policy_errors_of``),
duplicate names and the default policy.
"""

from __future__ import annotations

from typing import Any

from airflow_escalation.core import bounds
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.core.policy_doc import policy_errors_of, unwrap


def validate_document(data: Any) -> tuple[EscalationPolicyConfig | None, list[str]]:
    """The config ``data`` defines, or None and every error found: each top-level field, each
    policy, each level of each policy, duplicates and the default policy, each named."""
    data = unwrap(data)
    if not isinstance(data, dict):
        return None, [f"document: expected a mapping, got {type(data).__name__}"]
    errors: list[str] = []
    try:
        bounds.check_document_json(data, "document")
    except ValueError as exc:
        return None, [str(exc)]
    raw = data.get("policies") or []
    if not isinstance(raw, list):
        errors.append(f"policies: expected a list, got {type(raw).__name__}")
        raw = []
    if len(raw) > bounds.MAX_POLICIES:
        errors.append(f"policies: at most {bounds.MAX_POLICIES} policies, got {len(raw)}")
        raw = raw[: bounds.MAX_POLICIES]
    # the top-level fields alone (every policy checked on its own below)
    try:
        EscalationPolicyConfig.from_dict({k: v for k, v in data.items() if k not in ("policies", "default_policy")})
    except (ValueError, TypeError) as exc:
        errors.append(str(exc))
    names: list[str] = []
    for index, item in enumerate(raw):
        policy_errors = policy_errors_of(item)
        label = f"policies[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']})"
            if item["name"] in names:
                errors.append(f"{label}: duplicate policy name {item['name']!r}")
            names.append(item["name"])
        errors += [f"{label}: {e}" for e in policy_errors]
    default = data.get("default_policy")
    if default is not None and names and default not in names:
        errors.append(f"default_policy: {default!r} is not one of the policies {sorted(set(names))}")
    errors += _section_errors(data, set(names))
    errors = list(dict.fromkeys(errors))  # a section the config checks too is named once
    if errors:
        return None, [bounds.truncate(e, 500) for e in errors]
    try:
        return EscalationPolicyConfig.from_dict(data), []
    except (ValueError, TypeError) as exc:  # a rule only the whole config checks
        return None, [bounds.truncate(exc, 500)]


def _section_errors(data: dict[str, Any], policy_names: set[str]) -> list[str]:
    """The on-call sections and the failure routes, checked by their own modules."""
    errors: list[str] = []
    from airflow_escalation.oncall.config import SECTIONS, OnCallConfig

    if any(data.get(key) is not None for key in SECTIONS):
        try:
            OnCallConfig.from_sections(data)
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    if data.get("routes"):
        from airflow_escalation.detection.routes import parse_routes

        try:
            parse_routes(data["routes"], policy_names or None)
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    return errors
