"""``EscalationStateTrigger``: wait in the triggerer until an escalation reaches a state.

Used by ``EscalationSensor`` and by ``EscalationOperator(wait_for=...)``. It talks to the
escalation service through the async methods of ``EscalationHook`` and shares one poll per
triggerer (:mod:`airflow_escalation.triggers.poller`): 1,000 waiting triggers cost
``ceil(1000 / 200)`` requests per interval, not 1,000.

Events (one per run, then the trigger ends), payload ``{"status", "record_id", "state",
"message", "record"}``:

- ``success``: the record is in one of ``states``;
- ``failed_state``: it reached one of ``failed_states`` (default: every terminal state not in
  ``states``), so it can never get there;
- ``timeout``: ``timeout_at`` passed first;
- ``not_found``: the service does not know the record;
- ``error``: a refusal a retry will not fix (connection missing, credentials refused, ...).

Idempotent: the trigger only reads. If it runs twice (triggerer HA) or moves to another
triggerer, each copy yields the same event for the same state and Airflow keeps the first.

``end_from_trigger=True`` (what ``EscalationSensor`` and ``EscalationOperator`` use) works around
a race in Airflow 3.3.2: when a trigger fires within seconds of the deferral, the resumed task
instance can be queued before the scheduler has processed the executor's "success" event of the
process that deferred (0.5 to 6 s later with the LocalExecutor in the real-stack test); that late
event, for the same task-instance key, makes the scheduler fail the queued instance as "killed
externally". So when the wanted state is seen less than ``RACE_WINDOW_SECONDS`` (30 s) after
``deferred_at``, the trigger ends the task itself with a ``TaskSuccessEvent`` instead of resuming
it, after pushing its ``return_value`` XCom through the triggerer's Task SDK channel
(``XCom.aset``; ``success_xcom``: ``"record"``, ``"record_id"``, or ``None`` when the task pushed
it before deferring). Not ``TaskSuccessEvent(xcoms=...)``: in 3.3.2 those are stored JSON-encoded
twice (a dict reads back as a string). Later than that, or without a task instance to push for
(``dag.test()`` runs triggers inline), or when the push fails, the trigger yields a ``success``
event that resumes the task as usual (the XCom push through the triggerer took about 5 s in the
real-stack test; resuming, about 3 s). The other events always resume the task, so
``execute_complete`` raises the error the operator documents.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from airflow_escalation.core.types import STATE_VALUES, TERMINAL_STATE_VALUES
from airflow_escalation.hooks.connection_info import DEFAULT_CONN_NAME

DEFAULT_CONN_ID = DEFAULT_CONN_NAME  # one name: hooks/connection_info.py
# a success seen this soon after the deferral ends the task from the trigger (module docstring)
RACE_WINDOW_SECONDS = 30.0
# what the trigger event carries of the record (events are stored in the metadata database)
EVENT_RECORD_FIELDS = (
    "id",
    "incident_id",
    "policy_name",
    "state",
    "current_level",
    "escalation_count",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "closed_at",
    "updated_at",
)


def normalise_states(states: str | Iterable[Any], name: str = "states") -> tuple[str, ...]:
    if isinstance(states, str):
        states = [states]
    out = []
    for state in states:
        value = str(getattr(state, "value", state)).strip().lower()
        if value not in STATE_VALUES:
            raise ValueError(f"{name}: unknown escalation state {state!r} (known: {', '.join(STATE_VALUES)})")
        if value not in out:
            out.append(value)
    if not out:
        raise ValueError(f"{name}: give at least one state")
    return tuple(out)


def slim_record(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    return {k: record.get(k) for k in EVENT_RECORD_FIELDS if k in record}


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class EscalationStateTrigger(BaseTrigger):
    """Fires when escalation ``record_id`` is in one of ``states``.

    :param record_id: the escalation record id.
    :param states: the states to wait for (default acknowledged or resolved).
    :param failed_states: states that end the wait unsuccessfully (default: terminal states not
        in ``states``).
    :param poll_interval: seconds between polls (the shared poll uses its subscribers' shortest).
    :param escalation_conn_id: the escalation connection.
    :param timeout_at: an aware datetime (or ISO string) after which the trigger yields
        ``timeout``; ``None``: wait until the task's own deferral timeout.
    :param end_from_trigger: end the task from the trigger on a success seen soon after
        ``deferred_at`` (see the module docstring).
    :param success_xcom: what the trigger pushes as ``return_value`` when it ends the task:
        ``"record"``, ``"record_id"``, or ``None`` (the task pushed it before deferring).
    :param deferred_at: when the task deferred (aware datetime or ISO string).
    """

    def __init__(
        self,
        record_id: str,
        states: str | Iterable[str] = ("acknowledged", "resolved"),
        *,
        failed_states: str | Iterable[str] | None = None,
        poll_interval: float = 5.0,
        escalation_conn_id: str = DEFAULT_CONN_ID,
        timeout_at: datetime | str | None = None,
        end_from_trigger: bool = False,
        success_xcom: str | None = "record",
        deferred_at: datetime | str | None = None,
    ) -> None:
        super().__init__()
        if success_xcom not in ("record", "record_id", None):
            raise ValueError(f"success_xcom: expected 'record', 'record_id' or None, got {success_xcom!r}")
        if not isinstance(record_id, str) or not record_id:
            raise ValueError(f"record_id: must be a non-empty string, got {record_id!r}")
        if float(poll_interval) <= 0:
            raise ValueError(f"poll_interval: must be > 0 seconds, got {poll_interval!r}")
        self.record_id = record_id
        self.states = normalise_states(states)
        if failed_states is None:
            self.failed_states = tuple(s for s in TERMINAL_STATE_VALUES if s not in self.states)
        else:
            self.failed_states = (
                tuple(s for s in normalise_states(failed_states, "failed_states") if s not in self.states)
                if failed_states
                else ()
            )
        self.poll_interval = float(poll_interval)
        self.escalation_conn_id = escalation_conn_id
        moment = _parse_time(timeout_at)
        self.timeout_at = moment.isoformat() if moment else None
        self.end_from_trigger = bool(end_from_trigger)
        self.success_xcom = success_xcom
        deferred = _parse_time(deferred_at)
        self.deferred_at = deferred.isoformat() if deferred else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "record_id": self.record_id,
                "states": list(self.states),
                "failed_states": list(self.failed_states),
                "poll_interval": self.poll_interval,
                "escalation_conn_id": self.escalation_conn_id,
                "timeout_at": self.timeout_at,
                "end_from_trigger": self.end_from_trigger,
                "success_xcom": self.success_xcom,
                "deferred_at": self.deferred_at,
            },
        )

    def _event(self, status: str, message: str, record: dict[str, Any] | None = None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "record_id": self.record_id,
                "state": (record or {}).get("state"),
                "message": message,
                "record": slim_record(record),
            }
        )

    def _end_here(self) -> bool:
        """End the task from the trigger (soon after the deferral, see the module docstring)?"""
        if not self.end_from_trigger:
            return False
        deferred = _parse_time(self.deferred_at)
        if deferred is None:
            return True
        return (datetime.now(timezone.utc) - deferred).total_seconds() < RACE_WINDOW_SECONDS

    async def _push_return_value(self, record: dict[str, Any]) -> bool:
        """Push the task's ``return_value`` XCom from the triggerer; False when it cannot."""
        ti = self.task_instance
        if ti is None or not getattr(ti, "run_id", None):
            return False
        if self.success_xcom is None:
            return True  # the task pushed it before deferring
        value = slim_record(record) if self.success_xcom == "record" else self.record_id
        try:
            from airflow.sdk.execution_time.xcom import XCom

            started = time.monotonic()
            await XCom.aset(
                "return_value",
                value,
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                run_id=ti.run_id,
                map_index=ti.map_index if ti.map_index is not None else -1,
            )
            self.log.info(
                "pushed the XCom of %s.%s in %.0f ms", ti.dag_id, ti.task_id, (time.monotonic() - started) * 1000
            )
        except Exception as exc:  # noqa: BLE001 - resume the task instead; it pushes the XCom itself
            self.log.warning(
                "cannot push the XCom of %s.%s from the triggerer (%s: %s); resuming the task",
                ti.dag_id,
                ti.task_id,
                type(exc).__name__,
                exc,
            )
            return False
        return True

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_escalation.triggers.poller import shared_poller

        deadline = _parse_time(self.timeout_at)
        poller = shared_poller(self.escalation_conn_id)
        async with poller.subscribe(self.record_id, self.poll_interval) as sub:
            while True:
                remaining = None
                if deadline is not None:
                    remaining = (deadline - datetime.now(timezone.utc)).total_seconds()
                update = await sub.next(remaining)
                if update is None:
                    yield self._event(
                        "timeout",
                        f"escalation {self.record_id} did not reach {' or '.join(self.states)} by {self.timeout_at}",
                    )
                    return
                if update.error is not None:
                    if update.fatal:
                        yield self._event("error", update.error)
                        return
                    continue
                record = update.record
                if record is None:
                    yield self._event("not_found", f"escalation {self.record_id} not found")
                    return
                state = record.get("state")
                if state in self.states:
                    if self._end_here() and await self._push_return_value(record):
                        self.log.info("escalation %s is %s: ending the task successfully", self.record_id, state)
                        yield TaskSuccessEvent()
                    else:
                        yield self._event("success", f"escalation {self.record_id} is {state}", record)
                    return
                if state in self.failed_states:
                    yield self._event(
                        "failed_state",
                        f"escalation {self.record_id} ended {state} without becoming {' or '.join(self.states)}",
                        record,
                    )
                    return


__all__ = ["EscalationStateTrigger", "normalise_states", "slim_record"]
