"""Schedulers: they only wake the engine; the store holds every due time."""

from airflow_escalation.scheduling.apscheduler import APSchedulerScheduler
from airflow_escalation.scheduling.asyncio import AsyncioScheduler
from airflow_escalation.scheduling.base import BaseEscalationScheduler, SchedulerConfig, SchedulerType
from airflow_escalation.scheduling.factory import create_scheduler
from airflow_escalation.scheduling.memory import InMemoryScheduler

__all__ = [
    "APSchedulerScheduler",
    "AsyncioScheduler",
    "BaseEscalationScheduler",
    "InMemoryScheduler",
    "SchedulerConfig",
    "SchedulerType",
    "create_scheduler",
]
