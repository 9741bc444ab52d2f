"""Wire the channels into the service's engine.

:func:`install_delivery` (called by the service when it builds its engine) adds a
:class:`~airflow_escalation.channels.ChannelResolver`: targets that name an Airflow connection
(``conn_id``) are delivered by the channel for that connection's type (HTTP, SMTP, Slack,
PagerDuty); every other target still goes to the engine's notification handler (the service's
default logs it). Messages link to the Airflow UI and carry one-click acknowledge/resolve links
signed with the action secret (:func:`default_action_secret`).

PagerDuty keeps an alert per escalation (``dedup_key`` = the record id). The delivery listens
to the engine's committed changes (``engine.add_listener``): when an escalation is acknowledged,
resolved (by a person, by ``auto_resolve_minutes`` or a notify-only level) or cancelled,
:meth:`ChannelDelivery.follow_up` sends PagerDuty the matching ``acknowledge``/``resolve`` event
for every ``pagerduty_events`` connection the record was delivered through. Whichever route or
page made the change (REST API, one-click link, UI, CLI), nothing else has to call it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable

from airflow_escalation.channels.base import ChannelRegistry, ChannelResolver, PermanentChannelError
from airflow_escalation.core.types import DeliveryState

if TYPE_CHECKING:
    from airflow_escalation.runtime.engine import EscalationEngine
    from airflow_escalation.core.models import Delivery, EscalationRecord

log = logging.getLogger("airflow_escalation.delivery")

#: engine actions that quiet or close a remote incident, and what PagerDuty is told
FOLLOW_UP_ACTIONS = {"acknowledge": "acknowledge", "resolve": "resolve", "cancel": "resolve"}
#: record states after which the remote incident is resolved, whatever the action was
_CLOSED = {"resolved", "cancelled"}
_DELIVERED = {DeliveryState.SENT, DeliveryState.UNKNOWN}  # UNKNOWN: may have gone out


def default_action_secret() -> str | None:
    """The secret one-click links are signed with (``links.default_link_secret``), or None."""
    try:
        from airflow_escalation.service.links import default_link_secret
    except ImportError:  # pragma: no cover - the links module ships with the service
        return None
    try:
        return default_link_secret()
    except Exception as exc:  # noqa: BLE001 - no secret configured, or outside Airflow
        log.warning("escalation notifications carry no one-click acknowledge/resolve links: %s", exc)
        return None


def _names_connections(record: EscalationRecord) -> bool:
    """Whether the record's policy snapshot has a target with a conn_id (else nothing to tell)."""
    snapshot = record.policy_snapshot
    if not snapshot:
        return True  # no snapshot to judge by: look at the deliveries
    for level in snapshot.get("levels") or ():
        for target in level.get("targets") or ():
            if isinstance(target, dict) and target.get("conn_id"):
                return True
    return False


class ChannelDelivery:
    """The channel resolver installed on an engine, and the PagerDuty follow-ups."""

    def __init__(
        self,
        engine: EscalationEngine,
        resolver: ChannelResolver,
        *,
        follow_up_attempts: int = 3,
        follow_up_retry_seconds: float = 1.0,
        in_flight_wait_seconds: float = 30.0,
    ) -> None:
        self.engine = engine
        self.resolver = resolver
        self._attempts = max(1, follow_up_attempts)
        self._retry = follow_up_retry_seconds
        self._in_flight_wait = in_flight_wait_seconds

    # ------------------------------------------------------------------------- listener
    def on_change(self, record: EscalationRecord, action: str) -> Awaitable[list[str]] | None:
        """Engine listener: a coroutine telling PagerDuty, when ``action`` quieted or closed the
        record; None (no task, no store read) for every other change."""
        follow = "resolve" if record.state in _CLOSED else FOLLOW_UP_ACTIONS.get(action)
        if follow is None or not _names_connections(record):
            return None
        return self.follow_up(record, follow)

    # ------------------------------------------------------------------------- follow-up
    async def follow_up(self, record: EscalationRecord | str, action: str) -> list[str]:
        """Tell every remote incident service the record reached (PagerDuty) about ``action``.

        ``action`` is ``acknowledge`` or ``resolve`` (``cancel`` counts as ``resolve``). Returns
        the conn_ids told. Never raises: failures are logged (after ``follow_up_attempts``).
        """
        action = FOLLOW_UP_ACTIONS.get(action, action)
        if action not in ("acknowledge", "resolve"):
            raise ValueError(f"action must be acknowledge, resolve or cancel, got {action!r}")
        try:
            if isinstance(record, str):
                found = await self._store(self.engine.store.get, record)
                if found is None:
                    log.warning("follow-up %s: escalation %s not found", action, record)
                    return []
                record = found
            deliveries = await self._deliveries(record.id)
        except Exception:
            log.exception(
                "follow-up %s of escalation %s: cannot read its deliveries", action, getattr(record, "id", record)
            )
            return []

        # one event per connection (a routing key dedups by record id anyway)
        by_conn: dict[str, Delivery] = {}
        for delivery in deliveries:
            conn_id = delivery.target.conn_id
            if conn_id and delivery.state in _DELIVERED and conn_id not in by_conn:
                by_conn[conn_id] = delivery
        outcomes = await asyncio.gather(*(self._tell(record, d, action) for d in by_conn.values()))
        return [conn_id for conn_id, told in zip(by_conn, outcomes) if told]

    async def _deliveries(self, record_id: str) -> list[Delivery]:
        """The record's deliveries, once those still in flight have finished (or a timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._in_flight_wait
        while True:
            deliveries = await self._store(self.engine.store.get_deliveries, record_id)
            # being sent, or written with the change and not yet tried (a notify-only level
            # resolves in the same write that queues its notifications)
            waiting = [
                d
                for d in deliveries
                if d.target.conn_id
                and (d.state is DeliveryState.SENDING or (d.state is DeliveryState.PENDING and d.attempts == 0))
            ]
            if not waiting or loop.time() >= deadline:
                return deliveries
            await asyncio.sleep(0.2)

    async def _tell(self, record: EscalationRecord, delivery: Delivery, action: str) -> bool:
        target = delivery.target
        try:
            info, channel = await self.resolver.channel_for(target.conn_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("follow-up %s of escalation %s via %r skipped: %s", action, record.id, target.conn_id, exc)
            return False
        if not channel.supports_resolve:
            return False
        message = self.resolver.build_message(record, None, target, with_actions=False)
        for attempt in range(1, self._attempts + 1):
            try:
                await channel.resolve(record, target, info, action, message=message)
                log.info(
                    "escalation %s: sent %s to %s via connection %r",
                    record.id,
                    action,
                    type(channel).__name__,
                    target.conn_id,
                )
                return True
            except PermanentChannelError as exc:
                log.error("escalation %s: cannot send %s via connection %r: %s", record.id, action, target.conn_id, exc)
                return False
            except Exception as exc:  # noqa: BLE001
                if attempt == self._attempts:
                    log.error(
                        "escalation %s: %s via connection %r failed after %d attempts: %s",
                        record.id,
                        action,
                        target.conn_id,
                        attempt,
                        exc,
                    )
                    return False
                log.warning(
                    "escalation %s: %s via connection %r failed (attempt %d/%d): %s",
                    record.id,
                    action,
                    target.conn_id,
                    attempt,
                    self._attempts,
                    exc,
                )
                await asyncio.sleep(self._retry * 2 ** (attempt - 1))
        return False

    async def _store(self, fn: Any, *args: Any) -> Any:
        return await self.engine.store_calls(fn, *args)


def install_delivery(
    engine: EscalationEngine,
    *,
    base_url: str = "",
    action_secret: str | None = None,
    action_ttl_seconds: int = 86400,
    registry: ChannelRegistry | None = None,
    connection_getter: Any = None,
    cache_seconds: float = 30.0,
) -> ChannelDelivery:
    """Deliver ``engine``'s conn_id targets through channels; return the installed delivery.

    ``action_secret`` defaults to :func:`default_action_secret`. The PagerDuty follow-ups listen
    to the engine (``engine.add_listener``).
    """
    if action_secret is None:
        action_secret = default_action_secret()
    resolver = ChannelResolver(
        base_url=base_url,
        action_secret=action_secret,
        action_ttl_seconds=action_ttl_seconds,
        registry=registry,
        connection_getter=connection_getter,
        cache_seconds=cache_seconds,
        clock=engine.clock,
    )
    engine.add_channel_resolver(resolver)
    delivery = ChannelDelivery(engine, resolver)
    engine.add_listener(delivery.on_change)
    return delivery
