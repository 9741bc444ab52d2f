"""Wire the channels into the service's engine.

:func:`install_delivery` (called by the service when it builds its engine) adds a
:class:`~airflow_escalation.channels.ChannelResolver`: targets that name an Airflow connection
(``conn_id``) are delivered by the channel for that connection's type (HTTP, SMTP, Slack,
PagerDuty); every other target still goes to the engine's notification handler (the service's
default logs it). Messages link to the Airflow UI and carry one-click acknowledge/resolve links
signed with the action secret (:func:`default_action_secret`).

PagerDuty keeps an alert per escalation (``dedup_key`` = the record id). When an escalation is
acknowledged, or resolved or cancelled (by a person, by ``auto_resolve_minutes`` or a notify-only
level), :meth:`ChannelDelivery.follow_ups` -- a change hook of the engine
(``engine.add_change_hook``) -- writes one outbox delivery per PagerDuty connection the record
paged through, in the same compare-and-swap as the change: exactly once whichever replica made
it, sent by the outbox like every notification (retries with backoff, each outcome on the
record's deliveries). The target of such a delivery is the PagerDuty target with
``metadata["follow_up"]`` set to ``acknowledge`` or ``resolve``; its sender
(:meth:`ChannelDelivery.send_follow_up`) waits (a retry) while an earlier notification through
the same connection is still on its way, so PagerDuty never hears of the acknowledgement before
the alert. A change PagerDuty itself reported (``service/routes/pagerduty.py``, inside
:func:`told_by`) is not sent back to that connection: no echo loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_escalation.channels.base import ChannelError, ChannelRegistry, ChannelResolver
from airflow_escalation.core.models import Delivery, EscalationTarget
from airflow_escalation.core.types import DeliveryState

if TYPE_CHECKING:
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord
    from airflow_escalation.runtime.engine import EscalationEngine

log = logging.getLogger("airflow_escalation.delivery")

#: the target metadata key that makes a delivery a follow-up (its value: acknowledge or resolve)
FOLLOW_UP = "follow_up"
#: a follow-up's ``round``: not a notification round of its level (which count from 0)
FOLLOW_UP_ROUND = -1
_CLOSED = {"resolved", "cancelled"}
_DELIVERED = {DeliveryState.SENT, DeliveryState.UNKNOWN}  # UNKNOWN: may have gone out
_ON_THE_WAY = {DeliveryState.PENDING, DeliveryState.SENDING}

# the connection a change was reported by (PagerDuty's webhook): not told about it again
_told_by: ContextVar[str | None] = ContextVar("escalation_told_by", default=None)


@contextmanager
def told_by(conn_id: str) -> Iterator[None]:
    """Changes made inside are not sent back to ``conn_id`` (it reported them)."""
    token = _told_by.set(conn_id)
    try:
        yield
    finally:
        _told_by.reset(token)


def follow_up_action(record: EscalationRecord, from_state: str | None) -> str | None:
    """What PagerDuty is told of a change from ``from_state`` to ``record.state``, if anything."""
    if record.state in _CLOSED and from_state not in _CLOSED:
        return "resolve"
    if record.state == "acknowledged" and from_state != "acknowledged":
        return "acknowledge"
    return None


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


class ChannelDelivery:
    """The channel resolver installed on an engine, and the PagerDuty follow-ups."""

    def __init__(self, engine: EscalationEngine, resolver: ChannelResolver) -> None:
        self.engine = engine
        self.resolver = resolver

    # ------------------------------------------------------------------ change hook
    def follow_ups(
        self, record: EscalationRecord, action: str, from_state: str | None, now: datetime
    ) -> list[Delivery]:
        """Engine change hook: one follow-up delivery per connection to tell of this change."""
        follow = follow_up_action(record, from_state)
        if follow is None:
            return []
        skip = _told_by.get()
        deliveries: list[Delivery] = []
        seen: set[str] = set()
        for level in (record.policy_snapshot or {}).get("levels") or ():
            try:
                number = int(level.get("level"))
            except (TypeError, ValueError):
                continue
            if number > record.current_level:
                continue  # never paged: nothing to quiet
            for raw in level.get("targets") or ():
                conn_id = raw.get("conn_id") if isinstance(raw, dict) else None
                if not conn_id or conn_id in seen or conn_id == skip or not self._may_resolve(conn_id):
                    continue
                seen.add(conn_id)
                paged = EscalationTarget.from_dict(raw)
                target = replace(
                    paged, metadata={**paged.metadata, FOLLOW_UP: follow}, name=f"{paged.display_name[:200]} ({follow})"
                )
                deliveries.append(
                    Delivery(
                        id=f"{record.id}-{follow}-{len(deliveries)}",
                        record_id=record.id,
                        level=number,
                        round=FOLLOW_UP_ROUND,
                        target=target,
                        created_at=now,
                        updated_at=now,
                    )
                )
        return deliveries

    def _may_resolve(self, conn_id: str) -> bool:
        """Whether ``conn_id``'s channel keeps remote incidents; True when its type is not known
        yet (the sender then finds out, and tells nothing)."""
        conn_type = self.resolver.known_conn_type(conn_id)
        if conn_type is None:
            return True
        try:
            return self.resolver.registry.get(conn_type).supports_resolve
        except Exception:  # noqa: BLE001 - an unsupported type has nothing to tell
            return False

    # ------------------------------------------------------------------ sender
    def __call__(self, target: EscalationTarget) -> Any:
        """Engine channel resolver: the follow-up sender for follow-up targets, else None."""
        return self.send_follow_up if target.conn_id and target.metadata.get(FOLLOW_UP) else None

    async def send_follow_up(self, record: EscalationRecord, level: EscalationLevel, target: EscalationTarget) -> bool:
        """Tell the remote incident service (PagerDuty) of the acknowledgement or resolution.

        Raises (so the outbox retries) while an earlier notification through the same connection
        is on its way; tells nothing when none went out (no alert to quiet) or the connection's
        channel keeps no incidents.
        """
        action = str(target.metadata.get(FOLLOW_UP))
        if action not in ("acknowledge", "resolve"):
            raise ValueError(f"follow_up must be acknowledge or resolve, got {action!r}")
        earlier = [
            d
            for d in await self._store(self.engine.store.get_deliveries, record.id)
            if d.target.conn_id == target.conn_id and not d.target.metadata.get(FOLLOW_UP)
        ]
        if any(d.state in _ON_THE_WAY for d in earlier):
            raise ChannelError(f"waiting for the notification through {target.conn_id!r} to go out first")
        if not any(d.state in _DELIVERED for d in earlier):
            log.info("escalation %s: no alert went out through %r; no %s to send", record.id, target.conn_id, action)
            return True
        info, channel = await self.resolver.channel_for(target.conn_id)
        if not channel.supports_resolve:
            return True
        plain = EscalationTarget.from_dict(
            {**target.to_dict(), "metadata": {k: v for k, v in target.metadata.items() if k != FOLLOW_UP}}
        )
        message = self.resolver.build_message(record, None, plain, with_actions=False)
        await channel.resolve(record, plain, info, action, message=message)
        log.info("escalation %s: sent %s via connection %r", record.id, action, target.conn_id)
        return True

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

    ``action_secret`` defaults to :func:`default_action_secret`. The PagerDuty follow-ups are a
    change hook of the engine (``engine.add_change_hook``) with a channel resolver of their own.
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
    delivery = ChannelDelivery(engine, resolver)
    engine.add_channel_resolver(delivery)  # first: a follow-up is not a notification
    engine.add_channel_resolver(resolver)
    engine.add_change_hook(delivery.follow_ups)
    return delivery
