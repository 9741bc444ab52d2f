"""Severity: the one normalisation every layer uses (the policy's ``severity_filter``, a record's
``severity``, a level's ``severity`` condition, routing's ``SeverityRule``/``EscalationRule``).

A severity is compared by its normalised name: an enum member counts by its value, surrounding
blanks and case do not count (``" High"``, ``"HIGH"`` and ``Severity.HIGH`` whose value is
``"high"`` are all ``"high"``).
"""

from __future__ import annotations

from typing import Any

#: Known severities, least to most severe (routing's ``SeverityRule`` ranks by it).
SEVERITY_ORDER: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
_RANK = {name: rank for rank, name in enumerate(SEVERITY_ORDER)}


def normalize_severity(value: Any) -> str | None:
    """``" HIGH"``/an enum whose value is ``"high"`` → ``"high"``; ``None`` stays ``None``."""
    if value is None:
        return None
    return str(getattr(value, "value", value)).strip().lower()


def severity_rank(value: Any, field_name: str = "severity") -> int:
    """Position of a known severity in ``SEVERITY_ORDER``; ``ValueError`` naming the field otherwise."""
    name = normalize_severity(value)
    if name not in _RANK:
        raise ValueError(f"{field_name}: unknown severity {value!r} (allowed: {', '.join(SEVERITY_ORDER)})")
    return _RANK[name]


__all__ = ["SEVERITY_ORDER", "normalize_severity", "severity_rank"]
