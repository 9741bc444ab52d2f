"""Hand a trigger (or a resolve) to the escalation service within a short budget.

Shared by :class:`~airflow_escalation.notifications.escalation.EscalationNotifier`, the spool
drainers (operator, sensor, the triggerer's poller) and ``airflow escalation spool drain``. Each
call is one attempt with a short timeout and no inline retries: a failure callback cannot wait,
the spool is the retry.

Each request is one plan (:mod:`airflow_escalation.handoff.steps`): :meth:`HandoffSender.sending`
yields :class:`ServiceCall` steps; :meth:`HandoffSender.run` performs them with a sync client
(a task, a callback), :meth:`HandoffSender.arun` with the hook's async methods (the triggerer).
:func:`draining` is the one "drain this machine's spool with this sender" sequence.

Outcomes (``airflow_escalation.spool``): ``SENT`` when the service answered (a policy gate that
refused the trigger, ``filtered``/``suppressed``/``capacity``, is an answer too), ``RETRY`` when
a later attempt may succeed (unreachable, timeout, 5xx, 429, 409 write contention, auth refused,
connection missing or misconfigured), ``DEAD`` when it will not (unknown policy, invalid request).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from airflow_escalation.core.types import OPEN_STATE_VALUES
from airflow_escalation.handoff.steps import Blocking, Plan, T, arun, run
from airflow_escalation.spool import (
    DEAD,
    KIND_RESOLVE,
    KIND_TRIGGER,
    RETRY,
    SENT,
    DrainReport,
    EscalationSpool,
    SpoolEntry,
)
from airflow_escalation.hooks.connection_info import DEFAULT_CONN_NAME

log = logging.getLogger("airflow_escalation.handoff")

DEFAULT_CONN_ID = DEFAULT_CONN_NAME  # one name: hooks/connection_info.py
DEFAULT_HANDOFF_TIMEOUT = 2.0


@dataclass(frozen=True)
class ServiceCall:
    """One request to the service: ``method`` of the client (sync) or ``a<method>`` of the hook
    (async), on connection ``conn_id``."""

    conn_id: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def classify(exc: BaseException) -> tuple[str, str]:
    """``(RETRY | DEAD, message)`` for an exception raised while handing off."""
    from airflow_escalation.client.errors import (
        EscalationAPIError,
        EscalationAuthError,
        EscalationConflict,
        EscalationNotFound,
        EscalationServiceUnavailable,
    )

    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EscalationServiceUnavailable):
        return RETRY, message
    if isinstance(exc, EscalationAuthError):
        # a configuration problem (JWT secret, role, password) someone can fix: keep it
        return RETRY, message + (
            " (check the escalation connection's login and password, or [api_auth] jwt_secret with auth_type jwt)"
        )
    if isinstance(exc, EscalationConflict):
        return RETRY, message  # the service's "too many concurrent writers; retry"
    if isinstance(exc, EscalationNotFound):
        return DEAD, message
    if isinstance(exc, EscalationAPIError):
        if exc.status_code in (408, 425):
            return RETRY, message
        return DEAD, message
    if isinstance(exc, (ValueError, TypeError)) and type(exc).__name__ != "EscalationConnectionError":
        return DEAD, message
    # connection not found, EscalationConnectionError, anything unexpected: keep it
    return RETRY, message


# Sync clients by resolved connection, reused by later callbacks of the same process (a
# dag-processor runs many DAG callbacks; dag.test() many task callbacks): building an httpx client
# loads the CA bundle (about 20 ms). The key is the connection's content, so an edited
# connection gets a new client at once.
_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_MAX_CLIENTS = 8


def _client_for(conn_id: str, timeout: float) -> Any:
    from airflow_escalation.client.http import EscalationClient
    from airflow_escalation.hooks.escalation import EscalationHook, client_kwargs_from_connection

    conn = EscalationHook.get_connection(conn_id)
    key = (
        os.getpid(),
        conn_id,
        conn.conn_type,
        conn.host,
        conn.schema,
        conn.port,
        conn.login,
        conn.password,
        conn.extra,
        timeout,
        _signing_key(),
    )
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            kwargs = client_kwargs_from_connection(conn)
            kwargs.update(timeout=timeout, retries=0)
            client = EscalationClient(**kwargs)
            while len(_CLIENTS) >= _MAX_CLIENTS:
                _CLIENTS.pop(next(iter(_CLIENTS))).close()
            _CLIENTS[key] = client
        return client


def _signing_key() -> str:
    """What component JWTs are signed with (a client signs with what it saw when built)."""
    try:
        from airflow.configuration import conf

        return (
            (conf.get("api_auth", "jwt_secret", fallback="") or "")
            + "|"
            + (conf.get("api_auth", "jwt_private_key_path", fallback="") or "")
        )
    except Exception:  # noqa: BLE001
        return ""


class HandoffSender:
    """Sends spooled or fresh requests with one short-timeout attempt each.

    Sync calls use a client per resolved connection, shared by the process (see
    ``_client_for``); async calls a hook per connection id, closed with :meth:`aclose`.
    """

    def __init__(self, *, timeout: float = DEFAULT_HANDOFF_TIMEOUT, hooks: dict[str, Any] | None = None) -> None:
        self.timeout = float(timeout)
        self._hooks: dict[str, Any] = dict(hooks or {})
        self._clients: dict[str, Any] = {}

    def __enter__(self) -> HandoffSender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the async hooks' sync side; the shared sync clients stay open for reuse."""
        self._clients.clear()

    async def aclose(self) -> None:
        for hook in self._hooks.values():
            try:
                await hook.aclose()
            except Exception:  # noqa: BLE001
                pass

    def hook(self, conn_id: str) -> Any:
        conn_id = conn_id or DEFAULT_CONN_ID
        hook = self._hooks.get(conn_id)
        if hook is None:
            from airflow_escalation.hooks.escalation import EscalationHook

            hook = EscalationHook(conn_id, timeout=self.timeout, retries=0)
            self._hooks[conn_id] = hook
        return hook

    def client(self, conn_id: str) -> Any:
        conn_id = conn_id or DEFAULT_CONN_ID
        client = self._clients.get(conn_id)
        if client is None:
            client = self._clients[conn_id] = _client_for(conn_id, self.timeout)
        return client

    async def __aenter__(self) -> HandoffSender:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ running plans

    def run(self, plan: Plan[T]) -> T:
        """Run a plan in this thread, with a sync client per connection."""
        return run(plan, self._call)

    async def arun(self, plan: Plan[T]) -> T:
        """Run a plan on the event loop, with the hook's async methods."""
        return await arun(plan, self._acall)

    def _call(self, step: ServiceCall) -> Any:
        return getattr(self.client(step.conn_id), step.method)(*step.args, **step.kwargs)

    async def _acall(self, step: ServiceCall) -> Any:
        return await getattr(self.hook(step.conn_id), "a" + step.method)(*step.args, **step.kwargs)

    # ------------------------------------------------------------------ the plans

    def sending(self, kind: str, conn_id: str, request: dict[str, Any]) -> Plan[tuple[str, str, Any]]:
        """One attempt at one request: ``(outcome, message, answer)``; never raises."""
        from airflow_escalation.client.errors import EscalationConflict, EscalationNotFound

        conn_id = conn_id or DEFAULT_CONN_ID
        try:
            if kind == KIND_TRIGGER:
                answer = yield ServiceCall(
                    conn_id,
                    "trigger",
                    (request["incident_id"], request.get("context") or {}),
                    {
                        "policy_name": request.get("policy_name"),
                        "trigger_type": request.get("trigger_type"),
                        "policy": request.get("policy"),
                    },
                )
                return SENT, describe_trigger(answer), answer
            if kind == KIND_RESOLVE:
                page = yield ServiceCall(
                    conn_id,
                    "list_escalations",
                    (list(OPEN_STATE_VALUES),),
                    {"incident": request["incident_id"], "policy": request.get("policy_name"), "limit": 100},
                )
                resolved = []
                for record in page.get("escalations") or []:
                    try:
                        yield ServiceCall(conn_id, "resolve", (record["id"], request.get("note")))
                        resolved.append(record["id"])
                    except (EscalationConflict, EscalationNotFound):
                        continue  # closed meanwhile: nothing left to resolve
                return SENT, describe_resolve(request, resolved), resolved
            return DEAD, f"unknown kind {kind!r}", None
        except Exception as exc:  # noqa: BLE001 - a hand-off never raises
            outcome, message = classify(exc)
            return outcome, message, None

    def sending_entry(self, entry: SpoolEntry) -> Plan[tuple[str, str]]:
        """:meth:`sending` for a spooled entry (what :meth:`EscalationSpool.draining` sends)."""
        outcome, message, _ = yield from self.sending(entry.kind, entry.conn_id, entry.request)
        if outcome == SENT:
            log.info(
                "escalation spool: sent %s %s (%d earlier attempts): %s",
                entry.kind,
                entry.path.name,
                entry.attempts,
                message,
            )
        return outcome, message

    def send(self, kind: str, conn_id: str, request: dict[str, Any]) -> tuple[str, str, Any]:
        """:meth:`sending`, in this thread."""
        return self.run(self.sending(kind, conn_id, request))


def describe_trigger(answer: Any) -> str:
    if not isinstance(answer, dict):
        return "sent"
    record = answer.get("record") or {}
    if answer.get("success"):
        verb = "joined the open escalation" if answer.get("action") == "trigger_existing" else "escalation"
        return (
            f"{verb} {record.get('id')} (incident {record.get('incident_id')!r}, policy "
            f"{record.get('policy_name')!r}, level {record.get('current_level')}, {record.get('state')})"
        )
    return f"refused by the service ({answer.get('code')}): {answer.get('error') or answer.get('message')}"


def describe_resolve(request: dict[str, Any], resolved: list[str]) -> str:
    if not resolved:
        return f"no open escalation of incident {request.get('incident_id')!r} to resolve"
    return f"resolved {', '.join(resolved)} (incident {request.get('incident_id')!r})"


def draining(
    spool: EscalationSpool, sender: HandoffSender, *, budget_seconds: float, logger: Any = None
) -> Plan[DrainReport | None]:
    """Send what ``spool`` holds with ``sender`` for at most ``budget_seconds`` and log what it
    did: the one drain sequence of the notifier, the operator, the sensor, the triggerer's poller
    and the command line. ``None`` when the spool is empty (one directory listing)."""
    if not (yield Blocking(spool.pending)):
        return None
    report = yield from spool.draining(sender.sending_entry, budget_seconds=budget_seconds)
    if report.sent or report.dead or report.left:
        (logger or log).info(
            "escalation spool %s: sent %d earlier request(s), %d dead, %d left%s",
            spool.directory,
            report.sent,
            report.dead,
            report.left,
            f" ({report.stopped}: {report.last_error})" if report.stopped == "unavailable" else "",
        )
    return report


def drain_local_spool(
    *,
    budget_seconds: float = 1.0,
    timeout: float = DEFAULT_HANDOFF_TIMEOUT,
    spool_dir: str | None = None,
    logger: Any = None,
) -> DrainReport | None:
    """Send what this machine's spool holds, for at most ``budget_seconds``, in this thread;
    never raises (an operator or a sensor calls it before its own request).

    Returns the :class:`~airflow_escalation.spool.DrainReport`, or ``None`` when the spool is
    empty or draining failed.
    """
    try:
        with HandoffSender(timeout=timeout) as sender:
            return sender.run(
                draining(EscalationSpool(spool_dir), sender, budget_seconds=budget_seconds, logger=logger)
            )
    except Exception as exc:  # noqa: BLE001
        (logger or log).warning("escalation spool: drain failed: %s: %s", type(exc).__name__, exc)
        return None


__all__ = [
    "DEFAULT_HANDOFF_TIMEOUT",
    "HandoffSender",
    "ServiceCall",
    "classify",
    "drain_local_spool",
    "draining",
]
