"""Run existing actions (notifiers, ``execute`` objects, callables) as a policy's levels fire.

``setup_escalation_with_existing_actions(engine, "critical_alerts", {1: [slack], 2: [slack, pd]})``
installs a ``LevelActionHandler`` as the engine's notification handler, chained to the one it
replaces:

- records of other policies, and levels of this policy without actions, go to the previous
  handler unchanged;
- for a level with actions, the actions are the level's senders. The engine delivers one
  notification per target, so the actions run on the delivery of the level's *anchor* target
  only (the first target by priority that has no ``conn_id``; ``conn_id`` targets are left to
  their channels) and every other target's delivery succeeds without doing anything. Each round
  (first notification and each repeat) therefore runs every action of the level exactly once,
  with the engine's outbox guarantees for that one delivery: durable, retried with backoff, and
  safe across engine replicas.

When some actions of a round fail, the anchor delivery fails and is retried; the retry runs only
the actions that have not succeeded yet in that round (remembered per delivery, in this process).
Actions of a round run concurrently and share the delivery's ``job_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping

from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget
from airflow_escalation.core.types import DeliveryState
from airflow_escalation.routing.invoke import action_kind, action_name, outcome_failed, run_action

if TYPE_CHECKING:
    from airflow_escalation.runtime.engine import EscalationEngine, NotificationHandler

__all__ = [
    "LevelActionHandler",
    "LevelActionsFailed",
    "anchor_target",
    "level_context",
    "setup_escalation_with_existing_actions",
]

log = logging.getLogger("airflow_escalation.routing")

_UNSET: Any = object()
_MAX_REMEMBERED = 1024  # partially failed rounds whose retries are remembered


class LevelActionsFailed(RuntimeError):
    """Some actions of a level round failed; the engine retries the anchor delivery."""


def anchor_target(level: EscalationLevel) -> EscalationTarget | None:
    """The target whose delivery runs the level's actions (None: the level has no targets)."""
    ordered = sorted(level.targets, key=lambda t: t.priority)  # the engine's delivery order
    return next((t for t in ordered if not t.conn_id), ordered[0] if ordered else None)


def level_context(record: EscalationRecord, level: EscalationLevel) -> dict[str, Any]:
    """What level actions receive: the record's trigger context, plus the escalation's facts.

    The escalation keys (``record``, ``record_id``, ``incident_id``, ``policy_name``, ``level``,
    ``escalation_level``, ``targets``, ``repeat``) win over trigger-context keys of the same name.
    """
    context = dict(record.context)
    context.update(
        record=record,
        record_id=record.id,
        incident_id=record.incident_id,
        policy_name=record.policy_name,
        level=level.level,
        escalation_level=level,
        targets=sorted(level.targets, key=lambda t: t.priority),
        repeat=record.repeats_sent if record.current_level == level.level else 0,
    )
    return context


class LevelActionHandler:
    """A notification handler running ``level_actions`` for ``policy_name``; see the module doc."""

    def __init__(
        self,
        policy_name: str,
        level_actions: Mapping[int, Any],
        fallback: NotificationHandler | None = None,
        *,
        engine: EscalationEngine | None = None,
        sync_in_thread: bool = True,
    ) -> None:
        if not isinstance(policy_name, str) or not policy_name:
            raise ValueError(f"policy_name: must be a non-empty string, got {policy_name!r}")
        self.policy_name = policy_name
        self.level_actions = _normalize(level_actions)
        self.fallback = fallback
        self.engine = engine
        self.sync_in_thread = sync_in_thread
        # (record id, level) -> {delivery id: indexes of the actions that succeeded}
        self._partial: OrderedDict[tuple[str, int], dict[str, set[int]]] = OrderedDict()

    async def __call__(self, record: EscalationRecord, level: EscalationLevel, targets: list[EscalationTarget]) -> Any:
        actions = self.level_actions.get(level.level) if record.policy_name == self.policy_name else None
        if actions is None:
            return await self._pass_on(record, level, targets)
        anchor = anchor_target(level)
        if anchor is None or not any(t.key == anchor.key for t in targets):
            return True  # the level's actions run on the anchor's delivery
        await self.run_round(record, level, actions, anchor)
        return True

    async def run_round(
        self,
        record: EscalationRecord,
        level: EscalationLevel,
        actions: list[Any],
        anchor: EscalationTarget | None = None,
    ) -> None:
        """Run the level's actions once (those still owed, on a retry); raise if any failed."""
        key = (record.id, level.level)
        delivery_id = None
        done: set[int] = set()
        if key in self._partial and anchor is not None:  # a retry of a partly failed round?
            delivery_id = await self._anchor_delivery_id(record, level, anchor)
            done = set(self._partial[key].get(delivery_id, ())) if delivery_id else set()
        context = level_context(record, level)
        owed = [i for i in range(len(actions)) if i not in done]
        outcomes = await asyncio.gather(
            *(run_action(actions[i], dict(context), sync_in_thread=self.sync_in_thread) for i in owed),
            return_exceptions=True,
        )
        errors = []
        for index, outcome in zip(owed, outcomes):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation and the like
                errors.append(f"{action_name(actions[index])}: {type(outcome).__name__}: {outcome}")
            elif outcome_failed(outcome):
                detail = getattr(outcome, "error", None) or "reported failure"
                errors.append(f"{action_name(actions[index])}: {detail}")
            else:
                done.add(index)
        if not errors:
            if delivery_id is not None:
                self._forget(key, delivery_id)
            return
        if anchor is not None:
            delivery_id = delivery_id or await self._anchor_delivery_id(record, level, anchor)
            if delivery_id is not None:
                self._remember(key, delivery_id, done)
        raise LevelActionsFailed(
            f"policy {self.policy_name!r} level {level.level}: {len(errors)} of {len(actions)} "
            f"action(s) failed: " + "; ".join(errors)
        )

    async def _pass_on(self, record: EscalationRecord, level: EscalationLevel, targets: list[EscalationTarget]) -> Any:
        if self.fallback is None:
            keys = ", ".join(t.key for t in targets)
            raise LookupError(
                f"no notification handler delivers to {keys} (policy {record.policy_name!r} "
                f"level {level.level} has no level actions and no handler was set before)"
            )
        outcome = self.fallback(record, level, targets)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return outcome

    async def _anchor_delivery_id(
        self, record: EscalationRecord, level: EscalationLevel, anchor: EscalationTarget
    ) -> str | None:
        """The anchor's delivery being sent right now (it identifies the round across retries)."""
        if self.engine is None:
            return None
        try:
            deliveries = await self.engine.store_calls(self.engine.store.get_deliveries, record.id)
        except Exception:
            log.warning("could not read the deliveries of escalation %s", record.id, exc_info=True)
            return None
        sending = [
            d
            for d in deliveries
            if d.level == level.level and d.target.key == anchor.key and d.state == DeliveryState.SENDING
        ]
        return sending[0].id if len(sending) == 1 else None

    def _remember(self, key: tuple[str, int], delivery_id: str, done: set[int]) -> None:
        self._partial.setdefault(key, {})[delivery_id] = set(done)
        self._partial.move_to_end(key)
        while len(self._partial) > _MAX_REMEMBERED:
            self._partial.popitem(last=False)

    def _forget(self, key: tuple[str, int], delivery_id: str) -> None:
        rounds = self._partial.get(key)
        if rounds is not None:
            rounds.pop(delivery_id, None)
            if not rounds:
                del self._partial[key]

    def __repr__(self) -> str:
        levels = {n: [action_name(a) for a in acts] for n, acts in self.level_actions.items()}
        return f"LevelActionHandler(policy_name={self.policy_name!r}, level_actions={levels})"


def _normalize(level_actions: Mapping[int, Any]) -> dict[int, list[Any]]:
    if not isinstance(level_actions, Mapping) or not level_actions:
        raise ValueError(
            f"level_actions: expected a non-empty mapping of level number to actions, got {level_actions!r}"
        )
    normalized: dict[int, list[Any]] = {}
    for level, actions in level_actions.items():
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise ValueError(f"level_actions: level numbers must be integers >= 1, got {level!r}")
        actions = list(actions) if isinstance(actions, (list, tuple)) else [actions]
        if not actions:
            raise ValueError(
                f"level_actions[{level}]: no actions (leave the level out to keep it with the notification handler)"
            )
        for index, action in enumerate(actions):
            try:
                action_kind(action)
            except TypeError as exc:
                raise TypeError(f"level_actions[{level}][{index}]: {exc}") from None
        normalized[level] = actions
    return normalized


def _check_against_policy(engine: EscalationEngine, policy_name: str, levels: list[int]) -> None:
    policy = engine.get_policy(policy_name)
    if policy is None:
        log.info("policy %r is not registered yet: level_actions are checked when it fires", policy_name)
        return
    unknown = [n for n in levels if policy.get_level(n) is None]
    if unknown:
        raise ValueError(
            f"level_actions: policy {policy_name!r} has no level(s) {unknown} "
            f"(levels: {[lv.level for lv in policy.levels]})"
        )
    for number in levels:
        level = policy.get_level(number)
        if not level.targets:
            raise ValueError(
                f"level_actions[{number}]: level {number} of policy {policy_name!r} has no targets, so the "
                f"engine sends it no notification round and its actions would never run; give it a "
                f"target (e.g. EscalationTarget.custom('level-{number}-actions'))"
            )
        if all(t.conn_id for t in level.targets):
            log.warning(
                "level %d of policy %r: every target has a conn_id; its actions run only if the "
                "delivery of %s reaches the notification handler",
                number,
                policy_name,
                anchor_target(level).key,
            )


def setup_escalation_with_existing_actions(
    engine: EscalationEngine,
    policy_name: str,
    level_actions: Mapping[int, Any],
    *,
    fallback_handler: NotificationHandler | None = _UNSET,
    sync_in_thread: bool = True,
) -> LevelActionHandler:
    """Make ``level_actions[N]`` run whenever a ``policy_name`` escalation notifies level N.

    Installs a ``LevelActionHandler`` as ``engine``'s notification handler, chained to the handler
    set before (or ``fallback_handler``), and returns it. Call it after
    ``engine.set_notification_handler``: setting a handler afterwards replaces this one.
    Sync actions run in worker threads unless ``sync_in_thread=False``.
    """
    handler = LevelActionHandler(policy_name, level_actions, engine=engine, sync_in_thread=sync_in_thread)
    _check_against_policy(engine, policy_name, sorted(handler.level_actions))
    if fallback_handler is _UNSET:
        # the engine has no public getter for its handler; chaining needs the current one
        fallback_handler = getattr(engine, "_handler", None)
    handler.fallback = fallback_handler
    engine.set_notification_handler(handler)
    log.info("level actions installed for policy %r: %r", policy_name, handler)
    return handler
