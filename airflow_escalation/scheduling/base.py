"""The scheduler contract: a scheduler only wakes the engine.

The store holds every due time; a scheduler is told the earliest one (``wake_at``) and calls the
engine's wake callback then, and also every ``check_interval_seconds`` as a safety sweep that
catches a wake-up lost to a restart or to another replica's write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Awaitable, Callable

from airflow_escalation.core.clock import SYSTEM_CLOCK, Clock

WakeCallback = Callable[[], Awaitable[Any]]


class SchedulerType(str, Enum):
    MEMORY = "memory"
    ASYNCIO = "asyncio"
    APSCHEDULER = "apscheduler"


@dataclass
class SchedulerConfig:
    """How the engine is woken and how it delivers.

    ``max_concurrent_jobs`` bounds concurrent deliveries; ``job_timeout_seconds`` is one delivery
    attempt's time limit; a failed attempt is retried after ``retry_delay_seconds`` doubling each
    time (capped at ``max_retry_delay_seconds``) up to ``max_attempts`` attempts.
    """

    scheduler_type: SchedulerType | str = SchedulerType.ASYNCIO
    check_interval_seconds: float = 10
    max_concurrent_jobs: int = 100
    job_timeout_seconds: float = 30
    retry_delay_seconds: float = 30
    max_retry_delay_seconds: float = 900
    max_attempts: int = 5
    lease_seconds: float = 120
    batch_size: int = 200
    cleanup_interval_seconds: float = 3600
    apscheduler_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.scheduler_type = SchedulerType(self.scheduler_type)
        except ValueError:
            allowed = ", ".join(t.value for t in SchedulerType)
            raise ValueError(f"scheduler_type: unknown value {self.scheduler_type!r} (allowed: {allowed})") from None
        for name in ("check_interval_seconds", "job_timeout_seconds", "lease_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("max_concurrent_jobs", "max_attempts", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)!r}")


class BaseEscalationScheduler(ABC):
    """Wakes ``callback`` at the earliest time it was told, and every check interval."""

    def __init__(self, config: SchedulerConfig | None = None, callback: WakeCallback | None = None,
                 clock: Clock | None = None) -> None:
        self._config = config or SchedulerConfig()
        self._callback = callback
        self._clock = clock or SYSTEM_CLOCK
        self._running = False

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @property
    def is_running(self) -> bool:
        return self._running

    def set_callback(self, callback: WakeCallback) -> None:
        self._callback = callback

    @abstractmethod
    def start(self) -> None:
        """Begin waking (called from inside the running event loop)."""

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def wake_at(self, when: datetime) -> None:
        """Make sure the callback runs at ``when`` (or now, if it has passed)."""
