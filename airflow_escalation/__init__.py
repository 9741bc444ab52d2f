"""airflow-escalation: multi-level notification escalation for Apache Airflow.

The core (engine, models, stores, schedulers) imports nothing from Airflow; the Airflow layer
(hooks, notifiers, operators, sensors, triggers, the API-server plugin) adapts it.
"""

from airflow_escalation.core.clock import Clock, FakeClock
from airflow_escalation.core.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.core.manager import EscalationPolicyConfig, EscalationPolicyManager
from airflow_escalation.core.models import (
    Delivery,
    EscalationLevel,
    EscalationPolicy,
    EscalationRecord,
    EscalationResult,
    EscalationStats,
    EscalationTarget,
)
from airflow_escalation.core.states import EscalationStateMachine, InvalidTransition, StateTransition
from airflow_escalation.core.types import (
    BusinessHoursMode,
    DelayBasis,
    DeliveryState,
    EscalationEvent,
    EscalationState,
    EscalationTrigger,
    TargetType,
)
from airflow_escalation.scheduling import (
    APSchedulerScheduler,
    AsyncioScheduler,
    BaseEscalationScheduler,
    InMemoryScheduler,
    SchedulerConfig,
    SchedulerType,
    create_scheduler,
)
from airflow_escalation.stores import BaseEscalationStore, InMemoryEscalationStore, StoreError, create_store

__version__ = "0.1.0"


def __getattr__(name: str):
    # durable stores load their drivers lazily: importing the package stays fast
    if name in ("SQLiteEscalationStore", "SQLEscalationStore"):
        from airflow_escalation.stores import sql

        return getattr(sql, name)
    if name == "RedisEscalationStore":
        from airflow_escalation.stores.redis import RedisEscalationStore

        return RedisEscalationStore
    if name in ("EscalationRule", "EscalationRuleConfig", "EscalationAction", "create_escalation_route",
                "setup_escalation_with_existing_actions"):
        from airflow_escalation import routing

        return getattr(routing, name)
    raise AttributeError(f"module 'airflow_escalation' has no attribute {name!r}")


__all__ = [
    "APSchedulerScheduler",
    "AsyncioScheduler",
    "BaseEscalationScheduler",
    "BaseEscalationStore",
    "BusinessHoursMode",
    "Clock",
    "DelayBasis",
    "Delivery",
    "DeliveryState",
    "EscalationAction",
    "EscalationEngine",
    "EscalationEngineConfig",
    "EscalationEvent",
    "EscalationLevel",
    "EscalationPolicy",
    "EscalationPolicyConfig",
    "EscalationPolicyManager",
    "EscalationRecord",
    "EscalationResult",
    "EscalationRule",
    "EscalationRuleConfig",
    "EscalationState",
    "EscalationStateMachine",
    "EscalationStats",
    "EscalationTarget",
    "EscalationTrigger",
    "FakeClock",
    "InMemoryEscalationStore",
    "InMemoryScheduler",
    "InvalidTransition",
    "RedisEscalationStore",
    "SQLEscalationStore",
    "SQLiteEscalationStore",
    "SchedulerConfig",
    "SchedulerType",
    "StateTransition",
    "StoreError",
    "TargetType",
    "create_escalation_route",
    "create_scheduler",
    "create_store",
    "setup_escalation_with_existing_actions",
]
