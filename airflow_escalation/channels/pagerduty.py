"""PagerDuty Events API v2 (``pagerduty_events`` connections) via ``PagerdutyEventsAsyncHook``.

The connection's password is the integration (routing) key. Every notification is a ``trigger``
event whose ``dedup_key`` is the escalation record's id, so repeats and higher levels update one
PagerDuty alert instead of opening new ones. When the escalation is acknowledged or resolved
(or cancelled) in Airflow, the service sends ``acknowledge``/``resolve`` with the same
``dedup_key`` (see :func:`airflow_escalation.service.delivery.ChannelDelivery.follow_up`).

The connection's host, when set, replaces ``https://events.pagerduty.com`` (for example
``events.eu.pagerduty.com`` for EU accounts, or a proxy); PagerDuty's UI form hides the field,
so set it with the CLI, an environment variable or a secrets backend.

Severity maps from the record's ``severity``: critical → critical, high/error → error,
medium/warning → warning, low/info → info; anything else → error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_escalation.channels.base import (
    Channel,
    ChannelError,
    ConnectionInfo,
    PermanentChannelError,
    failure_reason,
)

if TYPE_CHECKING:
    from airflow_escalation.channels.message import EscalationMessage
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
PD_ACTIONS = ("trigger", "acknowledge", "resolve")
_SEVERITY = {
    "critical": "critical",
    "high": "error",
    "error": "error",
    "medium": "warning",
    "warning": "warning",
    "low": "info",
    "info": "info",
}
MAX_SUMMARY = 1024


def pagerduty_severity(severity: str | None) -> str:
    return _SEVERITY.get((severity or "").lower(), "error")


def events_base_url(connection: ConnectionInfo) -> str:
    """The Events API root for the connection: its host if set, else PagerDuty's."""
    host = connection.host.strip()
    if not host:
        return DEFAULT_EVENTS_URL
    if "://" not in host:
        host = f"{connection.schema or 'https'}://{host}"
    if connection.port and urlsplit(host).port is None:
        host = f"{host.rstrip('/')}:{connection.port}"
    return host.rstrip("/")


def event_fields(message: EscalationMessage, action: str = "trigger") -> dict[str, Any]:
    """The keyword arguments of ``send_event`` for ``message`` (the payload builder, testable alone)."""
    if action not in PD_ACTIONS:
        raise ValueError(f"PagerDuty event action must be one of {PD_ACTIONS}, got {action!r}")
    details: dict[str, Any] = {
        "escalation_id": message.record_id,
        "incident_id": message.incident_id,
        "policy": message.policy_name,
        "level": message.level_text,
        "state": message.state,
        "severity": message.severity,
    }
    if message.targets:
        details["notified"] = message.targets_text
    for key in ("dag_id", "run_id", "task_id", "map_index", "try_number"):
        value = getattr(message, key)
        if value is not None:
            details[key] = value
    if message.exception:
        details["exception"] = message.exception
    if message.summary:
        details["summary"] = message.summary
    links = [{"href": url, "text": label} for _, label, url in message.link_items()]
    source = urlsplit(message.links.get("escalation", "")).hostname or "airflow"
    fields: dict[str, Any] = {
        "summary": message.title[:MAX_SUMMARY],
        "severity": pagerduty_severity(message.severity),
        "source": source,
        "action": action,
        "dedup_key": message.record_id,
        "custom_details": details,
        "class_type": message.trigger_type,
        "links": links or None,
    }
    if message.dag_id:
        fields["group"] = message.dag_id
    if message.task_id:
        fields["component"] = message.task_id
    return fields


class PagerDutyEventsChannel(Channel):
    """Trigger (and acknowledge/resolve) one PagerDuty alert per escalation record."""

    conn_types = ("pagerduty_events",)
    provider_package = "apache-airflow-providers-pagerduty"
    provider_module = "airflow.providers.pagerduty.hooks.pagerduty_events"
    extra = "pagerduty"
    supports_resolve = True

    async def send(
        self,
        message: EscalationMessage,
        target: EscalationTarget,
        record: EscalationRecord,
        level: EscalationLevel,
        connection: ConnectionInfo,
    ) -> None:
        await self._event(target.conn_id or connection.conn_id, connection, event_fields(message, "trigger"))

    async def resolve(
        self,
        record: EscalationRecord,
        target: EscalationTarget,
        connection: ConnectionInfo,
        action: str = "resolve",
        message: EscalationMessage | None = None,
    ) -> None:
        if action not in ("acknowledge", "resolve"):
            raise ValueError(f"action must be acknowledge or resolve, got {action!r}")
        if message is None:
            from airflow_escalation.channels.message import EscalationMessage

            message = EscalationMessage.build(record, None, target, with_actions=False)
        fields = event_fields(message, action)
        await self._event(target.conn_id or connection.conn_id, connection, fields)

    async def _event(self, conn_id: str, connection: ConnectionInfo, fields: dict[str, Any]) -> str:
        module = self.import_provider()
        hook_cls = getattr(module, "PagerdutyEventsAsyncHook", None)
        if hook_cls is None:
            raise PermanentChannelError(
                f"the installed {self.provider_package} has no PagerdutyEventsAsyncHook: {self.install_hint()}"
            )
        hook = hook_cls(pagerduty_events_conn_id=conn_id)
        hook.base_url = events_base_url(connection)
        hook.retry_limit = 1  # one attempt per delivery: the engine retries with backoff
        try:
            return await hook.send_event(**fields)
        except Exception as exc:  # noqa: BLE001 - any provider error becomes a ChannelError
            raise ChannelError(
                f"PagerDuty {fields['action']} event for {fields['dedup_key']}: {failure_reason(exc)}"
            ) from None
