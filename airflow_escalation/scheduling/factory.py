"""``create_scheduler``: a scheduler by type."""

from __future__ import annotations

from airflow_escalation.core.clock import Clock
from airflow_escalation.scheduling.base import (
    BaseEscalationScheduler,
    SchedulerConfig,
    SchedulerType,
    WakeCallback,
)


def create_scheduler(
    config: SchedulerConfig | None = None, callback: WakeCallback | None = None, clock: Clock | None = None
) -> BaseEscalationScheduler:
    config = config or SchedulerConfig()
    kind = SchedulerType(config.scheduler_type)
    if kind is SchedulerType.MEMORY:
        from airflow_escalation.scheduling.memory import InMemoryScheduler as cls
    elif kind is SchedulerType.ASYNCIO:
        from airflow_escalation.scheduling.asyncio import AsyncioScheduler as cls
    else:
        from airflow_escalation.scheduling.apscheduler import APSchedulerScheduler as cls
    return cls(config, callback, clock)
