"""What a step or a human action does to a record: pure decisions, no I/O.

Each function changes the record in hand and says in a :class:`Change` what else the write
carries (the deliveries it pages, whether unsent ones are cancelled). The state moves are asked
of ``core.states`` (the one table); what is due next, and whether business hours hold or skip a
notification, of ``core.planner``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable

from airflow_escalation.core import planner
from airflow_escalation.core.models import (
    Delivery,
    EscalationLevel,
    EscalationPolicy,
    EscalationRecord,
    EscalationResult,
)
from airflow_escalation.core.severity import normalize_severity
from airflow_escalation.core.states import DEFAULT_STATE_MACHINE, InvalidTransition
from airflow_escalation.core.types import EscalationEvent, EscalationState

_TRANSITIONS = DEFAULT_STATE_MACHINE.TRANSITIONS  # (state, event) -> state, both already enums here

ConditionEvaluator = Callable[[EscalationRecord, Any], Awaitable[bool] | bool]

_MAX_STEPS = 64  # bound on steps taken for one record in one wake-up (delay-0 ladders)


@dataclass
class Change:
    """What a decision writes besides the record itself."""

    deliveries: list[Delivery] = field(default_factory=list)
    cancel_pending: bool = False
    # written with the change by the engine's change hooks (PagerDuty follow-ups): sent by the
    # outbox, never attempted before a call returns nor reported among its targets
    follow_ups: list[Delivery] = field(default_factory=list)
    from_state: str | None = None  # the record's state before the change (None: created by it)
    escalations_before: int = 0
    muted_by: Any = None  # the on-call Suppression (silence, window) muting this step's notifications

    @property
    def written(self) -> list[Delivery]:
        """Every delivery the write carries."""
        return self.deliveries + self.follow_ups if self.follow_ups else self.deliveries


class Decisions:
    """The engine's decisions, given its business-hours switch and condition evaluators."""

    def __init__(self, check_business_hours: bool, evaluators: dict[str, ConditionEvaluator]) -> None:
        self.check_business_hours = check_business_hours
        self.evaluators = evaluators

    # ------------------------------------------------------------------ state moves
    def transition(
        self, record: EscalationRecord, event: EscalationEvent, now: datetime, actor: str = "system", **details: Any
    ) -> None:
        from_state = EscalationState(record.state)
        to_state = _TRANSITIONS.get((from_state, event))
        if to_state is None:
            raise InvalidTransition(from_state, event)
        record.state = to_state
        if details:
            details = {k: v for k, v in details.items() if v is not None}
        record.add_history_event(event.value, now, actor, from_state=from_state.value, **details)

    @staticmethod
    def close(record: EscalationRecord, now: datetime) -> None:
        record.closed_at = now
        record.next_escalation_at = None
        record.next_action = None

    def resolve(self, record: EscalationRecord, now: datetime, actor: str, **details: Any) -> None:
        self.transition(record, EscalationEvent.RESOLVE, now, actor, **details)
        record.resolved_at = now
        record.resolved_by = actor
        self.close(record, now)

    def schedule(self, record: EscalationRecord, policy: EscalationPolicy, now: datetime) -> planner.Step | None:
        step = planner.plan(record, policy, now, self.check_business_hours)
        record.next_escalation_at = step.due if step else None
        record.next_action = step.action if step else None
        return step

    # ------------------------------------------------------------------ human actions
    def acknowledge(
        self, record: EscalationRecord, policy: EscalationPolicy, now: datetime, actor: str, note: str | None
    ) -> Change | EscalationResult:
        if record.state == EscalationState.ACKNOWLEDGED:
            return EscalationResult.failure_result(
                record, "acknowledge", f"already acknowledged by {record.acknowledged_by}", code="conflict"
            )
        self.transition(record, EscalationEvent.ACKNOWLEDGE, now, actor, note=note)
        if record.acknowledged_at is None:
            record.acknowledged_at = now
            record.acknowledged_by = actor
        self.schedule(record, policy, now)
        return Change(cancel_pending=not policy.continues_after_ack)

    def resolve_by(self, record: EscalationRecord, now: datetime, actor: str, note: str | None) -> Change:
        self.resolve(record, now, actor, note=note)
        return Change(cancel_pending=True)

    def cancel(self, record: EscalationRecord, now: datetime, actor: str, reason: str) -> Change:
        self.transition(record, EscalationEvent.CANCEL, now, actor, reason=reason)
        record.metadata["cancelled_by"] = actor
        record.metadata["cancel_reason"] = reason
        self.close(record, now)
        return Change(cancel_pending=True)

    def escalate(
        self, record: EscalationRecord, policy: EscalationPolicy, now: datetime, actor: str, force: bool
    ) -> Change | EscalationResult:
        change = Change()
        if record.state == EscalationState.PENDING:
            self.start(record, policy, now, change, actor)
        elif record.state == EscalationState.ACKNOWLEDGED and not force:
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
            self.climb(record, policy, target, now, change, actor, manual=True)
        if record.is_open:
            self.schedule(record, policy, now)
        return change

    # ------------------------------------------------------------------ the ladder
    def notify(
        self,
        record: EscalationRecord,
        policy: EscalationPolicy,
        level: EscalationLevel,
        now: datetime,
        change: Change,
        round_: int,
    ) -> None:
        """Queue one round of notifications for ``level`` (unless business hours skip it)."""
        if change.muted_by is not None:  # a silence or maintenance window (docs/oncall.md)
            record.add_history_event("notification_muted", now, round=round_, **change.muted_by.to_dict())
        elif planner.skips_notification(policy, now, self.check_business_hours):
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
            self.resolve(record, now, "system", reason="level requires no acknowledgement")

    def start(
        self, record: EscalationRecord, policy: EscalationPolicy, now: datetime, change: Change, actor: str = "system"
    ) -> None:
        self.transition(record, EscalationEvent.START, now, actor)
        record.current_level = policy.levels[0].level
        record.level_fired_at = now
        record.repeats_sent = 0
        self.notify(record, policy, policy.levels[0], now, change, 0)

    def climb(
        self,
        record: EscalationRecord,
        policy: EscalationPolicy,
        level: EscalationLevel,
        now: datetime,
        change: Change,
        actor: str = "system",
        manual: bool = False,
    ) -> None:
        if policy.max_escalations and record.escalation_count >= policy.max_escalations:
            self.transition(
                record, EscalationEvent.MAX_LEVEL_REACHED, now, actor, max_escalations=policy.max_escalations
            )
            self.close(record, now)
            return
        if not self.conditions_met(record, level):
            record.add_history_event(
                "level_skipped", now, actor, skipped_level=level.level, reason="level conditions not met"
            )
            record.current_level = level.level
            record.level_fired_at = now
            record.repeats_sent = level.repeat_count  # a skipped level sends no repeats either
            return
        self.transition(record, EscalationEvent.ESCALATE, now, actor, to_level=level.level, manual=manual or None)
        record.current_level = level.level
        record.escalation_count += 1
        record.level_fired_at = now
        record.repeats_sent = 0
        self.transition(record, EscalationEvent.ESCALATE_SUCCESS, now, actor)
        self.notify(record, policy, level, now, change, 0)

    def conditions_met(self, record: EscalationRecord, level: EscalationLevel) -> bool:
        for name, expected in level.conditions.items():
            if name == "severity":  # built in: the level applies to these severities only
                allowed = [normalize_severity(s) for s in (expected if isinstance(expected, list) else [expected])]
                if record.severity not in allowed:
                    return False
                continue
            evaluator = self.evaluators.get(name)
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

    def run_steps(self, record: EscalationRecord, policy: EscalationPolicy, now: datetime, change: Change) -> None:
        """Take every step due by ``now``, then book the next one."""
        for _ in range(_MAX_STEPS):
            step = self.schedule(record, policy, now)
            if step is None or step.due > now:
                return
            if step.action == planner.START:
                self.start(record, policy, now, change)
            elif step.action == planner.ESCALATE:
                next_level = policy.get_next_level(record.current_level)
                assert next_level is not None  # the planner escalates only below the top level
                self.climb(record, policy, next_level, now, change)
            elif step.action == planner.REPEAT:
                record.repeats_sent = planner.repeats_due(record, policy, now)
                self.transition(record, EscalationEvent.NOTIFY, now, repeat=record.repeats_sent)
                level = policy.get_level(record.current_level)
                assert level is not None  # the planner repeats only a level it found
                self.notify(record, policy, level, now, change, record.repeats_sent)
            elif step.action == planner.AUTO_RESOLVE:
                self.resolve(record, now, "system", reason="auto_resolve_minutes elapsed")
            elif step.action == planner.TIME_OUT:
                self.transition(record, EscalationEvent.TIMEOUT, now, "system", timeout_minutes=policy.timeout_minutes)
                self.close(record, now)
            if not record.is_open:
                return
        raise RuntimeError(f"escalation {record.id}: more than {_MAX_STEPS} steps due at once")
