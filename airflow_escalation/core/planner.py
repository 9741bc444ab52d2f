"""What a record does next, and when: a pure function of the record, its policy and the time.

Candidates while a record waits at level N (fired at ``f``, ``r`` repeats sent):

- ``repeat``       at f + (r + 1) x repeat_interval, while r < repeat_count
- ``escalate``     at base + delay(N + 1), base = f (default) or the trigger time
- ``auto_resolve`` at f + auto_resolve_minutes of level N
- ``timeout``      at f + the policy's timeout_minutes, once N is the top level (the ladder is
  spent and nobody answered: the record ends TIMED_OUT)

A notify-only level (``require_ack: false``) offers no ``escalate``: the ladder goes no further
(its last round resolves the record). ``escalate``, ``repeat`` and ``timeout`` apply while the
record pages (:func:`is_paging`). A record that has not started waits for ``start`` at
trigger + delay(1). When several candidates are already overdue (a wake-up came late, or business
hours held them), the most decisive wins (auto_resolve, then timeout, then escalate, then repeat)
and missed repeats are not sent in a burst.

Business hours, every mode decided here: ``wait`` moves a notification's due time to the
window's next opening (:func:`plan`); ``skip`` drops a round due outside the window
(:func:`skips_notification`); ``notify`` sends it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from airflow_escalation.core.business_hours import is_business_time, next_business_time
from airflow_escalation.core.models import EscalationLevel, EscalationPolicy, EscalationRecord
from airflow_escalation.core.types import BusinessHoursMode, DelayBasis, EscalationState

START = "start"
REPEAT = "repeat"
ESCALATE = "escalate"
AUTO_RESOLVE = "auto_resolve"
TIME_OUT = "timeout"
NOTIFYING_ACTIONS = frozenset({START, REPEAT, ESCALATE})
_PRIORITY = {AUTO_RESOLVE: 0, TIME_OUT: 1, ESCALATE: 2, START: 2, REPEAT: 3}
# plain strings: enum attribute access is slow on this hot path
_PENDING = EscalationState.PENDING.value
_ACTIVE = EscalationState.ACTIVE.value
_ACKNOWLEDGED = EscalationState.ACKNOWLEDGED.value


@dataclass(frozen=True)
class Step:
    action: str
    raw_due: datetime  # when the policy says it is due
    due: datetime  # when it will run (business hours may hold it)


def is_paging(record: EscalationRecord, policy: EscalationPolicy) -> bool:
    state = record.state
    return state == _ACTIVE or (state == _ACKNOWLEDGED and policy.continues_after_ack)


def candidates(record: EscalationRecord, policy: EscalationPolicy) -> list[tuple[datetime, str]]:
    state = record.state
    if state == _PENDING:
        return [(record.created_at + policy.levels[0].delay, START)]
    if state not in (_ACTIVE, _ACKNOWLEDGED):
        return []
    level = policy.get_level(record.current_level)
    fired = record.level_fired_at
    if level is None or fired is None:
        return []
    found: list[tuple[datetime, str]] = []
    auto_resolve = level.auto_resolve_timeout if level.auto_resolve_minutes > 0 else None
    if auto_resolve is not None:
        found.append((fired + auto_resolve, AUTO_RESOLVE))
    if is_paging(record, policy):
        nxt = policy.get_next_level(level.level)
        if nxt is None:
            if policy.timeout_minutes > 0:
                found.append((fired + policy.timeout, TIME_OUT))
        elif level.require_ack:
            base = fired if policy.delay_basis is DelayBasis.PREVIOUS_LEVEL else record.created_at
            found.append((base + nxt.delay, ESCALATE))
        if record.repeats_sent < level.repeat_count:
            found.append((fired + level.repeat_interval * (record.repeats_sent + 1), REPEAT))
    return found


def plan(record: EscalationRecord, policy: EscalationPolicy, now: datetime, business_hours: bool = True) -> Step | None:
    """The next step for ``record``: overdue ones first (most decisive wins), else the earliest."""
    found = candidates(record, policy)
    if not found:
        return None
    overdue = [c for c in found if c[0] <= now]
    if overdue:
        raw_due, action = min(overdue, key=lambda c: _PRIORITY[c[1]])
    else:
        raw_due, action = min(found, key=lambda c: (c[0], _PRIORITY[c[1]]))
    due = raw_due
    if (
        business_hours
        and action in NOTIFYING_ACTIONS
        and policy.business_hours_only
        and policy.business_hours_mode is BusinessHoursMode.WAIT
    ):
        due = next_business_time(policy, max(raw_due, now) if overdue else raw_due)
    return Step(action, raw_due, due)


def repeats_due(record: EscalationRecord, policy: EscalationPolicy, now: datetime) -> int:
    """How many of the level's repeats are due by ``now`` (missed ones are counted, not re-sent)."""
    level = policy.get_level(record.current_level)
    fired = record.level_fired_at
    if level is None or fired is None or level.repeat_count == 0:
        return record.repeats_sent
    elapsed = int((now - fired) / level.repeat_interval)
    return max(record.repeats_sent + 1, min(elapsed, level.repeat_count))


def paged_level(record: EscalationRecord, policy: EscalationPolicy, action: str) -> EscalationLevel | None:
    """The level a step of ``action`` notifies (None for a step that notifies nobody)."""
    if action == START:
        return policy.levels[0] if policy.levels else None
    if action == REPEAT:
        return policy.get_level(record.current_level)
    if action == ESCALATE:
        return policy.get_next_level(record.current_level)
    return None


def skips_notification(policy: EscalationPolicy, now: datetime, business_hours: bool = True) -> bool:
    """Whether a round due at ``now`` is dropped: ``skip`` mode outside business hours."""
    return (
        business_hours
        and policy.business_hours_only
        and policy.business_hours_mode is BusinessHoursMode.SKIP
        and not is_business_time(policy, now)
    )
