"""``EscalationOperator``: trigger an escalation from a task, optionally wait for a human.

.. code-block:: python

    escalate = EscalationOperator(
        task_id="escalate_bad_data",
        incident_id="{dag_id}.orders_quality",
        policy_name="production_critical",
        severity="critical",
        escalation_context={"failed_checks": "{{ ti.xcom_pull('check_orders') }}"},
        wait_for="acknowledged",          # or "resolved", or None: trigger and succeed
        timeout=timedelta(hours=4),
    )

The task triggers (or joins: the same incident's open escalation is reused) an escalation
through ``EscalationHook`` and pushes the record id as its XCom return value. With ``wait_for``
it then waits: deferrable (``deferrable=``, default ``[operators] default_deferrable`` as for
Airflow's own operators), it defers to
:class:`~airflow_escalation.triggers.escalation.EscalationStateTrigger` and frees its worker slot;
otherwise it polls the service from the worker every ``poll_interval`` (a deployment without a
triggerer). Either way it

- succeeds (returning the record id) when the escalation is acknowledged (``"acknowledged"``
  also accepts ``resolved``: someone handled it) or resolved (``"resolved"``);
- fails when the escalation ends otherwise (cancelled, timed out at the top of its ladder, or
  failed) or when ``timeout`` passes first.

With ``end_from_trigger=True`` (default) the record id is pushed as XCom before deferring, and a
success seen within 30 s of the deferral ends the task from the triggerer (an Airflow 3.3.2 race,
see :mod:`airflow_escalation.triggers.escalation`).

A trigger a policy gate refuses (``filtered``, ``suppressed`` by cooldown, ``capacity``) is
logged and the task succeeds with ``None`` unless ``fail_on_refused=True``. Retrying the task is
safe: the trigger joins the open escalation of the incident.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_escalation.core.types import TERMINAL_STATE_VALUES
from airflow_escalation.notifications.incident import incident_fields, render_incident_key
from airflow_escalation.triggers.escalation import EscalationStateTrigger
from airflow_escalation.hooks.connection_info import DEFAULT_CONN_NAME

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_CONN_ID = DEFAULT_CONN_NAME  # one name: hooks/connection_info.py
WAIT_STATES = {"acknowledged": ("acknowledged", "resolved"), "resolved": ("resolved",)}
# how much longer Airflow's own deferral timeout waits than the trigger's (a backstop for a
# triggerer that is down when the trigger's timeout passes)
DEFERRAL_GRACE = timedelta(minutes=2)


def _seconds(value: timedelta | float | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return seconds


class EscalationOperator(BaseOperator):
    """Trigger an escalation; return its record id; optionally wait until it is handled.

    :param incident_id: the incident (Jinja, then ``str.format`` over ``{dag_id}``, ``{task_id}``,
        ``{run_id}``, ``{map_index}``, ``{try_number}``, ``{logical_date}``, ``{severity}``).
        Default ``"{dag_id}.{task_id}"``.
    :param escalation_context: extra JSON-able fields for the escalation's context (templated);
        ``dag_id``, ``run_id``, ``task_id``, ``map_index``, ``try_number``, ``logical_date`` and
        ``log_url`` are added.
    :param policy_name: a policy of the service; ``None``: its default policy.
    :param policy: an inline policy (mapping or ``EscalationPolicy``).
    :param severity: ``context["severity"]`` (policies filter on it). Default ``high``.
    :param trigger_type: an ``EscalationTrigger`` value (default: the service's, unacknowledged).
    :param wait_for: ``None`` (default), ``"acknowledged"`` or ``"resolved"``.
    :param timeout: with ``wait_for``: give up (fail) after this long (timedelta or seconds);
        ``None``: wait until the escalation ends.
    :param poll_interval: with ``wait_for``: seconds between polls (deferred: of the shared poller).
    :param deferrable: with ``wait_for``: wait in the triggerer (``True``) or poll from the worker
        (``False``). Default: ``[operators] default_deferrable``.
    :param fail_on_refused: fail when a policy gate refuses the trigger.
    :param escalation_conn_id: the escalation connection.
    :param end_from_trigger: with ``wait_for``, a success seen within 30 s of the deferral ends the
        task from the triggerer instead of resuming it (default True; works around an Airflow 3.3.2
        race, see ``EscalationStateTrigger``). The record id is pushed as XCom before deferring.
    """

    template_fields: Sequence[str] = ("incident_id", "escalation_context", "policy_name", "severity")
    template_fields_renderers = {"escalation_context": "json"}
    ui_color = "#f6c6a0"

    def __init__(
        self,
        *,
        incident_id: str = "{dag_id}.{task_id}",
        escalation_context: dict[str, Any] | None = None,
        policy_name: str | None = None,
        policy: Any = None,
        severity: str = "high",
        trigger_type: str | None = None,
        wait_for: Literal["acknowledged", "resolved"] | None = None,
        timeout: timedelta | float | None = None,
        poll_interval: float = 5.0,
        fail_on_refused: bool = False,
        escalation_conn_id: str = DEFAULT_CONN_ID,
        end_from_trigger: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if wait_for is not None and wait_for not in WAIT_STATES:
            raise ValueError(f"wait_for: expected None, 'acknowledged' or 'resolved', got {wait_for!r}")
        if float(poll_interval) <= 0:
            raise ValueError(f"poll_interval: must be > 0 seconds, got {poll_interval!r}")
        if policy is not None and hasattr(policy, "to_dict"):
            policy = policy.to_dict()
        self.incident_id = incident_id
        self.escalation_context = escalation_context or {}
        self.policy_name = policy_name
        self.policy = policy
        self.severity = severity
        self.trigger_type = trigger_type
        self.wait_for = wait_for
        self.wait_timeout = _seconds(timeout, "timeout")
        self.poll_interval = float(poll_interval)
        self.fail_on_refused = fail_on_refused
        self.escalation_conn_id = escalation_conn_id
        self.end_from_trigger = end_from_trigger
        self.deferrable = deferrable

    def _hook(self) -> Any:
        from airflow_escalation.hooks.escalation import EscalationHook

        return EscalationHook(self.escalation_conn_id)

    def _incident(self, context: Context) -> tuple[str, dict[str, Any]]:
        fields = incident_fields(context)
        fields["severity"] = str(self.severity)
        fields["source"] = "operator"
        return render_incident_key(self.incident_id, fields), fields

    def execute(self, context: Context) -> str | None:
        from airflow.sdk.exceptions import AirflowException

        from airflow_escalation.handoff.sender import drain_local_spool

        incident, fields = self._incident(context)
        esc_context = {
            k: v for k, v in fields.items() if v is not None and k not in ("exception", "exception_type", "reason")
        }
        if not isinstance(self.escalation_context, dict):
            raise AirflowException(
                f"escalation_context: expected a mapping, got {type(self.escalation_context).__name__}"
            )
        esc_context.update(self.escalation_context)
        drain_local_spool(budget_seconds=1.0, logger=self.log)
        hook = self._hook()
        result = hook.trigger(
            incident,
            esc_context,
            policy_name=self.policy_name,
            severity=str(self.severity),
            trigger_type=self.trigger_type,
            policy=self.policy,
        )
        if not result.get("success"):
            message = (
                f"the escalation service refused to escalate incident {incident!r} "
                f"({result.get('code')}): {result.get('error') or result.get('message')}"
            )
            if self.fail_on_refused:
                raise AirflowException(message)
            self.log.warning("%s; succeeding without an escalation (fail_on_refused=False)", message)
            return None
        record = result["record"]
        record_id = record["id"]
        joined = result.get("action") == "trigger_existing"
        self.log.info(
            "%s escalation %s of incident %r (policy %s, level %s, %s)",
            "joined the open" if joined else "started",
            record_id,
            incident,
            record.get("policy_name"),
            record.get("current_level"),
            record.get("state"),
        )
        if self.wait_for is None:
            return record_id
        states = WAIT_STATES[self.wait_for]
        state = record.get("state")
        if state in states:
            self.log.info("escalation %s is already %s", record_id, state)
            return record_id
        if state in TERMINAL_STATE_VALUES:
            raise AirflowException(f"escalation {record_id} is already {state}; it will never be {self.wait_for}")
        if not self.deferrable:
            return self._wait_in_worker(hook, record_id)
        timeout_at = None
        deferral_timeout = None
        if self.wait_timeout is not None:
            timeout_at = datetime.now(timezone.utc) + timedelta(seconds=self.wait_timeout)
            deferral_timeout = timedelta(seconds=self.wait_timeout) + DEFERRAL_GRACE
        self.log.info(
            "waiting until escalation %s is %s%s",
            record_id,
            self.wait_for,
            f" (until {timeout_at.isoformat()})" if timeout_at else "",
        )
        if self.end_from_trigger:
            # the XCom is known now: if the trigger ends the task, it needs push nothing
            context["ti"].xcom_push(key="return_value", value=record_id)
        self.defer(
            trigger=EscalationStateTrigger(
                record_id,
                states,
                poll_interval=self.poll_interval,
                escalation_conn_id=self.escalation_conn_id,
                timeout_at=timeout_at,
                end_from_trigger=self.end_from_trigger,
                success_xcom=None,
                deferred_at=datetime.now(timezone.utc),
            ),
            method_name="execute_complete",
            kwargs={"record_id": record_id},
            timeout=deferral_timeout,
        )
        return None  # not reached: defer() raises

    def _wait_in_worker(self, hook: Any, record_id: str) -> str:
        """``deferrable=False``: poll the record from the worker until it is handled."""
        from airflow.sdk.exceptions import AirflowException

        states = WAIT_STATES[self.wait_for or "acknowledged"]
        deadline = None if self.wait_timeout is None else time.monotonic() + self.wait_timeout
        self.log.info(
            "waiting in the worker until escalation %s is %s (polling every %ss)",
            record_id,
            self.wait_for,
            self.poll_interval,
        )
        while True:
            record = hook.get_escalation(record_id)
            state = record.get("state")
            if state in states:
                who = record.get("acknowledged_by") if state == "acknowledged" else record.get("resolved_by")
                self.log.info("escalation %s is %s%s", record_id, state, f" by {who}" if who else "")
                return record_id
            if state in TERMINAL_STATE_VALUES:
                raise AirflowException(f"escalation {record_id} ended {state}; it will never be {self.wait_for}")
            if deadline is not None and time.monotonic() >= deadline:
                raise AirflowException(
                    f"escalation {record_id} was not {self.wait_for} within "
                    f"{timedelta(seconds=self.wait_timeout or 0)} (still {state})"
                )
            pause = (
                self.poll_interval
                if deadline is None
                else min(self.poll_interval, max(deadline - time.monotonic(), 0.0))
            )
            time.sleep(pause)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, record_id: str | None = None
    ) -> str:
        from airflow.sdk.exceptions import AirflowException

        if not isinstance(event, dict):
            # dag.test() resumes the task after a TaskSuccessEvent (with event="success"); a real
            # triggerer ends the task instead. Read the incident's escalation again.
            hook = self._hook()
            if record_id:
                record = hook.get_escalation(record_id)
            else:
                found = hook.list_escalations(incident=self._incident(context)[0], limit=1)["escalations"]
                if not found:
                    raise AirflowException(f"no escalation of incident {self._incident(context)[0]!r}")
                record = found[0]
            if record.get("state") in WAIT_STATES[self.wait_for or "acknowledged"]:
                return record["id"]
            raise AirflowException(f"escalation {record.get('id')} is {record.get('state')}, not {self.wait_for}")
        record_id = event.get("record_id") or record_id
        status = event.get("status")
        if status == "success":
            record = event.get("record") or {}
            who = record.get("acknowledged_by") if event.get("state") == "acknowledged" else record.get("resolved_by")
            self.log.info("escalation %s is %s%s", record_id, event.get("state"), f" by {who}" if who else "")
            return record_id
        if status == "timeout":
            raise AirflowException(
                f"escalation {record_id} was not {self.wait_for} within "
                f"{timedelta(seconds=self.wait_timeout or 0)}: {event.get('message')}"
            )
        raise AirflowException(event.get("message") or f"escalation {record_id}: unexpected event {event!r}")


__all__ = ["EscalationOperator"]
