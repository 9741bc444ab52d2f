"""The escalation engine: triggers, human actions and due-time processing, wired together.

No global lock. Every change is read → decide → compare-and-swap (``runtime/cas.py``) on the
decisions of ``runtime/decisions.py``; a lost race is re-read and decided again. Notifications
are written with the transition that causes them (the outbox) and sent by ``runtime/outbox.py``.
Store calls go through ``runtime/store_calls.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from airflow_escalation.core import bounds
from airflow_escalation.runtime import metrics as engine_metrics
from airflow_escalation.core.clock import SYSTEM_CLOCK, Clock
from airflow_escalation.core.models import (
    Delivery,
    EscalationLevel,
    EscalationPolicy,
    EscalationRecord,
    EscalationResult,
    EscalationStats,
    EscalationTarget,
    SUPPRESSED_BY,
    dag_id_of,
)
from airflow_escalation.core.types import EscalationEvent, EscalationState, EscalationTrigger
from airflow_escalation.runtime.cas import ATTEMPTS, conflict, describe, mutate
from airflow_escalation.runtime.decisions import Change, ConditionEvaluator, Decisions
from airflow_escalation.runtime.outbox import Outbox
from airflow_escalation.runtime.store_calls import StoreCalls
from airflow_escalation.scheduling.base import BaseEscalationScheduler, SchedulerConfig, SchedulerType
from airflow_escalation.scheduling.factory import create_scheduler
from airflow_escalation.stores.base import BaseEscalationStore
from airflow_escalation.stores.factory import create_store

log = logging.getLogger("airflow_escalation.engine")

NotificationHandler = Callable[[EscalationRecord, EscalationLevel, list[EscalationTarget]], Awaitable[Any] | Any]
# Returns a sender for targets it handles (e.g. a target with an Airflow conn_id), else None.
TargetSender = Callable[[EscalationRecord, EscalationLevel, EscalationTarget], Awaitable[Any]]
ChannelResolver = Callable[[EscalationTarget], TargetSender | None]
# Deliveries to write with a change, in its compare-and-swap: (record, action, state before, now).
ChangeHook = Callable[[EscalationRecord, str, "str | None", datetime], list[Delivery]]

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
    # trigger and escalate attempt the notifications their step wrote before they return (each
    # bounded by job_timeout_seconds), so an acknowledgement right after does not cancel them;
    # False: they return once written (the outbox sends them), targets_notified empty
    send_before_return: bool = True


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
        self._change_hooks: list[ChangeHook] = []
        self._metrics = engine_metrics.NULL_METRICS
        self._evaluators = dict(config.condition_evaluators)
        self._decisions = Decisions(config.check_business_hours, self._evaluators)
        self._owner = config.engine_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = timedelta(seconds=sched_config.lease_seconds)
        self._calls = StoreCalls(self._store)
        self._inline = self._calls.inline
        self._outbox = Outbox(
            self._calls, self._clock, sched_config, self._owner, self._policy_for, self._send_routed, self._wake_at
        )
        self._outbox.measure = lambda outcome, delivery: self._measure(self._metrics.delivery, outcome, delivery)
        self._running = False
        self._last_cleanup: datetime | None = None
        self._oncall: Any = None  # airflow_escalation.oncall.runtime.OnCall (set_oncall)

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
    def store_calls(self) -> StoreCalls:
        """``await engine.store_calls(fn, *args)``: a store call off the event loop."""
        return self._calls

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

    def set_oncall(self, oncall: Any) -> None:
        """Ask ``oncall`` (:class:`airflow_escalation.oncall.runtime.OnCall`) about silences and
        maintenance windows (at triggers and due steps) and where ``schedule:``/``user:``
        targets lead at delivery time (docs/oncall.md)."""
        self._oncall = oncall

    @property
    def oncall(self) -> Any:
        return self._oncall

    def add_listener(self, listener: Callable[[EscalationRecord, str], Any]) -> None:
        """Call ``listener(record, action)`` after every committed change of a record.

        ``action`` is ``trigger``, ``trigger_existing``, ``acknowledge``, ``resolve``, ``cancel``,
        ``escalate`` or ``due`` (a scheduled step). Async listeners run in the background. Used to
        close external incidents (PagerDuty resolve) or push updates; a listener's failure is
        logged and changes nothing.
        """
        self._listeners.append(listener)

    def add_change_hook(self, hook: ChangeHook) -> None:
        """Call ``hook(record, action, from_state, now)`` with every decided change, before it is
        written; the deliveries it returns are written with the change (the same compare-and-swap,
        so exactly once whichever replica made it) and sent by the outbox, never before the call
        returns nor among its targets. Used to tell PagerDuty of an acknowledgement. A hook that
        raises adds nothing."""
        self._change_hooks.append(hook)

    @property
    def metrics(self) -> engine_metrics.EngineMetrics:
        """Where measurements go (``runtime.metrics.NULL_METRICS``: nowhere)."""
        return self._metrics

    def set_metrics(self, metrics: engine_metrics.EngineMetrics) -> None:
        """Report to ``metrics`` (runtime/metrics.py); ignored when ``metrics_enabled`` is False."""
        if self._config.metrics_enabled:
            self._metrics = metrics

    def _extend(self, record: EscalationRecord, action: str, change: Change, now: datetime) -> None:
        for hook in self._change_hooks:
            try:
                change.follow_ups.extend(hook(record, action, change.from_state, now))
            except Exception:  # a hook never blocks the change itself
                log.exception("escalation change hook %r failed on %s of %s", hook, action, record.id)

    def _measure(self, report: Callable[..., None], *args: Any) -> None:
        if self._metrics is engine_metrics.NULL_METRICS:
            return
        try:
            report(*args)
        except Exception:  # metrics never fail an engine call
            log.exception("escalation metrics failed")

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
                self._outbox.unfinished,
            )
        self._outbox.close()
        log.info("escalation engine %s stopped", self._owner)

    async def drain(self) -> None:
        """Wait until every delivery queued by this engine has been attempted."""
        await self._outbox.join()
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
            nxt = _earliest(await self._calls(self._store.next_due_at), await self._calls(self._store.next_delivery_at))
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
        suppression = (
            (await self._oncall.snapshot(now)).match(context, policy.name, incident_id) if self._oncall else None
        )

        # an incident's open record belongs to its DAG: a trigger of another DAG never joins it
        # nor is suppressed by its cooldown, whatever the incident id says
        dag_id = dag_id_of(context)
        for _ in range(ATTEMPTS):
            store = self._store
            existing = (
                store.find_open(incident_id, policy.name, dag_id)
                if self._inline
                else await self._calls(store.find_open, incident_id, policy.name, dag_id)
            )
            if existing is not None:
                return await self._retrigger(existing, trigger_type, triggered_by)
            if policy.cooldown_minutes > 0:
                last = await self._calls(self._store.last_closed, incident_id, policy.name, dag_id)
                if (
                    last is not None
                    and last.closed_at is not None
                    and now - last.closed_at < policy.cooldown
                    and last.suppressed_by is None  # a silenced trigger starts no cooldown
                ):
                    until = last.closed_at + policy.cooldown
                    self._measure(self._metrics.escalation, engine_metrics.SUPPRESSED, policy.name)
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
                state=EscalationState.PENDING,
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
            change = Change()
            if suppression is not None:  # silenced: recorded, closed, nothing sent (docs/oncall.md)
                record.metadata[SUPPRESSED_BY] = suppression.to_dict()
                record.add_history_event("suppressed", now, triggered_by, **suppression.to_dict())
                self._decisions.transition(record, EscalationEvent.CANCEL, now, "system", reason=suppression.label)
                self._decisions.close(record, now)
            try:
                if suppression is None:
                    self._decisions.run_steps(record, policy, now, change)
            except Exception as exc:  # e.g. a level condition without an evaluator
                log.exception("escalation of incident %r could not start", incident_id)
                return EscalationResult.failure_result(
                    None, "trigger", f"policy {policy.name!r} cannot start: {type(exc).__name__}: {exc}"
                )
            self._extend(record, "trigger", change, now)
            stored = (
                store.create(record, change.written)
                if self._inline
                else await self._calls(store.create, record, change.written)
            )
            if stored is None:
                continue  # another engine opened it first: join that one
            record.version = stored.version
            self._after_write(record, change, "trigger", queue=not self._config.send_before_return)
            if suppression is not None:
                return EscalationResult.failure_result(
                    record,
                    "trigger",
                    f"suppressed by {suppression.label} until {suppression.ends_at.isoformat()}",
                    code="suppressed",
                )
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "escalation %s triggered for incident %r under policy %r (%s)",
                    record.id,
                    incident_id,
                    policy.name,
                    describe(record),
                )
            return EscalationResult.success_result(
                record,
                "trigger",
                await self._send_written(record, change),
                f"escalation triggered at level {record.current_level}",
                queued=[d.target for d in change.deliveries],
            )
        return conflict("trigger")

    async def _retrigger(
        self, existing: EscalationRecord, trigger_type: EscalationTrigger, actor: str
    ) -> EscalationResult:
        def join(record: EscalationRecord, now: datetime) -> Change:
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
            return Change()

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
        return await self._mutate(
            record_id,
            "acknowledge",
            lambda record, now: self._decisions.acknowledge(
                record, self._policy_for(record), now, acknowledged_by, note
            ),
        )

    async def resolve(self, record_id: str, resolved_by: str = "system", note: str | None = None) -> EscalationResult:
        if (refused := _refuse_action("resolve", resolved_by, note)) is not None:
            return refused
        return await self._mutate(
            record_id, "resolve", lambda record, now: self._decisions.resolve_by(record, now, resolved_by, note)
        )

    async def cancel(self, record_id: str, cancelled_by: str = "system", reason: str = "") -> EscalationResult:
        if (refused := _refuse_action("cancel", cancelled_by, reason, "reason")) is not None:
            return refused
        return await self._mutate(
            record_id, "cancel", lambda record, now: self._decisions.cancel(record, now, cancelled_by, reason)
        )

    async def escalate(self, record_id: str, force: bool = False, escalated_by: str = "system") -> EscalationResult:
        """Escalate now: start a pending record, or climb to the next level.

        ``force`` also escalates an acknowledged record (back to active at the next level) and,
        at the top level, pages the top level again. ``max_escalations`` still applies.
        """
        if (refused := _refuse_action("escalate", escalated_by, None)) is not None:
            return refused
        return await self._mutate(
            record_id,
            "escalate",
            lambda record, now: self._decisions.escalate(record, self._policy_for(record), now, escalated_by, force),
        )

    async def _mutate(
        self,
        record_id: str,
        action: str,
        decide: Callable[[EscalationRecord, datetime], Change | EscalationResult],
        current: EscalationRecord | None = None,
    ) -> EscalationResult:
        queue = not self._config.send_before_return

        def decide_and_extend(record: EscalationRecord, now: datetime) -> Change | EscalationResult:
            before, climbs = record.state, record.escalation_count
            change = decide(record, now)
            if isinstance(change, Change):
                change.from_state, change.escalations_before = before, climbs
                self._extend(record, action, change, now)
            return change

        result, change = await mutate(
            self._calls,
            self._clock,
            record_id,
            action,
            decide_and_extend,
            lambda record, change, action: self._after_write(record, change, action, queue=queue),
            current,
        )
        if change is not None and change.deliveries and not queue:
            assert result.record is not None  # written
            result.targets_notified = await self._send_written(result.record, change)
        return result

    async def _send_written(self, record: EscalationRecord, change: Change) -> list[EscalationTarget]:
        """Attempt the deliveries ``change`` wrote, here and now when ``send_before_return``;
        the targets they reached."""
        if not change.deliveries or not self._config.send_before_return:
            return []
        sent = await self._outbox.send_now(change.deliveries, record)
        return [d.target for d, ok in zip(change.deliveries, sent) if ok]

    # ------------------------------------------------------------------ due processing
    async def process_due(self) -> int:
        """Claim and process every record due now, and send the outbox's due deliveries."""
        now = self._clock.now()
        if self._inline:
            # the outbox first: the deliveries the due steps write are queued by those steps
            await self._outbox.send_due(now)
            return await self._process_due_records(now)
        # a store doing I/O: both at once, so that their calls share its batches and round trips
        processed, _ = await asyncio.gather(self._process_due_records(now), self._outbox.send_due(now))
        return processed

    async def _process_due_records(self, now: datetime) -> int:
        processed = 0
        batch = self._sched_config.batch_size
        while True:
            claimed = await self._calls(self._store.claim_due, now, batch, self._owner, self._lease)
            quiet = await self._oncall.snapshot(now) if self._oncall is not None and claimed else None
            if self._inline:
                for record in claimed:
                    await self._process_claimed(record, now, quiet)
            else:  # together: their writes share a batch (SQLite: one commit, Redis: one round trip)
                await asyncio.gather(*(self._process_claimed(record, now, quiet) for record in claimed))
            processed += len(claimed)
            if len(claimed) < batch:
                return processed

    async def _process_claimed(self, record: EscalationRecord, now: datetime, quiet: Any = None) -> None:
        decisions = self._decisions
        muted_by = quiet.match(record.context, record.policy_name, record.incident_id) if quiet else None
        if record.next_escalation_at is not None:
            late = (self._clock.now() - record.next_escalation_at).total_seconds()
            self._measure(self._metrics.lateness, max(0.0, late))
        for _ in range(ATTEMPTS):
            expected, seen = record.version, len(record.history)
            change = Change(from_state=record.state, escalations_before=record.escalation_count, muted_by=muted_by)
            try:
                policy = self._policy_for(record)
                decisions.run_steps(record, policy, now, change)
            except Exception as exc:  # a record that cannot be processed must not loop forever
                log.exception("escalation %s failed while processing its due step", record.id)
                record = await self._calls(self._store.get, record.id) or record
                expected, seen = record.version, len(record.history)
                change = Change(
                    cancel_pending=True, from_state=record.state, escalations_before=record.escalation_count
                )
                if not record.is_open:
                    return
                decisions.transition(record, EscalationEvent.ERROR, now, error=f"{type(exc).__name__}: {exc}")
                decisions.close(record, now)
            self._extend(record, "due", change, now)
            record.updated_at = now
            if await self._calls(
                self._store.update, record, expected, record.history[seen:], change.written, change.cancel_pending
            ):
                self._after_write(record, change, "due")
                if log.isEnabledFor(logging.INFO):
                    log.info("escalation %s: due step done (%s)", record.id, describe(record))
                return
            record = await self._calls(self._store.get, record.id)  # lost a race: decide again
            if record is None or not record.is_open:
                return
        await self._calls(self._store.release, record.id, self._owner)

    async def _wake(self) -> None:
        await self.process_due()
        await self._maybe_cleanup()
        if self._running:
            if self._inline:
                due, delivery = self._store.next_due_at(), self._store.next_delivery_at()
            else:
                due, delivery = await asyncio.gather(
                    self._calls(self._store.next_due_at), self._calls(self._store.next_delivery_at)
                )
            if delivery is not None and (self._outbox.queued or self._outbox.idle_workers() <= 0):
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
            removed = await self._calls(
                self._store.cleanup_resolved, timedelta(days=self._config.cleanup_after_days), now
            )
            if removed:
                log.info(
                    "removed %d escalations closed more than %s days ago", removed, self._config.cleanup_after_days
                )

    def _wake_at(self, when: datetime) -> None:
        if self._running:
            self._scheduler.wake_at(when)

    def _after_write(self, record: EscalationRecord, change: Change, action: str, queue: bool = True) -> None:
        self._measure(
            engine_metrics.report_change, self._metrics, record, change.from_state, action, change.escalations_before
        )
        for listener in self._listeners:
            try:
                outcome = listener(record, action)
                if inspect.isawaitable(outcome):
                    self._spawn_listener(outcome)
            except Exception:  # a listener never undoes or blocks a committed change
                log.exception("escalation listener %r failed on %s of %s", listener, action, record.id)
        if queue:  # else the caller sends them itself (send_before_return)
            for delivery in change.deliveries:
                self._outbox.enqueue(delivery, record, False)
        for delivery in change.follow_ups:  # always the outbox's
            self._outbox.enqueue(delivery, record, False)
        if record.next_escalation_at is not None and self._running:
            self._scheduler.wake_at(record.next_escalation_at)

    # ------------------------------------------------------------------ delivery
    async def _send_routed(self, record: EscalationRecord, level: EscalationLevel, delivery: Delivery) -> Any:
        """A ``schedule:``/``user:`` target goes to whom on call says now; others as written."""
        if self._oncall is not None:
            outcome = await self._oncall.send(delivery, self._clock.now(), lambda t: self._send(record, level, t))
            if outcome is not self._oncall.NOT_MINE:
                return outcome
        return await self._send(record, level, delivery.target)

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
