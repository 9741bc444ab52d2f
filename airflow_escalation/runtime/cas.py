"""Read → decide → compare-and-swap: how every change of a stored record is written.

No global lock: a decision is made on the record as read, written only if nobody wrote it
meanwhile (its ``version``), and on a lost race the record is read again and decided again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from airflow_escalation.core.clock import Clock
from airflow_escalation.core.models import EscalationRecord, EscalationResult
from airflow_escalation.core.states import InvalidTransition
from airflow_escalation.runtime.decisions import Change
from airflow_escalation.runtime.store_calls import StoreCalls

log = logging.getLogger("airflow_escalation.engine")

ATTEMPTS = 20  # lost races before a caller is told to try again

Decide = Callable[[EscalationRecord, datetime], "Change | EscalationResult"]
AfterWrite = Callable[[EscalationRecord, Change, str], None]


def conflict(action: str) -> EscalationResult:
    return EscalationResult.failure_result(None, action, "too many concurrent writers; try again", code="conflict")


async def mutate(
    calls: StoreCalls,
    clock: Clock,
    record_id: str,
    action: str,
    decide: Decide,
    after_write: AfterWrite,
    current: EscalationRecord | None = None,
) -> tuple[EscalationResult, Change | None]:
    """Apply ``decide`` to the stored record; the result and, when written, the change."""
    store = calls.store
    record: EscalationRecord | None
    for _ in range(ATTEMPTS):
        if current is not None:
            record, current = current, None
        else:
            record = store.get(record_id) if calls.inline else await calls(store.get, record_id)
        if record is None:
            return EscalationResult.failure_result(
                None, action, f"escalation {record_id!r} not found", code="not_found"
            ), None
        if not record.is_open:
            return EscalationResult.failure_result(
                record, action, f"escalation is {record.state}; nothing more can change", code="conflict"
            ), None
        now = clock.now()
        expected, seen = record.version, len(record.history)
        try:
            change = decide(record, now)
        except InvalidTransition as exc:
            return EscalationResult.failure_result(record, action, str(exc), code="conflict"), None
        except Exception as exc:  # a decision that cannot be made changes nothing
            log.exception("escalation %s: %s failed", record_id, action)
            return EscalationResult.failure_result(record, action, f"{type(exc).__name__}: {exc}"), None
        if isinstance(change, EscalationResult):
            return change, None
        record.updated_at = now
        args = (record, expected, record.history[seen:], change.written, change.cancel_pending)
        written = store.update(*args) if calls.inline else await calls(store.update, *args)
        if written:
            after_write(record, change, action)
            if log.isEnabledFor(logging.INFO):
                log.info("escalation %s: %s (%s)", record.id, action, describe(record))
            targets = [d.target for d in change.deliveries]
            return EscalationResult.success_result(record, action, targets, queued=targets), change
    return conflict(action), None


def describe(record: EscalationRecord) -> str:
    nxt = f", next {record.next_action} at {record.next_escalation_at.isoformat()}" if record.next_escalation_at else ""
    return f"{record.state} at level {record.current_level}{nxt}"
