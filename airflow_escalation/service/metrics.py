"""The engine's metrics through Airflow's own ``Stats`` (docs/metrics.md).

:class:`AirflowStatsMetrics` is the :class:`~airflow_escalation.runtime.metrics.EngineMetrics` the
service installs: whatever the deployment configured under ``[metrics]`` (StatsD, Datadog's
DogStatsD, OpenTelemetry) receives the escalation metrics with Airflow's own. Each count is
emitted twice, as Airflow does for its own metrics: once with the policy (or channel) as a tag,
for backends with tags (OpenTelemetry, DogStatsD, InfluxDB-style StatsD), and once with it in the
name, for plain StatsD. ``metrics_enabled: false`` in the policies file turns them off.

Airflow 3.2 and later expose ``Stats`` as the module functions of ``airflow.observability.stats``
(the API server initializes it from ``[metrics]`` in its lifespan); 3.0 and 3.1 as the
``airflow.stats.Stats`` object. :func:`airflow_stats` takes whichever this Airflow has.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_escalation.runtime.metrics import EngineMetrics

if TYPE_CHECKING:
    from airflow_escalation.runtime.engine import EscalationEngine
    from airflow_escalation.core.models import Delivery, EscalationRecord
    from airflow_escalation.service.delivery import ChannelDelivery

log = logging.getLogger("airflow_escalation.metrics")

PREFIX = "escalation"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")  # no dots either: a name part stays one StatsD segment


def airflow_stats() -> Any:
    """Airflow's ``Stats``: an object with ``incr``, ``gauge`` and ``timing``."""
    try:
        from airflow.observability import stats  # Airflow 3.2+

        if hasattr(stats, "incr"):
            return stats
    except ImportError:
        pass
    from airflow.stats import Stats  # Airflow 3.0, 3.1

    return Stats


def name_part(value: str) -> str:
    """A policy or channel name as one segment of a StatsD name (``[a-zA-Z0-9_-]``, at most 100)."""
    return _UNSAFE.sub("_", value)[:100] or "_"


class AirflowStatsMetrics(EngineMetrics):
    """Emit the engine's measurements through ``stats`` (Airflow's ``Stats``).

    ``channel_of(delivery)`` names a delivery's channel (its connection type, ``handler`` for a
    target without a connection). The ``escalation.active`` gauge is read from the store after
    changes, at most every ``active_every`` seconds (and once more after the last change of a
    burst): every replica reports the same store-wide count.
    """

    def __init__(
        self,
        stats: Any,
        *,
        count_active: Callable[[], Any],
        channel_of: Callable[[Delivery], str],
        active_every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self._count_active = count_active
        self._channel_of = channel_of
        self._active_every = active_every
        self._monotonic = monotonic
        self._last_active: float | None = None
        self._refresh: asyncio.Future[None] | None = None
        self._again = False

    def _incr(self, name: str, tag: str, value: str) -> None:
        self.stats.incr(f"{PREFIX}.{name}", tags={tag: value})
        self.stats.incr(f"{PREFIX}.{name}.{name_part(value)}")

    def escalation(self, event: str, policy_name: str) -> None:
        self._incr(event, "policy", policy_name)

    def time_to(self, what: str, policy_name: str, seconds: float) -> None:
        elapsed = timedelta(seconds=max(0.0, seconds))
        self.stats.timing(f"{PREFIX}.time_to_{what}", elapsed, tags={"policy": policy_name})
        self.stats.timing(f"{PREFIX}.time_to_{what}.{name_part(policy_name)}", elapsed)

    def delivery(self, outcome: str, delivery: Delivery) -> None:
        self._incr(f"delivery.{outcome}", "channel", self._channel_of(delivery))

    def lateness(self, seconds: float) -> None:
        self.stats.timing(f"{PREFIX}.timer_lateness", timedelta(seconds=seconds))

    # ------------------------------------------------------------------ active gauge
    def changed(self, record: EscalationRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._refresh is not None and not self._refresh.done():
            self._again = True  # a refresh is on its way: one more after it
            return
        wait = 0.0
        if self._last_active is not None:
            wait = max(0.0, self._last_active + self._active_every - self._monotonic())
        self._refresh = loop.create_task(self._refresh_active(wait))

    async def _refresh_active(self, wait: float) -> None:
        if wait:
            await asyncio.sleep(wait)
        self._again = False
        self._last_active = self._monotonic()
        try:
            count = self._count_active()
            if asyncio.iscoroutine(count):
                count = await count
            self.stats.gauge(f"{PREFIX}.active", int(count))
        except Exception:  # a gauge never breaks anything
            log.warning("cannot refresh the escalation.active gauge", exc_info=True)
        if self._again:
            self._again = False
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_active(self._active_every))

    async def refresh_active(self) -> None:
        """Emit the active gauge now (and wait for it)."""
        await self._refresh_active(0.0)


def install_metrics(engine: EscalationEngine, delivery: ChannelDelivery | None = None) -> AirflowStatsMetrics | None:
    """Report ``engine``'s metrics through Airflow's ``Stats`` (unless ``metrics_enabled`` is off)."""
    store = engine.store

    async def count_active() -> int:
        if store.blocking:
            return int(await asyncio.to_thread(store.count_active))
        return int(store.count_active())

    def channel_of(item: Delivery) -> str:
        conn_id = item.target.conn_id
        if not conn_id:
            return "handler"
        known = delivery.resolver.known_conn_type(conn_id) if delivery is not None else None
        return known or "connection"

    metrics = AirflowStatsMetrics(airflow_stats(), count_active=count_active, channel_of=channel_of)
    engine.set_metrics(metrics)
    return metrics if engine.metrics is metrics else None
