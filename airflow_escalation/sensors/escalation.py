"""``EscalationSensor``: wait until an escalation reaches a state (in the triggerer or the worker).

.. code-block:: python

    # wait until someone acknowledges (or resolves) the escalation a failure callback started
    EscalationSensor(
        task_id="wait_for_acknowledgement",
        incident_id="{dag_id}.load_orders",       # or record_id="{{ ti.xcom_pull('escalate') }}"
        target_states=["acknowledged", "resolved"],
        trigger_rule="all_failed",
        timeout=timedelta(hours=8),
    )

Deferrable (``deferrable=``, default ``[operators] default_deferrable`` as for Airflow's own
sensors): the sensor checks once, then waits in the triggerer with
:class:`~airflow_escalation.triggers.escalation.EscalationStateTrigger`; the waiting sensors of a
triggerer share one poll of the service. ``deferrable=False`` pokes from the worker
(``mode="poke"`` or ``"reschedule"``): a deployment without a triggerer.

``incident_id`` (Jinja, then ``str.format`` over ``{dag_id}``, ``{task_id}``, ``{run_id}`` ...)
is resolved when the sensor starts: the incident's newest open escalation of the sensor's own
Dag, else its newest escalation of that Dag (an incident id never joins records of two Dags: to
watch another Dag's escalation, pass its ``record_id``). The sensor fails when the record reaches one of ``failed_states`` (default: the
terminal states not in ``target_states``) or when ``timeout`` passes (``soft_fail`` skips
instead). It returns the record (id, state, acknowledged_by ...) as its XCom.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf

from airflow_escalation.core.types import OPEN_STATE_VALUES, TERMINAL_STATE_VALUES
from airflow_escalation.notifications.incident import incident_fields, render_incident_key
from airflow_escalation.triggers.escalation import EscalationStateTrigger, normalise_states, slim_record
from airflow_escalation.hooks.connection_info import DEFAULT_CONN_NAME

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_CONN_ID = DEFAULT_CONN_NAME  # one name: hooks/connection_info.py
DEFERRAL_GRACE = timedelta(minutes=2)


class EscalationSensor(BaseSensorOperator):
    """Wait until an escalation record is in one of ``target_states``.

    :param record_id: the escalation record id (templated).
    :param incident_id: or the incident whose escalation to watch (templated).
    :param target_states: states that end the wait successfully (default acknowledged, resolved).
    :param failed_states: states that fail the sensor (default: terminal states not targeted).
    :param escalation_conn_id: the escalation connection.
    :param deferrable: wait in the triggerer (``True``) or poke from the worker (``False``).
        Default: ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls (default 5; deferred: of the shared poller).
    :param end_from_trigger: a success seen within 30 s of the deferral ends the task from the
        triggerer (which pushes the record as XCom) instead of resuming it (default True; works
        around an Airflow 3.3.2 race, see ``EscalationStateTrigger``).
    """

    template_fields: Sequence[str] = ("record_id", "incident_id", "target_states")
    ui_color = "#f6d8a0"

    def __init__(
        self,
        *,
        record_id: str | None = None,
        incident_id: str | None = None,
        target_states: Sequence[str] | str = ("acknowledged", "resolved"),
        failed_states: Sequence[str] | None = None,
        escalation_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float = 5.0,
        end_from_trigger: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        if (record_id is None) == (incident_id is None):
            raise ValueError("give exactly one of record_id= or incident_id=")
        normalise_states(target_states, "target_states")  # fail at parse time on a typo
        if failed_states is not None and failed_states:
            normalise_states(failed_states, "failed_states")
        self.record_id = record_id
        self.incident_id = incident_id
        self.target_states = list(target_states) if not isinstance(target_states, str) else [target_states]
        self.failed_states = list(failed_states) if failed_states is not None else None
        self.escalation_conn_id = escalation_conn_id
        self.deferrable = deferrable
        self.end_from_trigger = end_from_trigger
        self._resolved_id: str | None = None

    # ------------------------------------------------------------------ helpers

    def _hook(self) -> Any:
        from airflow_escalation.hooks.escalation import EscalationHook

        return EscalationHook(self.escalation_conn_id)

    def _states(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        target = normalise_states(self.target_states, "target_states")
        if self.failed_states is None:
            failed = tuple(s for s in TERMINAL_STATE_VALUES if s not in target)
        else:
            failed = (
                tuple(s for s in normalise_states(self.failed_states, "failed_states") if s not in target)
                if self.failed_states
                else ()
            )
        return target, failed

    def _record_id(self, context: Context, hook: Any) -> str:
        from airflow.sdk.exceptions import AirflowException

        if self._resolved_id:
            return self._resolved_id
        if self.record_id:
            self._resolved_id = str(self.record_id).strip()
            if not self._resolved_id or self._resolved_id == "None":
                raise AirflowException(f"record_id rendered to {self.record_id!r}: no escalation to wait for")
            return self._resolved_id
        fields = incident_fields(context)
        incident = render_incident_key(str(self.incident_id), fields)
        # the incident of this Dag: another Dag's record of the same incident id is not this one
        dag_id = fields.get("dag_id")
        page = hook.list_escalations(list(OPEN_STATE_VALUES), incident=incident, dag_id=dag_id, limit=1)
        records = page.get("escalations") or []
        if not records:
            page = hook.list_escalations(incident=incident, dag_id=dag_id, limit=1)
            records = page.get("escalations") or []
        if not records:
            raise AirflowException(f"no escalation of incident {incident!r} to wait for")
        self._resolved_id = records[0]["id"]
        self.log.info(
            "incident %r: waiting on escalation %s (%s)", incident, self._resolved_id, records[0].get("state")
        )
        return self._resolved_id

    def _check(self, record: dict[str, Any]) -> bool:
        from airflow.sdk.exceptions import AirflowException

        target, failed = self._states()
        state = record.get("state")
        if state in target:
            return True
        if state in failed:
            raise AirflowException(
                f"escalation {record.get('id')} ended {state} without becoming {' or '.join(target)}"
            )
        return False

    # ------------------------------------------------------------------ execution

    def execute(self, context: Context) -> Any:
        from airflow_escalation.handoff.sender import drain_local_spool

        drain_local_spool(budget_seconds=1.0, logger=self.log)
        hook = self._hook()
        record_id = self._record_id(context, hook)
        if not self.deferrable:
            return super().execute(context)
        record = hook.get_escalation(record_id)
        if self._check(record):
            self.log.info("escalation %s is already %s", record_id, record.get("state"))
            return slim_record(record)
        target, failed = self._states()
        timeout_at = datetime.now(timezone.utc) + timedelta(seconds=self.timeout)
        self.defer(
            trigger=EscalationStateTrigger(
                record_id,
                target,
                failed_states=list(failed),
                poll_interval=self.poke_interval,
                escalation_conn_id=self.escalation_conn_id,
                timeout_at=timeout_at,
                end_from_trigger=self.end_from_trigger,
                success_xcom="record",
                deferred_at=datetime.now(timezone.utc),
            ),
            method_name="execute_complete",
            kwargs={"record_id": record_id},
            timeout=timedelta(seconds=self.timeout) + DEFERRAL_GRACE,
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        hook = self._hook()
        record = hook.get_escalation(self._record_id(context, hook))
        self.log.info("escalation %s is %s", record.get("id"), record.get("state"))
        if self._check(record):
            return PokeReturnValue(is_done=True, xcom_value=slim_record(record))
        return False

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, record_id: str | None = None
    ) -> Any:
        from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

        if not isinstance(event, dict):
            # dag.test() resumes the task after a TaskSuccessEvent (with event="success"); a real
            # triggerer ends the task instead. Read the record again.
            hook = self._hook()
            record = hook.get_escalation(record_id or self._record_id(context, hook))
            if self._check(record):
                return slim_record(record)
            raise AirflowException(
                f"escalation {record.get('id')} is {record.get('state')}, not {' or '.join(self._states()[0])}"
            )
        status = event.get("status")
        if status == "success":
            self.log.info("%s", event.get("message"))
            return event.get("record")
        if status == "timeout":
            raise AirflowSensorTimeout(event.get("message"))
        raise AirflowException(event.get("message") or f"unexpected trigger event {event!r}")


__all__ = ["EscalationSensor"]
