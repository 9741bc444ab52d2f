"""The escalation engine: triggers, transitions, due-time processing and outbox delivery.

No global lock. Every change is read → decide → compare-and-swap; a lost race is re-read and
decided again. Notifications are written with the transition that causes them (the outbox) and
delivered concurrently afterwards, bounded by ``SchedulerConfig.max_concurrent_jobs``, outside any
record lock, each target's outcome recorded and failures retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Awaitable, Callable

from airflow_escalation.core import bounds, planner
from airflow_escalation.core.business_hours import is_business_time
from airflow_escalation.core.clock import SYSTEM_CLOCK, Clock
from airflow_escalation.core.models import (
    Delivery,
    EscalationLevel,
    EscalationPolicy,
    EscalationRecord,
    EscalationResult,
    EscalationStats,
    EscalationTarget,
    dag_id_of,
)
from airflow_escalation.core.states import DEFAULT_STATE_MACHINE, InvalidTransition
from airflow_escalation.core.worker_pool import WorkerPool
from airflow_escalation.core.types import (
    BusinessHoursMode,
    EscalationEvent,
    EscalationState,
    EscalationTrigger,
)
from airflow_escalation.scheduling.base import BaseEscalationScheduler, SchedulerConfig, SchedulerType
from airflow_escalation.scheduling.factory import create_scheduler
from airflow_escalation.stores.base import BaseEscalationStore
from airflow_escalation.stores.factory import create_store

log = logging.getLogger("airflow_escalation.engine")

NotificationHandler = Callable[[EscalationRecord, EscalationLevel, list[EscalationTarget]], Awaitable[Any] | Any]
ConditionEvaluator = Callable[[EscalationRecord, Any], Awaitable[bool] | bool]
# Returns a sender for targets it handles (e.g. a target with an Airflow conn_id), else None.
TargetSender = Callable[[EscalationRecord, EscalationLevel, EscalationTarget], Awaitable[Any]]
ChannelResolver = Callable[[EscalationTarget], TargetSender | None]

_CAS_ATTEMPTS = 20
_PENDING = EscalationState.PENDING.value
_ACKNOWLEDGED = EscalationState.ACKNOWLEDGED.value
_MAX_STEPS = 64  # bound on steps taken for one record in one wake-up (delay-0 ladders)
# While this engine's workers are sending deliveries it wrote, a pending delivery is most likely
# one of those: the sweep that takes over others' (a stopped engine's, a retry) waits this long
# rather than sweeping again at once.
_OWN_DELIVERIES_GRACE = timedelta(seconds=1)


@dataclass
class EscalationEngineConfig:
    """Engine settings. ``clock`` and ``store`` may be given as instances (tests, embedding)."""

    store_type: str = "memory"
    store_config: dict[str, Any] = field(default_factory=dict)
    scheduler_config: SchedulerConfig | None = None
    default_notification_handler: NotificationHandler | None = None
    condition_evaluators: dict[str, ConditionEvaluator] = field(default_factory=dict)
    check_business_hours: bool = True
    metrics_enabled: bool = True
    clock: Clock | None = None
    store: BaseEscalationStore | None = None
    engine_id: str | None = None
    cleanup_after_days: float = 30


@dataclass
class _Change:
    """What a decision writes besides the record itself."""

    deliveries: list[Delivery] = field(default_factory=list)
    cancel_pending: bool = False


class EscalationEngine:
    """Runs escalations: see the module docstring and docs/semantics.md."""

    def __init__(
        self,
        config: EscalationEngineConfig | None = None,
        *,
        store: BaseEscalationStore | None = None,
        scheduler: BaseEscalationScheduler | None = None,
    ) -> None:
        self._config = config = config or EscalationEngineConfig()
        self._clock = config.clock or SYSTEM_CLOCK
        self._store = store or config.store or create_store(config.store_type, **config.store_config)
        sched_config = config.scheduler_config or SchedulerConfig(
            scheduler_type=SchedulerType.MEMORY if self._clock.is_fake else SchedulerType.ASYNCIO
        )
        self._sched_config = sched_config
        self._scheduler = scheduler or create_scheduler(sched_config, self._wake, self._clock)
        self._scheduler.set_callback(self._wake)
        self._policies: dict[str, EscalationPolicy] = {}
        self._snapshots: dict[str, EscalationPolicy] = {}
        self._handler = config.default_notification_handler
        self._channel_resolvers: list[ChannelResolver] = []
        self._listeners: list[Callable[[EscalationRecord, str], Any]] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._evaluators = dict(config.condition_evaluators)
        self._owner = config.engine_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = timedelta(seconds=sched_config.lease_seconds)
        self._inline = not self._store.blocking
        # a store that prefers batches (SQLite, Redis) gets its calls on threads of its own
        self._store_batches = (
            _StoreBatches(self._store.run_batch, self._store.batch_threads)
            if self._store.blocking and self._store.prefers_batches
            else None
        )
        # deliveries are run by up to max_concurrent_jobs workers (created in the running loop)
        self._pool: WorkerPool | None = None
        self._outbox_backlog = False  # pending deliveries were left for want of an idle worker
        # deliveries this engine wrote and queued, not started yet (id -> record): a sweep that
        # claims one sends it with the record at hand, and the queued item stands down
        self._queued: dict[str, EscalationRecord | None] = {}
        self._running = False
        self._last_cleanup: datetime | None = None

    # ------------------------------------------------------------------ configuration
    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def store(self) -> BaseEscalationStore:
        return self._store

    @property
    def scheduler(self) -> BaseEscalationScheduler:
        return self._scheduler

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def engine_id(self) -> str:
        return self._owner

    @property
    def policies(self) -> dict[str, EscalationPolicy]:
        return dict(self._policies)

    def register_policy(self, policy: EscalationPolicy | dict[str, Any]) -> None:
        policy = _private_copy(policy)
        self._policies[policy.name] = policy
        self._snapshots[policy.fingerprint] = policy
        log.info("registered escalation policy %r (%d levels)", policy.name, len(policy.levels))

    def unregister_policy(self, policy_name: str) -> bool:
        return self._policies.pop(policy_name, None) is not None

    def get_policy(self, policy_name: str) -> EscalationPolicy | None:
        return self._policies.get(policy_name)

    def set_notification_handler(self, handler: NotificationHandler) -> None:
        """``handler(record, level, targets)`` delivers to ``targets`` (one target per call).

        Returning False or raising marks that target's delivery failed (it is retried).
        """
        self._handler = handler

    def add_channel_resolver(self, resolver: ChannelResolver) -> None:
        """Let ``resolver(target)`` supply a sender for some targets (checked before the handler)."""
        self._channel_resolvers.append(resolver)

    def add_listener(self, listener: Callable[[EscalationRecord, str], Any]) -> None:
        """Call ``listener(record, action)`` after every committed change of a record.

        ``action`` is ``trigger``, ``trigger_existing``, ``acknowledge``, ``resolve``, ``cancel``,
        ``escalate`` or ``due`` (a scheduled step). Async listeners run in the background. Used to
        close external incidents (PagerDuty resolve) or push updates; a listener's failure is
        logged and changes nothing.
        """
        self._listeners.append(listener)

    def _spawn_listener(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._listener_tasks.add(task)
        task.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("escalation listener failed", exc_info=task.exception())

    def register_condition_evaluator(self, name: str, evaluator: ConditionEvaluator) -> None:
        self._evaluators[name] = evaluator

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the clock and sweep what came due while no engine ran."""
        if self._running:
            return
        self._running = True
        self._scheduler.start()
        await self._wake()
        log.info("escalation engine %s started on %s store", self._owner, self._store.name)

    async def stop(self, timeout: float = 30) -> None:
        """Stop waking; let deliveries in flight finish (up to ``timeout`` seconds)."""
        if not self._running:
            return
        self._scheduler.stop()
        self._running = False
        try:
            await asyncio.wait_for(self.drain(), timeout)
        except asyncio.TimeoutError:
            log.warning(
                "stopping with %d deliveries still queued or in flight; their leases will "
                "expire and another engine records them as unknown",
                self._pool.unfinished if self._pool is not None else 0,
            )
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._queued.clear()
        log.info("escalation engine %s stopped", self._owner)

    async def drain(self) -> None:
        """Wait until every delivery queued by this engine has been attempted."""
        if self._pool is not None and self._pool.loop is asyncio.get_running_loop():
            await self._pool.join()
        while self._listener_tasks:
            await asyncio.gather(*list(self._listener_tasks), return_exceptions=True)

    async def advance(self, delta: timedelta) -> None:
        """Move a fake clock forward through every due moment in order, running what falls due.

        Deliveries are awaited at each moment, so after ``advance`` returns every notification due
        by then has been attempted. Refuses to run on the real clock.
        """
        if not self._clock.is_fake:
            raise RuntimeError("advance() needs a FakeClock (EscalationEngineConfig(clock=FakeClock(...)))")
        end = self._clock.now() + delta
        stalled_at = None
        while True:
            await self.drain()
            nxt = _earliest(await self._io(self._store.next_due_at), await self._io(self._store.next_delivery_at))
            if nxt is None or nxt > end:
                break
            if nxt > self._clock.now():
                self._clock.set(nxt)  # type: ignore[attr-defined]  # is_fake: a FakeClock
                stalled_at = None
            elif stalled_at == nxt:
                break  # due but not ours to take (leased elsewhere)
            else:
                stalled_at = nxt
            await self._wake()
        self._clock.set(end)  # type: ignore[attr-defined]  # is_fake: a FakeClock
        await self._wake()
        await self.drain()

    # ------------------------------------------------------------------ store access
    async def _io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a store method: in a worker thread when the store does I/O, else directly.

        Hot paths test ``self._inline`` and call the store themselves, saving a coroutine.
        """
        if self._store.blocking:
            if self._store_batches is not None:
                return await self._store_batches.call(fn, *args, **kwargs)
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def _policy_for(self, record: EscalationRecord) -> EscalationPolicy:
        """The policy the record was triggered with (its snapshot), not today's edit of it."""
        fingerprint = record.metadata.get("policy_fingerprint")
        policy = self._snapshots.get(fingerprint) if fingerprint else None
        if policy is None:
            if record.policy_snapshot:
                policy = EscalationPolicy.from_dict(record.policy_snapshot)
            else:
                policy = self._policies.get(record.policy_name)
                if policy is None:
                    raise LookupError(
                        f"policy {record.policy_name!r} is not registered and the record holds no snapshot of it"
                    )
            self._snapshots[fingerprint or policy.fingerprint] = policy
        return policy

    # ------------------------------------------------------------------ queries (spec: sync)
    def get_record(self, record_id: str) -> EscalationRecord | None:
        return self._store.get(record_id)

    def get_records_for_incident(self, incident_id: str) -> list[EscalationRecord]:
        return self._store.get_by_incident(incident_id)

    def get_active_escalations(self, policy_name: str | None = None) -> list[EscalationRecord]:
        return self._store.get_active(policy_name)

    def count_active_escalations(self, policy_name: str | None = None) -> int:
        """How many escalations are still paging, counted by the store (no record is loaded)."""
        return self._store.count_active(policy_name)

    def get_deliveries(self, record_id: str) -> list[Delivery]:
        return self._store.get_deliveries(record_id)

    def get_stats(self) -> EscalationStats:
        return self._store.get_stats()

    # ------------------------------------------------------------------ trigger
    def _select_policy(
        self,
        policy_name: str | None,
        context: dict[str, Any],
        trigger_type: EscalationTrigger,
        inline: EscalationPolicy | dict[str, Any] | None,
    ) -> EscalationPolicy | EscalationResult:
        severity = context.get("severity")
        if inline is not None:
            try:
                candidates = [_private_copy(inline)]
            except ValueError as exc:
                return EscalationResult.failure_result(None, "trigger", str(exc), code="invalid")
        elif policy_name:
            policy = self._policies.get(policy_name)
            if policy is None:
                return EscalationResult.failure_result(
                    None, "trigger", f"policy {policy_name!r} is not registered", code="not_found"
                )
            candidates = [policy]
        else:
            candidates = list(self._policies.values())
            if not candidates:
                return EscalationResult.failure_result(None, "trigger", "no policy is registered", code="not_found")
        reasons = []
        for policy in candidates:
            if not policy.enabled:
                reasons.append(f"policy {policy.name!r} is disabled")
            elif trigger_type not in policy.triggers:
                reasons.append(
                    f"policy {policy.name!r} does not escalate on {trigger_type.value!r} "
                    f"(triggers: {[t.value for t in policy.triggers]})"
                )
            elif not policy.matches_severity(severity):
                reasons.append(
                    f"policy {policy.name!r} filters out severity {severity!r} "
                    f"(severity_filter: {policy.severity_filter})"
                )
            else:
                return policy
        return EscalationResult.failure_result(None, "trigger", "; ".join(reasons), code="filtered")

    async def trigger(
        self,
        incident_id: str,
        context: dict[str, Any] | None = None,
        policy_name: str | None = None,
        trigger_type: EscalationTrigger | str = EscalationTrigger.UNACKNOWLEDGED,
        *,
        policy: EscalationPolicy | dict[str, Any] | None = None,
        triggered_by: str = "system",
    ) -> EscalationResult:
        """Start escalating ``incident_id`` (or join its open escalation).

        ``policy`` may carry a policy definition inline (it is snapshotted on the record).
        Fails (``result.success`` False, never an exception) when no enabled policy accepts the
        trigger type and severity, or within the policy's cooldown after the last escalation.
        """
        try:
            trigger_type = EscalationTrigger(trigger_type)
        except ValueError:
            return EscalationResult.failure_result(None, "trigger", f"unknown trigger type {trigger_type!r}")
        refused = _refuse(
            "trigger",
            lambda: (
                bounds.check_text(incident_id, "incident_id", allow_empty=False),
                bounds.check_mapping(context or {}, "context"),
                bounds.check_text(triggered_by, "triggered_by"),
                policy_name is None or bounds.check_text(policy_name, "policy_name"),
            ),
        )
        if refused is not None:
            return refused
        context = dict(context or {})
        chosen = self._select_policy(policy_name, context, trigger_type, policy)
        if isinstance(chosen, EscalationResult):
            return chosen
        policy = chosen
        now = self._clock.now()

        # an incident's open record belongs to its DAG: a trigger of another DAG never joins it
        # nor is suppressed by its cooldown, whatever the incident id says
        dag_id = dag_id_of(context)
        for _ in range(_CAS_ATTEMPTS):
            store = self._store
            existing = (
                store.find_open(incident_id, policy.name, dag_id)
                if self._inline
                else await self._io(store.find_open, incident_id, policy.name, dag_id)
            )
            if existing is not None:
                return await self._retrigger(existing, trigger_type, triggered_by)
            if policy.cooldown_minutes > 0:
                last = await self._io(self._store.last_closed, incident_id, policy.name, dag_id)
                if last is not None and last.closed_at is not None and now - last.closed_at < policy.cooldown:
                    until = last.closed_at + policy.cooldown
                    return EscalationResult.failure_result(
                        last,
                        "trigger",
                        f"incident {incident_id!r} is in its cooldown until {until.isoformat()} "
                        f"(cooldown_minutes={policy.cooldown_minutes})",
                        code="suppressed",
                    )
            record = EscalationRecord(
                id=EscalationRecord.generate_id(),
                incident_id=incident_id,
                policy_name=policy.name,
                state=_PENDING,
                created_at=now,
                updated_at=now,
                context=context,
                trigger_type=trigger_type.value,
                policy_snapshot=policy.snapshot,
                metadata={"policy_fingerprint": policy.fingerprint, "trigger_count": 1},
            )
            self._snapshots.setdefault(policy.fingerprint, policy)
            record.add_history_event(
                "triggered", now, triggered_by, trigger_type=trigger_type.value, severity=context.get("severity")
            )
            change = _Change()
            try:
                self._run_steps(record, policy, now, change)
            except Exception as exc:  # e.g. a level condition without an evaluator
                log.exception("escalation of incident %r could not start", incident_id)
                return EscalationResult.failure_result(
                    None, "trigger", f"policy {policy.name!r} cannot start: {type(exc).__name__}: {exc}"
                )
            stored = (
                store.create(record, change.deliveries)
                if self._inline
                else await self._io(store.create, record, change.deliveries)
            )
            if stored is None:
                continue  # another engine opened it first: join that one
            record.version = stored.version
            self._after_write(record, change, "trigger")
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "escalation %s triggered for incident %r under policy %r (%s)",
                    record.id,
                    incident_id,
                    policy.name,
                    _describe(record),
                )
            return EscalationResult.success_result(
                record,
                "trigger",
                [d.target for d in change.deliveries],
                f"escalation triggered at level {record.current_level}",
            )
        return EscalationResult.failure_result(
            None, "trigger", "too many concurrent writers; try again", code="conflict"
        )

    async def _retrigger(
        self, existing: EscalationRecord, trigger_type: EscalationTrigger, actor: str
    ) -> EscalationResult:
        def join(record: EscalationRecord, now: datetime) -> _Change:
            count = record.metadata["trigger_count"] = int(record.metadata.get("trigger_count", 1)) + 1
            # the history keeps the first joins; later ones are only counted, so a failure that
            # re-triggers every minute for a week does not grow the record without bound
            if count <= bounds.MAX_RETRIGGER_EVENTS + 1:
                record.add_history_event(
                    "retriggered", now, actor, trigger_type=trigger_type.value, trigger_count=count
                )
            else:
                record.metadata["last_triggered_at"] = now.isoformat()
                record.metadata["last_triggered_by"] = actor
            return _Change()

        result = await self._mutate(existing.id, "trigger_existing", join, current=existing)
        if result.success:
            result.message = "incident already has an open escalation: joined it, nobody paged again"
        return result

    # ------------------------------------------------------------------ human actions
    async def acknowledge(
        self, record_id: str, acknowledged_by: str = "system", note: str | None = None
    ) -> EscalationResult:
        if (refused := _refuse_action("acknowledge", acknowledged_by, note)) is not None:
            return refused

        def ack(record: EscalationRecord, now: datetime) -> _Change | EscalationResult:
            if record.state == _ACKNOWLEDGED:
                return EscalationResult.failure_result(
                    record, "acknowledge", f"already acknowledged by {record.acknowledged_by}", code="conflict"
                )
            self._transition(record, EscalationEvent.ACKNOWLEDGE, now, acknowledged_by, note=note)
            if record.acknowledged_at is None:
                record.acknowledged_at = now
                record.acknowledged_by = acknowledged_by
            policy = self._policy_for(record)
            self._schedule(record, policy, now)
            return _Change(cancel_pending=not policy.continues_after_ack)

        return await self._mutate(record_id, "acknowledge", ack)

    async def resolve(self, record_id: str, resolved_by: str = "system", note: str | None = None) -> EscalationResult:
        if (refused := _refuse_action("resolve", resolved_by, note)) is not None:
            return refused

        def close(record: EscalationRecord, now: datetime) -> _Change:
            self._resolve(record, now, resolved_by, note=note)
            return _Change(cancel_pending=True)

        return await self._mutate(record_id, "resolve", close)

    async def cancel(self, record_id: str, cancelled_by: str = "system", reason: str = "") -> EscalationResult:
        if (refused := _refuse_action("cancel", cancelled_by, reason, "reason")) is not None:
            return refused

        def close(record: EscalationRecord, now: datetime) -> _Change:
            self._transition(record, EscalationEvent.CANCEL, now, cancelled_by, reason=reason)
            record.metadata["cancelled_by"] = cancelled_by
            record.metadata["cancel_reason"] = reason
            self._close(record, now)
            return _Change(cancel_pending=True)

        return await self._mutate(record_id, "cancel", close)

    async def escalate(self, record_id: str, force: bool = False, escalated_by: str = "system") -> EscalationResult:
        """Escalate now: start a pending record, or climb to the next level.

        ``force`` also escalates an acknowledged record (back to active at the next level) and,
        at the top level, pages the top level again. ``max_escalations`` still applies.
        """
        if (refused := _refuse_action("escalate", escalated_by, None)) is not None:
            return refused

        def climb(record: EscalationRecord, now: datetime) -> _Change | EscalationResult:
            policy = self._policy_for(record)
            change = _Change()
            if record.state == _PENDING:
                self._start(record, policy, now, change, escalated_by)
            elif record.state == _ACKNOWLEDGED and not force:
                return EscalationResult.failure_result(
                    record, "escalate", "acknowledged escalations climb only with force=True", code="conflict"
                )
            elif policy.get_next_level(record.current_level) is None and not force:
                return EscalationResult.failure_result(
                    record,
                    "escalate",
                    f"already at the highest level ({record.current_level}); use force=True to page it again",
                    code="conflict",
                )
            else:
                target = policy.get_next_level(record.current_level) or policy.get_level(record.current_level)
                assert target is not None  # an open record's own level is in its policy
                self._climb(record, policy, target, now, change, escalated_by, manual=True)
            if record.is_open:
                self._schedule(record, policy, now)
            return change

        return await self._mutate(record_id, "escalate", climb)

    async def _mutate(
        self,
        record_id: str,
        action: str,
        decide: Callable[[EscalationRecord, datetime], _Change | EscalationResult],
        current: EscalationRecord | None = None,
    ) -> EscalationResult:
        """Read → decide → compare-and-swap, re-reading on a lost race."""
        store = self._store
        record: EscalationRecord | None
        for _ in range(_CAS_ATTEMPTS):
            if current is not None:
                record, current = current, None
            else:
                record = store.get(record_id) if self._inline else await self._io(store.get, record_id)
            if record is None:
                return EscalationResult.failure_result(
                    None, action, f"escalation {record_id!r} not found", code="not_found"
                )
            if not record.is_open:
                return EscalationResult.failure_result(
                    record, action, f"escalation is {record.state}; nothing more can change", code="conflict"
                )
            now = self._clock.now()
            expected, seen = record.version, len(record.history)
            try:
                change = decide(record, now)
            except InvalidTransition as exc:
                return EscalationResult.failure_result(record, action, str(exc), code="conflict")
            except Exception as exc:  # a decision that cannot be made changes nothing
                log.exception("escalation %s: %s failed", record_id, action)
                return EscalationResult.failure_result(record, action, f"{type(exc).__name__}: {exc}")
            if isinstance(change, EscalationResult):
                return change
            record.updated_at = now
            args = (record, expected, record.history[seen:], change.deliveries, change.cancel_pending)
            written = store.update(*args) if self._inline else await self._io(store.update, *args)
            if written:
                self._after_write(record, change, action)
                if log.isEnabledFor(logging.INFO):
                    log.info("escalation %s: %s (%s)", record.id, action, _describe(record))
                return EscalationResult.success_result(record, action, [d.target for d in change.deliveries])
        return EscalationResult.failure_result(None, action, "too many concurrent writers; try again", code="conflict")

    # ------------------------------------------------------------------ transitions (pure)
    def _transition(
        self, record: EscalationRecord, event: EscalationEvent, now: datetime, actor: str = "system", **details: Any
    ) -> None:
        from_state = record.state
        to_state = _NEXT_STATE.get((from_state, event))
        if to_state is None:
            raise InvalidTransition(EscalationState(from_state), event)
        record.state = to_state
        if details:
            details = {k: v for k, v in details.items() if v is not None}
        record.add_history_event(event.value, now, actor, from_state=from_state, **details)

    def _close(self, record: EscalationRecord, now: datetime) -> None:
        record.closed_at = now
        record.next_escalation_at = None
        record.next_action = None

    def _resolve(self, record: EscalationRecord, now: datetime, actor: str, **details: Any) -> None:
        self._transition(record, EscalationEvent.RESOLVE, now, actor, **details)
        record.resolved_at = now
        record.resolved_by = actor
        self._close(record, now)

    def _schedule(self, record: EscalationRecord, policy: EscalationPolicy, now: datetime) -> planner.Step | None:
        step = planner.plan(record, policy, now, self._config.check_business_hours)
        record.next_escalation_at = step.due if step else None
        record.next_action = step.action if step else None
        return step

    def _notify(
        self,
        record: EscalationRecord,
        policy: EscalationPolicy,
        level: EscalationLevel,
        now: datetime,
        change: _Change,
        round_: int,
    ) -> None:
        """Queue one round of notifications for ``level`` (unless business hours skip it)."""
        if (
            self._config.check_business_hours
            and policy.business_hours_only
            and policy.business_hours_mode is BusinessHoursMode.SKIP
            and not is_business_time(policy, now)
        ):
            record.add_history_event("notification_skipped", now, reason="outside business hours", round=round_)
        else:
            record.notify_rounds += 1
            targets = sorted(level.targets, key=lambda t: t.priority)
            for index, target in enumerate(targets):
                change.deliveries.append(
                    Delivery(
                        id=f"{record.id}-{record.notify_rounds}-{index}",
                        record_id=record.id,
                        level=level.level,
                        round=round_,
                        target=target,
                        created_at=now,
                        updated_at=now,
                    )
                )
            record.add_history_event("notified", now, round=round_, targets=[t.key for t in targets])
        if not level.require_ack and round_ >= level.repeat_count:
            # notify-only level: nothing is left to wait for once its last round is out
            self._resolve(record, now, "system", reason="level requires no acknowledgement")

    def _start(
        self, record: EscalationRecord, policy: EscalationPolicy, now: datetime, change: _Change, actor: str = "system"
    ) -> None:
        self._transition(record, EscalationEvent.START, now, actor)
        record.current_level = policy.levels[0].level
        record.level_fired_at = now
        record.repeats_sent = 0
        self._notify(record, policy, policy.levels[0], now, change, 0)

    def _climb(
        self,
        record: EscalationRecord,
        policy: EscalationPolicy,
        level: EscalationLevel,
        now: datetime,
        change: _Change,
        actor: str = "system",
        manual: bool = False,
    ) -> None:
        if policy.max_escalations and record.escalation_count >= policy.max_escalations:
            self._transition(
                record, EscalationEvent.MAX_LEVEL_REACHED, now, actor, max_escalations=policy.max_escalations
            )
            self._close(record, now)
            return
        if not self._conditions_met(record, level):
            record.add_history_event(
                "level_skipped", now, actor, skipped_level=level.level, reason="level conditions not met"
            )
            record.current_level = level.level
            record.level_fired_at = now
            record.repeats_sent = level.repeat_count  # a skipped level sends no repeats either
            return
        self._transition(record, EscalationEvent.ESCALATE, now, actor, to_level=level.level, manual=manual or None)
        record.current_level = level.level
        record.escalation_count += 1
        record.level_fired_at = now
        record.repeats_sent = 0
        self._transition(record, EscalationEvent.ESCALATE_SUCCESS, now, actor)
        self._notify(record, policy, level, now, change, 0)

    def _conditions_met(self, record: EscalationRecord, level: EscalationLevel) -> bool:
        for name, expected in level.conditions.items():
            if name == "severity":  # built in: the level applies to these severities only
                allowed = [str(s).lower() for s in (expected if isinstance(expected, list) else [expected])]
                if record.severity not in allowed:
                    return False
                continue
            evaluator = self._evaluators.get(name)
            if evaluator is None:
                raise LookupError(f"level {level.level} condition {name!r}: no evaluator registered")
            verdict = evaluator(record, expected)
            if inspect.isawaitable(verdict):
                raise TypeError(
                    f"condition evaluator {name!r} must be synchronous (it runs inside a compare-and-swap decision)"
                )
            if not verdict:
                return False
        return True

    def _run_steps(self, record: EscalationRecord, policy: EscalationPolicy, now: datetime, change: _Change) -> None:
        """Take every step due by ``now``, then book the next one."""
        for _ in range(_MAX_STEPS):
            step = self._schedule(record, policy, now)
            if step is None or step.due > now:
                return
            if step.action == planner.START:
                self._start(record, policy, now, change)
            elif step.action == planner.ESCALATE:
                next_level = policy.get_next_level(record.current_level)
                assert next_level is not None  # the planner escalates only below the top level
                self._climb(record, policy, next_level, now, change)
            elif step.action == planner.REPEAT:
                record.repeats_sent = planner.repeats_due(record, policy, now)
                self._transition(record, EscalationEvent.NOTIFY, now, repeat=record.repeats_sent)
                level = policy.get_level(record.current_level)
                assert level is not None  # the planner repeats only a level it found
                self._notify(record, policy, level, now, change, record.repeats_sent)
            elif step.action == planner.AUTO_RESOLVE:
                self._resolve(record, now, "system", reason="auto_resolve_minutes elapsed")
            if not record.is_open:
                return
        raise RuntimeError(f"escalation {record.id}: more than {_MAX_STEPS} steps due at once")

    # ------------------------------------------------------------------ due processing
    async def process_due(self) -> int:
        """Claim and process every record due now, and send the outbox's due deliveries."""
        now = self._clock.now()
        if self._inline:
            # the outbox first: the deliveries the due steps write are queued by those steps
            await self._send_due_deliveries(now)
            return await self._process_due_records(now)
        # a store doing I/O: both at once, so that their calls share its batches and round trips
        processed, _ = await asyncio.gather(self._process_due_records(now), self._send_due_deliveries(now))
        return processed

    async def _process_due_records(self, now: datetime) -> int:
        processed = 0
        batch = self._sched_config.batch_size
        while True:
            claimed = await self._io(self._store.claim_due, now, batch, self._owner, self._lease)
            if self._inline:
                for record in claimed:
                    await self._process_claimed(record, now)
            else:  # together: their writes share a batch (SQLite: one commit, Redis: one round trip)
                await asyncio.gather(*(self._process_claimed(record, now) for record in claimed))
            processed += len(claimed)
            if len(claimed) < batch:
                return processed

    async def _send_due_deliveries(self, now: datetime) -> None:
        """Queue the outbox's deliveries due by ``now`` (new, or retries whose time has come).

        No more are claimed than idle workers can start at once: a claimed delivery is marked
        sending, and one still waiting in this process's queue when the process dies would end
        ``unknown`` and never be sent. What is left stays pending for the next sweep (here, once
        a worker is free, or on another replica)."""
        await self._io(self._store.expire_deliveries, now)
        while True:
            room = min(self._sched_config.batch_size, self._idle_workers())
            self._outbox_backlog = room <= 0
            if room <= 0:
                return
            deliveries = await self._io(self._store.claim_deliveries, now, room, self._owner, self._lease)
            for delivery in deliveries:
                self._enqueue(delivery, self._queued.pop(delivery.id, None), True)
            if len(deliveries) < room:
                return
            self._outbox_backlog = True

    def _idle_workers(self) -> int:
        pool = self._pool
        busy = pool.unfinished if pool is not None and pool.loop is asyncio.get_running_loop() else 0
        return self._sched_config.max_concurrent_jobs - busy

    async def _process_claimed(self, record: EscalationRecord, now: datetime) -> None:
        for _ in range(_CAS_ATTEMPTS):
            expected, seen = record.version, len(record.history)
            change = _Change()
            try:
                policy = self._policy_for(record)
                self._run_steps(record, policy, now, change)
            except Exception as exc:  # a record that cannot be processed must not loop forever
                log.exception("escalation %s failed while processing its due step", record.id)
                record = await self._io(self._store.get, record.id) or record
                expected, seen, change = record.version, len(record.history), _Change(cancel_pending=True)
                if not record.is_open:
                    return
                self._transition(record, EscalationEvent.ERROR, now, error=f"{type(exc).__name__}: {exc}")
                self._close(record, now)
            record.updated_at = now
            if await self._io(
                self._store.update, record, expected, record.history[seen:], change.deliveries, change.cancel_pending
            ):
                self._after_write(record, change, "due")
                if log.isEnabledFor(logging.INFO):
                    log.info("escalation %s: due step done (%s)", record.id, _describe(record))
                return
            record = await self._io(self._store.get, record.id)  # lost a race: decide again
            if record is None or not record.is_open:
                return
        await self._io(self._store.release, record.id, self._owner)

    async def _wake(self) -> None:
        await self.process_due()
        await self._maybe_cleanup()
        if self._running:
            if self._inline:
                due, delivery = self._store.next_due_at(), self._store.next_delivery_at()
            else:
                due, delivery = await asyncio.gather(
                    self._io(self._store.next_due_at), self._io(self._store.next_delivery_at)
                )
            if delivery is not None and (self._queued or self._idle_workers() <= 0):
                delivery = max(delivery, self._clock.now() + _OWN_DELIVERIES_GRACE)
            nxt = _earliest(due, delivery)
            if nxt is not None:
                self._scheduler.wake_at(nxt)

    async def _maybe_cleanup(self) -> None:
        now = self._clock.now()
        interval = timedelta(seconds=self._sched_config.cleanup_interval_seconds)
        if self._last_cleanup is not None and now - self._last_cleanup < interval:
            return
        self._last_cleanup = now
        if self._config.cleanup_after_days > 0:
            removed = await self._io(self._store.cleanup_resolved, timedelta(days=self._config.cleanup_after_days), now)
            if removed:
                log.info(
                    "removed %d escalations closed more than %s days ago", removed, self._config.cleanup_after_days
                )

    def _after_write(self, record: EscalationRecord, change: _Change, action: str) -> None:
        for listener in self._listeners:
            try:
                outcome = listener(record, action)
                if inspect.isawaitable(outcome):
                    self._spawn_listener(outcome)
            except Exception:  # a listener never undoes or blocks a committed change
                log.exception("escalation listener %r failed on %s of %s", listener, action, record.id)
        if change.deliveries:
            for delivery in change.deliveries:
                self._enqueue(delivery, record, False)
        if record.next_escalation_at is not None and self._running:
            self._scheduler.wake_at(record.next_escalation_at)

    # ------------------------------------------------------------------ delivery (outbox)
    def _enqueue(self, delivery: Delivery, record: EscalationRecord | None, claimed: bool) -> None:
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop():
            pool = self._pool = WorkerPool(self._sched_config.max_concurrent_jobs, self._deliver)
        if not claimed:
            self._queued[delivery.id] = record
        pool.put(delivery, record, claimed)

    async def _deliver(self, delivery: Delivery, record: EscalationRecord | None, claimed: bool) -> None:
        now = self._clock.now()
        if not claimed:
            if delivery.id not in self._queued:
                return  # a sweep claimed it meanwhile and queued it to be sent
            args = (delivery.id, now, self._owner, self._lease)
            store = self._store
            started = store.start_delivery(*args) if self._inline else await self._io(store.start_delivery, *args)
            self._queued.pop(args[0], None)  # only now: a sweep that claims it first finds it here
            if started is None:
                return  # cancelled by an acknowledgement, or another engine took it
            delivery = started
        error = None
        limit = self._sched_config.job_timeout_seconds
        try:
            record = record or await self._io(self._store.get, delivery.record_id)
            if record is None:
                raise LookupError(f"escalation {delivery.record_id} no longer exists")
            level = self._policy_for(record).get_level(delivery.level)
            async with _time_limit(limit):
                # the record's own policy snapshot has the delivery's level
                outcome = await self._send(record, level, delivery.target)  # type: ignore[arg-type]
            if outcome is False:
                error = "the notification handler returned False"
        except asyncio.TimeoutError:
            error = f"timed out after {limit}s"
        except Exception as exc:  # noqa: BLE001 - a handler failure is recorded on the delivery
            error = f"{type(exc).__name__}: {exc}"
        await self._finish(delivery, error)
        if self._outbox_backlog and self._running:
            self._outbox_backlog = False
            self._scheduler.wake_at(self._clock.now())  # a worker is free: claim what waits

    async def _send(self, record: EscalationRecord, level: EscalationLevel, target: EscalationTarget) -> Any:
        for resolver in self._channel_resolvers:
            sender = resolver(target)
            if sender is not None:
                return await sender(record, level, target)
        if self._handler is None:
            raise LookupError(f"no notification handler or channel delivers to {target.key}")
        outcome = self._handler(record, level, [target])
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return outcome

    async def _finish(self, delivery: Delivery, error: str | None) -> None:
        now = self._clock.now()
        if error is not None:
            error = bounds.truncate(error)  # last_error is shown to every viewer: keep it short
        if error is None:
            if self._inline:
                self._store.finish_delivery(delivery.id, now, sent=True)
            else:
                await self._io(self._store.finish_delivery, delivery.id, now, sent=True)
            return
        cfg = self._sched_config
        retry_at = None
        if delivery.attempts < cfg.max_attempts:
            backoff = min(cfg.retry_delay_seconds * 2 ** (delivery.attempts - 1), cfg.max_retry_delay_seconds)
            retry_at = now + timedelta(seconds=backoff)
        log.warning(
            "notification of %s for escalation %s (level %d) failed on attempt %d/%d: %s%s",
            delivery.target.key,
            delivery.record_id,
            delivery.level,
            delivery.attempts,
            cfg.max_attempts,
            error,
            f"; retrying at {retry_at.isoformat()}" if retry_at else "; giving up",
        )
        await self._io(self._store.finish_delivery, delivery.id, now, sent=False, error=error, retry_at=retry_at)
        if retry_at is not None and self._running:
            self._scheduler.wake_at(retry_at)


# a store call (fn, args, kwargs), and one waiting for its batch with the future that gets its outcome
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_Pending = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _StoreBatches:
    """Dedicated threads (``store.batch_threads``, default 1) for a blocking store that
    ``prefers_batches``.

    The calls made in one turn of the event loop are handed over together at its next turn (one
    lock and one wake-up, not one per call); they queue up while the threads work, and a free
    thread takes them all and hands them to ``store.run_batch`` (SQLite: one transaction; Redis:
    one pipeline), then hands their outcomes back to their event loop in one wake-up. Compared
    with ``asyncio.to_thread`` per call this saves a hand-off and a loop wake-up per call, the loop
    and the store stop trading the GIL call by call, and the store does one commit or round trip
    per batch. With two threads, one batch is sent while the previous one's results are read
    (Redis). A lone call runs as it would alone. If ``run_batch`` raises (SQLite: the commit
    failed), every call of the batch gets that error. Threads end after a few idle seconds; calls
    start them again.
    """

    _IDLE_SECONDS = 5.0
    _MAX_BATCH = 256  # calls per batch: bounds a batch's transaction and its callers' wait

    def __init__(self, run_batch: Callable[[list[_Call]], list[tuple[Any, Any]]], threads: int = 1) -> None:
        self._run_batch = run_batch
        self._size = max(1, int(threads))
        self._turn: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}  # calls of a loop's current turn
        self._calls: list[_Pending] = []
        self._ready = threading.Condition()
        self._threads = 0  # running
        self._idle = 0  # of those, waiting for calls

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        calls = self._turn.get(loop)
        if calls is None:  # the first call of this turn: hand them over at the next one
            calls = self._turn[loop] = []
            loop.call_soon(self._hand_over, loop)
        calls.append((future, fn, args, kwargs))
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        calls = self._turn.pop(loop)
        with self._ready:
            self._calls += calls
            if self._idle:
                self._ready.notify()
            elif self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._work, name="escalation-store", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._ready:
                idle_until = None
                while not self._calls:  # another thread may take the calls it was woken for
                    now = time.monotonic()
                    idle_until = idle_until or now + self._IDLE_SECONDS
                    if now >= idle_until:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._ready.wait(idle_until - now)
                    self._idle -= 1
                calls, self._calls = self._calls[: self._MAX_BATCH], self._calls[self._MAX_BATCH :]
            self._hand_back(calls, self._run(calls))

    def _run(self, calls: list[_Pending]) -> list[tuple[Any, Any]]:
        if len(calls) == 1:
            _, fn, args, kwargs = calls[0]
            try:
                return [(fn(*args, **kwargs), None)]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as to_thread does
                return [(None, exc)]
        try:
            return self._run_batch([(fn, args, kwargs) for _, fn, args, kwargs in calls])
        except BaseException as exc:  # noqa: BLE001 - the batch did not take effect: no result stands
            return [(None, exc)] * len(calls)

    @staticmethod
    def _hand_back(calls: list[_Pending], outcomes: list[tuple[Any, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        for (future, *_), (result, error) in zip(calls, outcomes):
            by_loop.setdefault(future.get_loop(), []).append((future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_StoreBatches._settle, settled)
            except RuntimeError:  # that loop has closed: nobody waits for these
                pass

    @staticmethod
    def _settle(outcomes: list[tuple[Any, ...]]) -> None:
        for future, result, error in outcomes:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


# the state machine's table keyed by plain strings: a transition is one dict lookup
_NEXT_STATE = {
    (state.value, event): target.value for (state, event), target in DEFAULT_STATE_MACHINE.TRANSITIONS.items()
}

if sys.version_info >= (3, 11):
    _time_limit = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def _time_limit(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None  # called from a task
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()


def _private_copy(policy: EscalationPolicy | dict[str, Any]) -> EscalationPolicy:
    """A copy the caller cannot change afterwards: running escalations keep the policy as it was."""
    return EscalationPolicy.from_dict(policy.to_dict() if isinstance(policy, EscalationPolicy) else policy)


def _refuse(action: str, check: Callable[[], Any]) -> EscalationResult | None:
    """The ``invalid`` result when ``check()`` finds an input out of bounds (core/bounds.py)."""
    try:
        check()
    except ValueError as exc:
        return EscalationResult.failure_result(None, action, str(exc), code="invalid")
    return None


def _refuse_action(action: str, actor: Any, text: Any, text_field: str = "note") -> EscalationResult | None:
    return _refuse(
        action,
        lambda: (
            bounds.check_text(actor, "actor"),
            text is None or bounds.check_text(text, text_field, bounds.MAX_NOTE),
        ),
    )


def _earliest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _describe(record: EscalationRecord) -> str:
    nxt = f", next {record.next_action} at {record.next_escalation_at.isoformat()}" if record.next_escalation_at else ""
    return f"{record.state} at level {record.current_level}{nxt}"
