"""airflow-escalation: multi-level notification escalation for Apache Airflow.

The domain (``core/``), the runtime, the stores and the schedulers import nothing from Airflow;
the Airflow layer (hooks, notifiers, operators, sensors, triggers, the API-server plugin) adapts
them. docs/architecture.md has the rooms and the arrows.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Every public name is imported on first use (PEP 562): Airflow imports
# ``airflow_escalation.get_provider_info`` in every command that discovers providers, and that
# imports this package first, so it must stay cheap.
_LAZY: dict[str, str] = {
    "Clock": "airflow_escalation.core.clock",
    "FakeClock": "airflow_escalation.core.clock",
    "EscalationEngine": "airflow_escalation.runtime.engine",
    "EscalationEngineConfig": "airflow_escalation.runtime.engine",
    "EscalationPolicyConfig": "airflow_escalation.runtime.policy_config",
    "EscalationPolicyManager": "airflow_escalation.runtime.manager",
    "Delivery": "airflow_escalation.core.models",
    "EscalationLevel": "airflow_escalation.core.models",
    "EscalationPolicy": "airflow_escalation.core.models",
    "EscalationRecord": "airflow_escalation.core.models",
    "EscalationResult": "airflow_escalation.core.models",
    "EscalationStats": "airflow_escalation.core.models",
    "EscalationTarget": "airflow_escalation.core.models",
    "EscalationStateMachine": "airflow_escalation.core.states",
    "InvalidTransition": "airflow_escalation.core.states",
    "StateTransition": "airflow_escalation.core.states",
    "BusinessHoursMode": "airflow_escalation.core.types",
    "DelayBasis": "airflow_escalation.core.types",
    "DeliveryState": "airflow_escalation.core.types",
    "EscalationEvent": "airflow_escalation.core.types",
    "EscalationState": "airflow_escalation.core.types",
    "EscalationTrigger": "airflow_escalation.core.types",
    "TargetType": "airflow_escalation.core.types",
    "APSchedulerScheduler": "airflow_escalation.scheduling",
    "AsyncioScheduler": "airflow_escalation.scheduling",
    "BaseEscalationScheduler": "airflow_escalation.scheduling",
    "InMemoryScheduler": "airflow_escalation.scheduling",
    "SchedulerConfig": "airflow_escalation.scheduling",
    "SchedulerType": "airflow_escalation.scheduling",
    "create_scheduler": "airflow_escalation.scheduling",
    "BaseEscalationStore": "airflow_escalation.stores",
    "InMemoryEscalationStore": "airflow_escalation.stores",
    "StoreError": "airflow_escalation.stores",
    "create_store": "airflow_escalation.stores",
    # durable stores load their drivers only when asked for
    "SQLiteEscalationStore": "airflow_escalation.stores.sql",
    "SQLEscalationStore": "airflow_escalation.stores.sql",
    "RedisEscalationStore": "airflow_escalation.stores.redis",
    "EscalationRule": "airflow_escalation.routing",
    "EscalationRuleConfig": "airflow_escalation.routing",
    "EscalationAction": "airflow_escalation.routing",
    "create_escalation_route": "airflow_escalation.routing",
    "setup_escalation_with_existing_actions": "airflow_escalation.routing",
}

if TYPE_CHECKING:
    from airflow_escalation.core.clock import Clock, FakeClock
    from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
    from airflow_escalation.runtime.manager import EscalationPolicyManager
    from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
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
    from airflow_escalation.routing import (
        EscalationAction,
        EscalationRule,
        EscalationRuleConfig,
        create_escalation_route,
        setup_escalation_with_existing_actions,
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
    from airflow_escalation.stores.redis import RedisEscalationStore
    from airflow_escalation.stores.sql import SQLEscalationStore, SQLiteEscalationStore


def _distribution_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("airflow-provider-escalation")
    except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        version = _distribution_version()
        globals()["__version__"] = version
        return version
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_escalation' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "__version__"])


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
