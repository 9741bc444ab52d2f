"""``EscalationNotifier``: start (or resolve) an escalation from an Airflow callback.

.. code-block:: python

    from airflow_escalation.notifications.escalation import EscalationNotifier

    page = EscalationNotifier(policy_name="production_critical", severity="critical")

    @task(on_failure_callback=page, on_success_callback=page.resolver())
    def load_orders(): ...

    # DAG level (runs in the dag-processor), and a Deadline Alert (runs in the triggerer)
    DAG(..., on_failure_callback=page,
        deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT,
                               interval=timedelta(hours=1),
                               callback=AsyncCallback(EscalationNotifier,
                                                      kwargs={"policy_name": "production_critical"})))

**Where it runs and its budget.** A task's ``on_failure_callback`` runs in the task process after
the task failed; Airflow kills it after ``[core] task_success_overtime`` (20 s) and the task shows
``running`` until it returns. DAG callbacks run in the dag-processor; Deadline ``AsyncCallback``\\ s
in the triggerer. None of them may touch the metadata database: the notifier only talks HTTP to
the escalation service (``EscalationHook``, connection ``escalation_default``), with one attempt
of ``timeout`` seconds (default 2) and no inline retries.

**Never raises.** Whatever happens (service down, bad template, connection missing), the
notifier logs one clear line and returns. A request the service could not take is written to the
local spool (:mod:`airflow_escalation.spool`) and sent later: each callback first drains the
spool for up to ``drain_budget`` seconds (oldest first; a request waits behind earlier spooled
requests of the same incident so a resolve never overtakes its trigger). A request the service
refuses for good (unknown policy, invalid inline policy) goes to the spool's ``dead/`` directory
and is logged as an error.

**The incident.** ``incident_key`` is a ``str.format`` template over the incident's fields
(:func:`~airflow_escalation.notifications.incident.incident_fields`): ``{dag_id}``, ``{task_id}``,
``{run_id}``, ``{map_index}``, ``{try_number}``, ``{logical_date}``, ``{source}``, ``{severity}``
(Jinja ``{{ ... }}`` is rendered first, with the callback's context). The default is one incident
per DAG and task, ``"{dag_id}.{task_id}"`` (DAG-level callbacks: ``"{dag_id}"``; Deadline Alerts:
``"{dag_id}.deadline"``), so repeated failures of a task join its open escalation instead of
paging again. The map index is **not** part of the default: the instances of a mapped task share
one incident (a fan-out that fails together pages once); use ``"{dag_id}.{task_id}.{map_index}"``
for one incident per instance. The escalation's context carries every field (``dag_id``,
``run_id``, ``task_id``, ``map_index``, ``try_number``, ``exception`` (truncated to 2,000
characters), ``exception_type``, ``log_url``, ``logical_date``, ``severity``, ``source``,
``reason`` for DAG callbacks, ``deadline_id``/``deadline_time`` for Deadline Alerts), plus
``message`` and ``extra_context`` when given.

**Resolving.** ``resolver()`` (or ``action="resolve"``) makes the matching
``on_success_callback``: it resolves the open escalations of the same incident key (and policy,
when one is named). A mapped task instance's success does not resolve a task-wide incident (its
siblings may still be failing) unless the key contains ``{map_index}``.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

import copy
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from airflow.sdk import BaseNotifier

from airflow_escalation.handoff.sender import DEFAULT_CONN_ID, DEFAULT_HANDOFF_TIMEOUT
from airflow_escalation.notifications.incident import (
    DEFAULT_INCIDENT_KEYS,
    SOURCE_TASK,
    IncidentKeyError,
    incident_fields,
    render_incident_key,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_escalation.handoff.steps import Plan

ACTIONS = ("trigger", "resolve")
DEFAULT_SEVERITY = "high"
DEFAULT_DRAIN_BUDGET = 0.5


@dataclass
class HandoffResult:
    """What the last hand-off did (``notifier.last_handoff``; also logged)."""

    action: str
    incident_id: str
    outcome: str  # "sent", "spooled", "dead", "skipped", "error"
    message: str
    seconds: float
    record_id: str | None = None
    spool_path: str | None = None


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class EscalationNotifier(BaseNotifier):
    """Trigger (or resolve) an escalation from a task/DAG callback or a Deadline Alert.

    :param incident_key: ``str.format`` template of the incident id (see the module docstring),
        or a callable ``context -> str``. Default: ``"{dag_id}.{task_id}"`` for task callbacks,
        ``"{dag_id}"`` for DAG callbacks, ``"{dag_id}.deadline"`` for Deadline Alerts.
    :param severity: stored as the escalation's ``context["severity"]`` (policies filter on it).
    :param policy_name: a policy of the service's policies file; ``None``: its default policy.
    :param policy: an inline policy (mapping or ``EscalationPolicy``), snapshotted on the record.
    :param action: ``"trigger"`` (default) or ``"resolve"`` (for ``on_success_callback``).
    :param message: a text for the escalation's context (Jinja templated).
    :param extra_context: more JSON-able fields for the escalation's context (Jinja templated).
    :param trigger_type: the ``EscalationTrigger`` value; default: the service's
        (``unacknowledged``). It must be one of the policy's ``triggers``.
    :param escalation_conn_id: the escalation connection (default ``escalation_default``).
    :param timeout: seconds for the one attempt to reach the service (default 2).
    :param drain_budget: seconds spent at most sending earlier spooled requests first (0.5).
    :param spool_dir: the spool directory (default ``[escalation] spool_dir``, else
        ``$AIRFLOW_HOME/escalation_spool``).
    :param context: set by Airflow for Deadline ``AsyncCallback``\\ s; leave it out.
    """

    template_fields: Sequence[str] = ("incident_key", "severity", "policy_name", "message", "extra_context")

    def __init__(
        self,
        *,
        incident_key: str | Callable[[Any], str] | None = None,
        severity: str = DEFAULT_SEVERITY,
        policy_name: str | None = None,
        policy: Any = None,
        action: Literal["trigger", "resolve"] = "trigger",
        message: str | None = None,
        extra_context: dict[str, Any] | None = None,
        trigger_type: str | None = None,
        escalation_conn_id: str = DEFAULT_CONN_ID,
        timeout: float = DEFAULT_HANDOFF_TIMEOUT,
        drain_budget: float = DEFAULT_DRAIN_BUDGET,
        spool_dir: str | None = None,
        context: Context | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action: expected one of {ACTIONS}, got {action!r}")
        if timeout is None or float(timeout) <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout!r}")
        if float(drain_budget) < 0:
            raise ValueError(f"drain_budget: must be >= 0 seconds, got {drain_budget!r}")
        if extra_context is not None and not isinstance(extra_context, dict):
            raise TypeError(f"extra_context: expected a mapping, got {type(extra_context).__name__}")
        if policy is not None and hasattr(policy, "to_dict"):
            policy = policy.to_dict()
        if policy is not None and not isinstance(policy, dict):
            raise TypeError(f"policy: expected a mapping or an EscalationPolicy, got {type(policy).__name__}")
        self.incident_key = incident_key
        self.severity = severity
        self.policy_name = policy_name
        self.policy = policy
        self.action = action
        self.message = message
        self.extra_context = extra_context
        self.trigger_type = trigger_type
        self.escalation_conn_id = escalation_conn_id
        self.timeout = float(timeout)
        self.drain_budget = float(drain_budget)
        self.spool_dir = spool_dir
        self.last_handoff: HandoffResult | None = None
        self._rendered: dict[str, Any] | None = None
        super().__init__(context=context)

    def resolver(self, **overrides: Any) -> EscalationNotifier:
        """The matching ``on_success_callback``: same incident key, policy and connection."""
        kwargs = dict(
            incident_key=self.incident_key,
            severity=self.severity,
            policy_name=self.policy_name,
            policy=copy.deepcopy(self.policy),
            action="resolve",
            message=self.message,
            extra_context=copy.deepcopy(self.extra_context),
            trigger_type=self.trigger_type,
            escalation_conn_id=self.escalation_conn_id,
            timeout=self.timeout,
            drain_budget=self.drain_budget,
            spool_dir=self.spool_dir,
        )
        kwargs.update(overrides)
        return type(self)(**kwargs)

    # ------------------------------------------------------------------ templating

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the templated fields into a per-call copy.

        ``BaseNotifier`` renders in place, which would freeze the first task's values into a
        notifier shared by several tasks (``default_args``, ``dag.test()``). A template that fails
        to render is logged and used as written: a callback never raises.
        """
        rendered: dict[str, Any] = {}
        env = jinja_env
        for name in self.template_fields:
            value = getattr(self, name, None)
            if not _has_template(value):
                rendered[name] = value
                continue
            try:
                if env is None:
                    env = self.get_template_env(dag=context.get("dag"))
                rendered[name] = self.render_template(value, context, env)
            except Exception as exc:  # noqa: BLE001
                self.log.error(
                    "escalation notifier: cannot render %s %r (%s: %s); using it as written",
                    name,
                    value,
                    type(exc).__name__,
                    exc,
                )
                rendered[name] = value
        self._rendered = rendered

    def _values(self) -> dict[str, Any]:
        rendered, self._rendered = self._rendered, None
        if rendered is None:
            rendered = {name: getattr(self, name, None) for name in self.template_fields}
        return rendered

    # ------------------------------------------------------------------ the request

    def build_request(self, context: Context) -> tuple[str, dict[str, Any]] | None:
        """``(kind, request)`` for the service, or ``None`` when there is nothing to do."""
        values = self._values()
        fields = incident_fields(context)
        severity = values.get("severity") or DEFAULT_SEVERITY
        fields["severity"] = str(severity)
        key = self._incident_key(values.get("incident_key"), context, fields)
        policy_name = values.get("policy_name") or None
        if self.action == "resolve":
            template = values.get("incident_key") if isinstance(values.get("incident_key"), str) else ""
            map_index = fields.get("map_index")
            if (
                fields["source"] == SOURCE_TASK
                and isinstance(map_index, int)
                and map_index >= 0
                and not callable(self.incident_key)
                and "{map_index}" not in (template or "")
            ):
                self._done(
                    "resolve",
                    key,
                    "skipped",
                    f"mapped instance {fields['map_index']} succeeded; the task-wide incident "
                    f"{key!r} stays open (its other instances may be failing)",
                    0.0,
                )
                return None
            name = policy_name or (self.policy or {}).get("name")
            note = (
                f"resolved by the success of {fields.get('dag_id')}"
                + (f".{fields['task_id']}" if fields.get("task_id") else "")
                + (f" (run {fields['run_id']}, try {fields['try_number']})" if fields.get("run_id") else "")
            )
            return "resolve", {"incident_id": key, "policy_name": name, "note": note[:4000]}
        esc_context = {k: v for k, v in fields.items() if v is not None}
        if values.get("message"):
            esc_context["message"] = str(values["message"])
        extra = values.get("extra_context")
        if isinstance(extra, dict):
            esc_context.update(extra)
        esc_context["severity"] = str(severity)
        esc_context["handed_off_at"] = datetime.now(timezone.utc).isoformat()
        request: dict[str, Any] = {"incident_id": key, "context": _json_safe(esc_context)}
        if policy_name:
            request["policy_name"] = policy_name
        if self.policy is not None:
            request["policy"] = _json_safe(self.policy)
        if self.trigger_type:
            request["trigger_type"] = getattr(self.trigger_type, "value", self.trigger_type)
        return "trigger", request

    def _incident_key(self, template: Any, context: Context, fields: dict[str, Any]) -> str:
        default = DEFAULT_INCIDENT_KEYS[fields["source"]]
        try:
            if callable(self.incident_key):
                key = str(self.incident_key(context)).strip()
                if not key:
                    raise IncidentKeyError("incident_key callable returned an empty key")
                return key[:255]
            return render_incident_key(template or default, fields)
        except Exception as exc:  # noqa: BLE001 - fall back, never raise
            fallback = render_incident_key(default, fields)
            self.log.error("escalation notifier: %s; using the default incident key %r", exc, fallback)
            return fallback

    # ------------------------------------------------------------------ hand-off (sync)

    def notify(self, context: Context) -> None:
        started = time.perf_counter()
        try:
            built = self.build_request(context)
            if built is None:
                return
            kind, request = built
            self._handoff(kind, request, started)
        except Exception as exc:  # noqa: BLE001 - never raise into Airflow's finalisation
            self._done(
                self.action,
                "?",
                "error",
                f"escalation notifier failed: {type(exc).__name__}: {exc}",
                time.perf_counter() - started,
            )

    def _handoff(self, kind: str, request: dict[str, Any], started: float) -> None:
        from airflow_escalation.handoff.sender import HandoffSender

        with HandoffSender(timeout=self.timeout) as sender:
            sender.run(self._handing_off(kind, request, started, sender))

    def _handing_off(self, kind: str, request: dict[str, Any], started: float, sender: Any) -> Plan[None]:
        """The hand-off as a plan (``airflow_escalation.handoff.steps``), run by :meth:`notify`
        in the task and by :meth:`async_notify` in the triggerer: drain earlier spooled requests
        first (within ``drain_budget``), then send this one, or spool it."""
        from airflow_escalation.handoff.sender import draining
        from airflow_escalation.handoff.steps import Blocking
        from airflow_escalation.spool import DEAD, SENT, EscalationSpool

        incident = request["incident_id"]
        conn_id = self.escalation_conn_id
        spool = EscalationSpool(self.spool_dir)
        if self.drain_budget > 0:
            report = yield from draining(spool, sender, budget_seconds=self.drain_budget, logger=self.log)
            if report is not None and report.stopped == "unavailable" and (report.failed_conn_id or conn_id) == conn_id:
                yield from self._spooling(
                    spool,
                    kind,
                    request,
                    report.last_error,
                    started,
                    f"the escalation service is unreachable (an earlier spooled request failed "
                    f"just now: {report.last_error})",
                )
                return
            if report is not None and incident in report.blocked_incidents:
                yield from self._spooling(
                    spool, kind, request, "", started, "queued behind earlier spooled requests of the same incident"
                )
                return
        outcome, message, answer = yield from sender.sending(kind, conn_id, request)
        seconds = time.perf_counter() - started
        if outcome == SENT:
            record_id = (answer.get("record") or {}).get("id") if isinstance(answer, dict) else None
            self._done(kind, incident, "sent", message, seconds, record_id=record_id)
        elif outcome == DEAD:
            path = yield Blocking(spool.put_dead, (kind, request), {"conn_id": conn_id, "reason": message})
            self._done(
                kind,
                incident,
                "dead",
                f"the escalation service refused it: {message}; kept in {path}",
                seconds,
                spool_path=str(path),
            )
        else:
            yield from self._spooling(
                spool, kind, request, message, started, f"could not reach the escalation service: {message}"
            )

    def _spooling(
        self, spool: Any, kind: str, request: dict[str, Any], error: str, started: float, why: str
    ) -> Plan[None]:
        from airflow_escalation.handoff.steps import Blocking

        path = yield Blocking(spool.put, (kind, request), {"conn_id": self.escalation_conn_id, "error": error})
        self._done(
            kind,
            request["incident_id"],
            "spooled",
            f"{why}; spooled to {path}: the next escalation callback, operator, sensor or "
            f"`airflow escalation spool drain` on this machine sends it",
            time.perf_counter() - started,
            spool_path=str(path),
        )

    def _done(
        self,
        action: str,
        incident: str,
        outcome: str,
        message: str,
        seconds: float,
        record_id: str | None = None,
        spool_path: str | None = None,
    ) -> None:
        self.last_handoff = HandoffResult(action, incident, outcome, message, seconds, record_id, spool_path)
        line = "escalation %s of incident %r: %s (%.0f ms)"
        args = (action, incident, message, seconds * 1000)
        if outcome in ("sent", "skipped"):
            self.log.info(line, *args)
        else:
            self.log.error(line, *args)

    # ------------------------------------------------------------------ hand-off (async)

    async def async_notify(self, context: Context) -> None:
        """The same hand-off from the triggerer (Deadline Alert ``AsyncCallback``)."""
        started = time.perf_counter()
        try:
            built = self.build_request(context)
            if built is None:
                return
            kind, request = built
            await self._ahandoff(kind, request, started)
        except Exception as exc:  # noqa: BLE001
            self._done(
                self.action,
                "?",
                "error",
                f"escalation notifier failed: {type(exc).__name__}: {exc}",
                time.perf_counter() - started,
            )

    async def _ahandoff(self, kind: str, request: dict[str, Any], started: float) -> None:
        from airflow_escalation.handoff.sender import HandoffSender

        async with HandoffSender(timeout=self.timeout) as sender:
            await sender.arun(self._handing_off(kind, request, started, sender))


#: the providers' naming convention (``send_slack_notification``)
send_escalation_notification = EscalationNotifier

__all__ = ["EscalationNotifier", "HandoffResult", "send_escalation_notification"]
