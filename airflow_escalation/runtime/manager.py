"""``EscalationPolicyManager``: many policies, one engine, configured from a dict or YAML."""

from __future__ import annotations

import os
from typing import Any

from airflow_escalation.core.clock import Clock
from airflow_escalation.core.models import EscalationPolicy, EscalationResult, EscalationStats
from airflow_escalation.core.types import EscalationTrigger
from airflow_escalation.runtime.builder import build_engine, trigger_with_gates
from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig, NotificationHandler
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig

__all__ = ["EscalationPolicyConfig", "EscalationPolicyManager"]


class EscalationPolicyManager:
    """Holds the policies, builds the engine from the config and forwards calls to it."""

    def __init__(
        self,
        config: EscalationPolicyConfig | None = None,
        *,
        clock: Clock | None = None,
        engine_config: EscalationEngineConfig | None = None,
    ) -> None:
        self._config = config or EscalationPolicyConfig()
        self._clock = clock
        self._engine_config = engine_config
        self._engine: EscalationEngine | None = None
        self._handler: NotificationHandler | None = None

    @property
    def config(self) -> EscalationPolicyConfig:
        return self._config

    @property
    def engine(self) -> EscalationEngine | None:
        return self._engine

    @property
    def is_running(self) -> bool:
        return self._engine is not None and self._engine.is_running

    def configure(self, config: EscalationPolicyConfig) -> None:
        if self.is_running:
            raise RuntimeError("stop the manager before reconfiguring it")
        self._config = config
        self._engine = None

    def add_policy(self, policy: EscalationPolicy | dict[str, Any]) -> None:
        policy = EscalationPolicy.from_dict(policy)
        self._config.add_policy(policy)
        if self._engine is not None:
            self._engine.register_policy(policy)

    def remove_policy(self, policy_name: str) -> bool:
        removed = self._config.policies.pop(policy_name, None) is not None
        if self._engine is not None:
            self._engine.unregister_policy(policy_name)
        return removed

    def get_policy(self, policy_name: str) -> EscalationPolicy | None:
        return self._config.policies.get(policy_name)

    def list_policies(self) -> list[str]:
        return list(self._config.policies)

    def set_notification_handler(self, handler: NotificationHandler) -> None:
        self._handler = handler
        if self._engine is not None:
            self._engine.set_notification_handler(handler)

    def _build_engine(self) -> EscalationEngine:
        if self._engine_config is not None:  # given whole (tests, embedding)
            engine = EscalationEngine(self._engine_config)
            for policy in self._config.policies.values():
                engine.register_policy(policy)
        else:
            engine = build_engine(self._config, clock=self._clock)
        if self._handler is not None:
            engine.set_notification_handler(self._handler)
        return engine

    def get_engine(self) -> EscalationEngine:
        """The engine, built on first use (so handlers can be set before ``start``)."""
        if self._engine is None:
            self._engine = self._build_engine()
        return self._engine

    async def start(self) -> None:
        await self.get_engine().start()

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.stop()

    async def trigger(
        self,
        incident_id: str,
        context: dict[str, Any] | None = None,
        policy_name: str | None = None,
        trigger_type: EscalationTrigger | str = EscalationTrigger.UNACKNOWLEDGED,
        **kwargs: Any,
    ) -> EscalationResult:
        """Trigger under ``policy_name`` (default: the config's ``default_policy``), through the
        config's gates (:func:`~airflow_escalation.runtime.builder.trigger_with_gates`)."""
        return await trigger_with_gates(
            self.get_engine(), self._config, incident_id, context, policy_name, trigger_type, **kwargs
        )

    async def acknowledge(
        self, record_id: str, acknowledged_by: str = "system", note: str | None = None
    ) -> EscalationResult:
        return await self.get_engine().acknowledge(record_id, acknowledged_by, note)

    async def resolve(self, record_id: str, resolved_by: str = "system", note: str | None = None) -> EscalationResult:
        return await self.get_engine().resolve(record_id, resolved_by, note)

    async def cancel(self, record_id: str, cancelled_by: str = "system", reason: str = "") -> EscalationResult:
        return await self.get_engine().cancel(record_id, cancelled_by, reason)

    def get_stats(self) -> EscalationStats:
        return self._engine.get_stats() if self._engine is not None else EscalationStats()

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> EscalationPolicyManager:
        return cls(EscalationPolicyConfig.from_dict(data), **kwargs)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str], **kwargs: Any) -> EscalationPolicyManager:
        """Load a YAML file path or YAML text (the spec's ``escalation:`` block as written)."""
        return cls(EscalationPolicyConfig.from_yaml(source), **kwargs)
