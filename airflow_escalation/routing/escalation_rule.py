"""``EscalationRule``: a routing rule that decides whether a context should escalate.

It matches when the context's severity is in ``severity_filter`` (``None``/empty: any severity)
and the incident is not in the rule's own cooldown. The cooldown is per incident key (the
context's ``incident_id``, else its ``checkpoint_name``) and starts at ``record_trigger``;
``create_escalation_route`` records it when the escalation was actually triggered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_escalation.core.clock import SYSTEM_CLOCK, Clock
from airflow_escalation.core.types import EscalationTrigger
from airflow_escalation.routing.rules import RoutingRule, normalize_severity, severity_rank

__all__ = ["EscalationRule", "EscalationRuleConfig", "incident_key"]

#: Context keys that identify an incident for the cooldown, most specific first.
INCIDENT_KEYS = ("incident_id", "checkpoint_name")
_PRUNE_AT = 1024


def incident_key(context: dict[str, Any]) -> str:
    """The cooldown key of a context: its incident id, else its checkpoint name, else ``""``."""
    for key in INCIDENT_KEYS:
        value = context.get(key)
        if value not in (None, ""):
            return str(value)
    return ""


@dataclass
class EscalationRuleConfig:
    """When to escalate, and to which policy (the spec's fields)."""

    policy_name: str
    severity_filter: list[str] | None = None
    trigger_type: EscalationTrigger | str = EscalationTrigger.UNACKNOWLEDGED
    cooldown_minutes: float = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.policy_name, str) or not self.policy_name.strip():
            raise ValueError(f"policy_name: must be a non-empty string, got {self.policy_name!r}")
        try:
            self.trigger_type = EscalationTrigger(
                self.trigger_type.value if isinstance(self.trigger_type, EscalationTrigger) else self.trigger_type
            )
        except ValueError:
            allowed = ", ".join(t.value for t in EscalationTrigger)
            raise ValueError(f"trigger_type: unknown value {self.trigger_type!r} (allowed: {allowed})") from None
        if self.severity_filter is not None:
            if isinstance(self.severity_filter, str) or not isinstance(self.severity_filter, (list, tuple, set)):
                raise ValueError(f"severity_filter: expected a list of severities, got {self.severity_filter!r}")
            for severity in self.severity_filter:
                severity_rank(severity, "severity_filter")
            self.severity_filter = [normalize_severity(s) for s in self.severity_filter]
        cooldown = self.cooldown_minutes
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or cooldown < 0:
            raise ValueError(f"cooldown_minutes: must be a number >= 0, got {cooldown!r}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata: expected a mapping, got {self.metadata!r}")

    @property
    def cooldown(self) -> timedelta:
        return timedelta(minutes=self.cooldown_minutes)


class EscalationRule(RoutingRule):
    """Matches contexts that should escalate under ``config.policy_name``.

    ``EscalationRule(config=EscalationRuleConfig(...))`` or, for short,
    ``EscalationRule(policy_name="critical_alerts", severity_filter=["critical"])``.
    ``clock`` (default: the system clock) times the cooldown; pass the engine's clock in tests.
    """

    def __init__(
        self, config: EscalationRuleConfig | None = None, *, clock: Clock | None = None, **config_fields: Any
    ) -> None:
        if config is None:
            config = EscalationRuleConfig(**config_fields)
        elif config_fields:
            raise TypeError("pass either config= or the config's fields, not both")
        if not isinstance(config, EscalationRuleConfig):
            raise TypeError(f"config: expected an EscalationRuleConfig, got {config!r}")
        self.config = config
        self.clock = clock or SYSTEM_CLOCK
        self._last_trigger: dict[str, datetime] = {}

    @property
    def policy_name(self) -> str:
        return self.config.policy_name

    @property
    def trigger_type(self) -> EscalationTrigger:
        return self.config.trigger_type

    def matches_severity(self, context: dict[str, Any]) -> bool:
        if not self.config.severity_filter:
            return True
        return normalize_severity(context.get("severity")) in self.config.severity_filter

    def cooldown_until(self, context: dict[str, Any]) -> datetime | None:
        """When the cooldown of this context's incident ends (``None``: not cooling down)."""
        last = self._last_trigger.get(incident_key(context))
        if last is None or self.config.cooldown_minutes <= 0:
            return None
        until = last + self.config.cooldown
        return until if self.clock.now() < until else None

    def in_cooldown(self, context: dict[str, Any]) -> bool:
        return self.cooldown_until(context) is not None

    def evaluate(self, context: dict[str, Any]) -> bool:
        return self.matches_severity(context) and not self.in_cooldown(context)

    def record_trigger(self, context: dict[str, Any], at: datetime | None = None) -> None:
        """Start the cooldown of this context's incident (at ``at``, default now)."""
        now = at or self.clock.now()
        if len(self._last_trigger) >= _PRUNE_AT:  # forget incidents whose cooldown has ended
            horizon = now - self.config.cooldown
            self._last_trigger = {k: t for k, t in self._last_trigger.items() if t > horizon}
        self._last_trigger[incident_key(context)] = now

    def reset(self, context: dict[str, Any] | None = None) -> None:
        """Forget the cooldown of one incident (or of all)."""
        if context is None:
            self._last_trigger.clear()
        else:
            self._last_trigger.pop(incident_key(context), None)

    @property
    def description(self) -> str:
        severities = ", ".join(self.config.severity_filter or []) or "any"
        text = f"escalate to {self.config.policy_name!r} on severity in [{severities}]"
        if self.config.cooldown_minutes:
            text += f", cooldown {self.config.cooldown_minutes:g} min"
        return text
