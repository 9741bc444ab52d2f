"""``EscalationAction``: a routing action that starts an escalation on an engine."""

from __future__ import annotations

import asyncio
import string
from typing import TYPE_CHECKING, Any

from airflow_escalation.core.models import EscalationResult
from airflow_escalation.core.types import EscalationTrigger

if TYPE_CHECKING:
    from airflow_escalation.runtime.engine import EscalationEngine
    from airflow_escalation.routing.escalation_rule import EscalationRule

__all__ = ["EscalationAction"]


class EscalationAction:
    """``await action.execute(context)`` triggers ``policy_name`` for the incident the context names.

    The incident id is ``incident_id_template.format_map(context)`` (default: the checkpoint
    name). A context that lacks a field the template needs gives a failed ``EscalationResult``
    (``code == "invalid"``), never an exception. ``cooldown_rule`` (an ``EscalationRule``) has
    its cooldown started whenever the trigger succeeds. ``execute_sync`` is the blocking form
    for code that has no event loop.
    """

    action_type = "escalation"

    def __init__(
        self,
        engine: EscalationEngine,
        policy_name: str,
        incident_id_template: str = "{checkpoint_name}",
        trigger_type: EscalationTrigger | str = EscalationTrigger.UNACKNOWLEDGED,
        *,
        name: str | None = None,
        triggered_by: str = "routing",
        cooldown_rule: EscalationRule | None = None,
    ) -> None:
        if not callable(getattr(engine, "trigger", None)):
            raise TypeError(f"engine: expected an EscalationEngine, got {engine!r}")
        if not isinstance(policy_name, str) or not policy_name:
            raise ValueError(f"policy_name: must be a non-empty string, got {policy_name!r}")
        if not isinstance(incident_id_template, str) or not incident_id_template:
            raise ValueError(f"incident_id_template: must be a non-empty string, got {incident_id_template!r}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(incident_id_template) if f is not None]
        except ValueError as exc:
            raise ValueError(f"incident_id_template: {exc} in {incident_id_template!r}") from None
        if any(f == "" or f.isdigit() for f in fields):
            raise ValueError(
                f"incident_id_template: use named fields like {{checkpoint_name}}, got {incident_id_template!r}"
            )
        try:
            self.trigger_type = EscalationTrigger(
                trigger_type.value if isinstance(trigger_type, EscalationTrigger) else trigger_type
            )
        except ValueError:
            allowed = ", ".join(t.value for t in EscalationTrigger)
            raise ValueError(f"trigger_type: unknown value {trigger_type!r} (allowed: {allowed})") from None
        self.engine = engine
        self.policy_name = policy_name
        self.incident_id_template = incident_id_template
        self.triggered_by = triggered_by
        self.cooldown_rule = cooldown_rule
        self._name = name or f"escalate:{policy_name}"

    @property
    def name(self) -> str:
        return self._name

    def incident_id(self, context: dict[str, Any]) -> str:
        """The incident id for ``context``; ``KeyError``/``ValueError`` when it cannot be formed."""
        return self.incident_id_template.format_map(context)

    async def execute(self, context: dict[str, Any] | None = None) -> EscalationResult:
        context = dict(context or {})
        try:
            incident_id = self.incident_id(context)
        except KeyError as exc:
            return EscalationResult.failure_result(
                None,
                "trigger",
                f"incident_id_template {self.incident_id_template!r} needs context key {exc.args[0]!r}, "
                f"which the context lacks (keys: {sorted(map(str, context))})",
                code="invalid",
            )
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            return EscalationResult.failure_result(
                None,
                "trigger",
                f"incident_id_template {self.incident_id_template!r} cannot be formatted "
                f"from the context: {type(exc).__name__}: {exc}",
                code="invalid",
            )
        result = await self.engine.trigger(
            incident_id, context, self.policy_name, self.trigger_type, triggered_by=self.triggered_by
        )
        if result.success and self.cooldown_rule is not None:
            self.cooldown_rule.record_trigger(context)
        return result

    def execute_sync(self, context: dict[str, Any] | None = None) -> EscalationResult:
        """Blocking ``execute`` for code without a running event loop (waits for the deliveries)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "execute_sync() cannot run inside a running event loop; use `await action.execute(context)`"
            )

        async def run() -> EscalationResult:
            result = await self.execute(context)
            await self.engine.drain()
            return result

        return asyncio.run(run())

    def __repr__(self) -> str:
        return (
            f"EscalationAction(policy_name={self.policy_name!r}, "
            f"incident_id_template={self.incident_id_template!r}, trigger_type={self.trigger_type.value!r})"
        )
