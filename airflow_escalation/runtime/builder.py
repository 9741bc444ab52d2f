"""The one engine builder from the policies config, and the one trigger path with its gates.

The service (``service/app.py`` and its trigger route), the manager and the CLI ask these; none
builds an engine or gates a trigger on its own.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from airflow_escalation.core.clock import Clock
from airflow_escalation.core.models import EscalationPolicy, EscalationResult, dag_id_of
from airflow_escalation.core.types import EscalationTrigger
from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig, NotificationHandler
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.stores.base import BaseEscalationStore

log = logging.getLogger("airflow_escalation.service")


def scheduler_config_for(
    cfg: EscalationPolicyConfig,
    *,
    clock: Clock | None = None,
    owned: Mapping[str, Any] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> SchedulerConfig:
    """The scheduler settings of ``cfg``: its ``scheduler_type``, ``cleanup_interval_minutes``
    and ``scheduler_config``, under the settings the caller ``owned`` (the service's
    ``[escalation]`` section owns the scheduler type, interval and concurrency). A fake clock
    gets the in-memory scheduler. ``scheduler_config`` that SchedulerConfig refuses raises
    ``ValueError``, or, with ``on_error``, is reported there and left out."""
    owned = dict(owned or {})
    given = {"scheduler_type": cfg.scheduler_type, **(cfg.scheduler_config or {})}
    overridden = sorted(k for k, v in given.items() if k in owned and v != owned[k])
    if overridden:  # said, not silently dropped
        log.info("escalation: the policies config's %s give way to the caller's settings", ", ".join(overridden))
    if clock is not None and clock.is_fake:
        owned["scheduler_type"] = "memory"  # the fake clock is moved by hand, never by a timer
    base: dict[str, Any] = {
        "scheduler_type": cfg.scheduler_type,
        "cleanup_interval_seconds": cfg.cleanup_interval_minutes * 60,
    }
    base.update(owned)
    extra = {k: v for k, v in (cfg.scheduler_config or {}).items() if k not in owned}
    try:
        return SchedulerConfig(**{**base, **extra})
    except (TypeError, ValueError) as exc:
        if on_error is None:
            raise ValueError(f"scheduler_config: {exc}") from None
        on_error(f"scheduler_config: {exc}; using the defaults")
        return SchedulerConfig(**base)


def build_engine(
    cfg: EscalationPolicyConfig,
    *,
    store: BaseEscalationStore | None = None,
    clock: Clock | None = None,
    handler: NotificationHandler | None = None,
    scheduler_owned: Mapping[str, Any] | None = None,
    on_error: Callable[[str], None] | None = None,
    send_before_return: bool = True,
) -> EscalationEngine:
    """An engine as ``cfg`` describes it, with every policy of ``cfg`` registered.

    ``store`` replaces the config's store section (the service stores in the metadata database);
    ``scheduler_owned`` and ``on_error``: see :func:`scheduler_config_for`;
    ``send_before_return``: see ``EscalationEngineConfig``."""
    engine = EscalationEngine(
        EscalationEngineConfig(
            store_type=cfg.store_type,
            store_config=dict(cfg.store_config),
            store=store,
            scheduler_config=scheduler_config_for(cfg, clock=clock, owned=scheduler_owned, on_error=on_error),
            default_notification_handler=handler,
            check_business_hours=cfg.check_business_hours,
            metrics_enabled=cfg.metrics_enabled,
            clock=clock,
            cleanup_after_days=cfg.retention_days,
            send_before_return=send_before_return,
        )
    )
    for policy in cfg.policies.values():
        engine.register_policy(policy)
    from airflow_escalation.oncall.runtime import OnCall

    engine.set_oncall(OnCall(cfg.oncall, engine.store, engine.clock))  # schedules, silences (docs/oncall.md)
    return engine


async def trigger_with_gates(
    engine: EscalationEngine,
    cfg: EscalationPolicyConfig,
    incident_id: str,
    context: dict[str, Any] | None = None,
    policy_name: str | None = None,
    trigger_type: EscalationTrigger | str = EscalationTrigger.UNACKNOWLEDGED,
    *,
    policy: EscalationPolicy | dict[str, Any] | None = None,
    triggered_by: str = "system",
) -> EscalationResult:
    """Trigger through the config's gates: ``global_enabled``, the ``default_policy`` when no
    policy is named, and ``max_concurrent_escalations`` (counted by the store, no record loaded;
    a trigger that joins an open escalation is never refused for capacity). An inline ``policy``
    passes the capacity gate (it is the caller's own ladder)."""
    if not cfg.global_enabled:
        return EscalationResult.failure_result(
            None,
            "trigger",
            "escalation is disabled globally (global_enabled: false in the policies config)",
            code="filtered",
        )
    name = policy_name
    if name is None and policy is None and cfg.default_policy in engine.policies:
        name = cfg.default_policy
    calls = engine.store_calls
    if policy is None and cfg.max_concurrent_escalations:
        if await calls(engine.store.count_active) >= cfg.max_concurrent_escalations:
            if await calls(engine.store.find_open, incident_id, name or "", dag_id_of(context)) is None:
                return EscalationResult.failure_result(
                    None,
                    "trigger",
                    f"max_concurrent_escalations ({cfg.max_concurrent_escalations}) reached",
                    code="capacity",
                )
    return await engine.trigger(incident_id, context, name, trigger_type, policy=policy, triggered_by=triggered_by)
