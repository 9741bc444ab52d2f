"""One notification, built once from the record, and rendered for each channel.

:meth:`EscalationMessage.build` reads the escalation record, the level being notified and the
target, and the trigger's context. Context keys it understands (all optional; the failure
callbacks and operators of this provider set them):

================== ==========================================================================
``dag_id``         the Dag; with ``run_id``/``task_id`` it makes the title and the UI links
``run_id``         the Dag run
``task_id``        the task (``map_index`` >= 0 links the mapped instance)
``map_index``      ``-1`` (or absent) when the task is not mapped
``try_number``     the attempt that failed
``logical_date``   shown as given
``exception``      the error text (``error`` and ``exception_message`` are read too); shown
                   as an excerpt of at most 2,000 characters, after ``exception_type``
``source``         ``deadline`` (or a ``deadline_time``): the title says the Dag missed its
                   deadline; ``deadline_time`` is shown
``log_url``        a link to the task's log (used only under the Airflow base URL)
``title``          replaces the generated title after the ``[ESCALATION Ln]`` prefix
``message``        a free-text summary (``summary`` is read too)
``severity``       shown, and mapped to PagerDuty's severities
================== ==========================================================================

Renderers: :meth:`~EscalationMessage.to_text` (plain text), :meth:`~EscalationMessage.to_html`
(e-mail; every value escaped), :meth:`~EscalationMessage.to_slack_blocks` (Block Kit; mrkdwn
escaped), :meth:`~EscalationMessage.to_webhook_json` (the documented webhook body, schema
version 1, see docs/channels.md).

Links to the Airflow UI follow its routes (Airflow 3): ``/dags/{dag_id}``,
``/dags/{dag_id}/runs/{run_id}``, ``/dags/{dag_id}/runs/{run_id}/tasks/{task_id}`` and
``.../tasks/{task_id}/mapped/{map_index}``. The escalation's own page is
``/plugin/escalations/escalation/ui/records/{id}`` (the service's UI inside Airflow's).
One-click acknowledge/resolve links are signed tokens from :mod:`airflow_escalation.service.links`
(when a base URL and a secret are available); opening one shows a confirmation page, so link
previews and mail scanners cannot act on it.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_escalation.core.timefmt import format_time

if TYPE_CHECKING:
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

log = logging.getLogger("airflow_escalation.channels")

WEBHOOK_EVENT = "escalation.notify"
WEBHOOK_SCHEMA_VERSION = 1
MAX_EXCEPTION_CHARS = 2000
MAX_TITLE_CHARS = 200
ACTIONS = ("acknowledge", "resolve")
#: the ``block_id`` of the buttons block (the Slack route replaces it when the message is updated)
SLACK_ACTIONS_BLOCK = "escalation_actions"

# link keys in display order, with their labels
LINK_LABELS = {
    "task": "Task instance",
    "run": "Dag run",
    "dag": "Dag",
    "log": "Log",
    "escalation": "Escalation",
    "acknowledge": "Acknowledge",
    "resolve": "Resolve",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(value: Any, limit: int) -> str:
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _excerpt(value: Any, limit: int = MAX_EXCEPTION_CHARS) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\r\n", "\n").strip()
    if not text:
        return None
    if len(text) > limit:
        text = text[:limit].rstrip() + f"\n… ({len(text) - limit} more characters)"
    return text


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _path(value: str) -> str:
    return quote(value, safe="")


def is_under_base_url(value: Any, base_url: str) -> bool:
    """Is ``value`` an http(s) URL under ``base_url`` (same scheme, host and port, and path)?"""
    if not _is_web_url(value) or not _is_web_url(base_url):
        return False
    url, base = urlsplit(value), urlsplit(base_url.rstrip("/"))
    if (url.scheme.lower(), url.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
        return False
    return not base.path or url.path == base.path or url.path.startswith(base.path + "/")


def _is_web_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def airflow_ui_links(
    base_url: str,
    dag_id: str | None,
    run_id: str | None = None,
    task_id: str | None = None,
    map_index: int | None = None,
    try_number: int | None = None,
) -> dict[str, str]:
    """Links to the Airflow 3 UI for a Dag, its run and a task instance (as far as known).

    The task link is the one Airflow's own ``log_url`` builds (with ``?try_number=``).
    """
    base = base_url.rstrip("/")
    if not base or not dag_id:
        return {}
    links: dict[str, str] = {}
    dag = f"{base}/dags/{_path(dag_id)}"
    if run_id:
        run = f"{dag}/runs/{_path(run_id)}"
        if task_id:
            task = f"{run}/tasks/{_path(task_id)}"
            if map_index is not None and map_index >= 0:
                task += f"/mapped/{map_index}"
            if try_number is not None and try_number > 0:
                task += f"?try_number={try_number}"
            links["task"] = task
        links["run"] = run
    links["dag"] = dag
    return links


def _links_module() -> Any:
    try:
        from airflow_escalation.service import links
    except ImportError:
        return None
    return links


#: the escalation service's page inside the Airflow UI: the nav entry's iframe route
#: (``service.ui.act.NAV_URL_ROUTE``) followed by the page's own path
UI_RECORD_PATH = "/plugin/escalations/escalation/ui/records/"


def escalation_page_url(base_url: str, record_id: str) -> str:
    """The escalation's page in the Airflow UI (``links.record_url`` when the UI provides one)."""
    base = base_url.rstrip("/")
    links = _links_module()
    record_url = getattr(links, "record_url", None) if links is not None else None
    if record_url is not None:
        try:
            return record_url(base, record_id)
        except Exception:
            log.exception("links.record_url failed; using the default escalation page URL")
    return f"{base}{UI_RECORD_PATH}{_path(record_id)}"


def action_links(base_url: str, record_id: str, secret: str | None, ttl_seconds: int = 86400) -> dict[str, str]:
    """One-click ``acknowledge``/``resolve`` URLs, or ``{}`` when they cannot be signed."""
    if not base_url or not secret:
        return {}
    links = _links_module()
    make_token = getattr(links, "make_action_token", None) if links is not None else None
    to_url = getattr(links, "action_url", None) if links is not None else None
    if make_token is None or to_url is None:
        return {}
    out: dict[str, str] = {}
    try:
        for action in ACTIONS:
            token = make_token(record_id, action, secret=secret, ttl_seconds=ttl_seconds)
            out[action] = to_url(base_url.rstrip("/"), token)
    except Exception:
        log.exception("cannot sign the acknowledge/resolve links of escalation %s", record_id)
        return {}
    return out


def _target_dict(target: EscalationTarget) -> dict[str, Any]:
    return {"type": target.type.value, "identifier": target.identifier, "name": target.display_name}


@dataclass(frozen=True)
class EscalationMessage:
    """Everything a notification says, independent of the channel that carries it."""

    title: str
    record_id: str
    incident_id: str
    policy_name: str
    state: str
    level: int
    max_level: int | None
    severity: str | None
    trigger_type: str
    triggered_at: datetime
    escalation_count: int
    sent_at: datetime
    target: dict[str, Any] | None = None
    targets: tuple[dict[str, Any], ...] = ()
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    logical_date: str | None = None
    deadline_time: str | None = None
    exception: str | None = None
    summary: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        record: EscalationRecord,
        level: EscalationLevel | None = None,
        target: EscalationTarget | None = None,
        *,
        base_url: str = "",
        action_secret: str | None = None,
        action_ttl_seconds: int = 86400,
        now: datetime | None = None,
        with_actions: bool = True,
    ) -> EscalationMessage:
        ctx = dict(record.context or {})
        level_no = level.level if level is not None else record.current_level
        dag_id = _str_or_none(ctx.get("dag_id"))
        run_id = _str_or_none(ctx.get("run_id"))
        task_id = _str_or_none(ctx.get("task_id"))
        map_index = _int_or_none(ctx.get("map_index"))
        try_number = _int_or_none(ctx.get("try_number"))
        exception = None
        for key in ("exception", "error", "exception_message"):
            exception = _excerpt(ctx.get(key))
            if exception:
                break
        kind = _str_or_none(ctx.get("exception_type"))
        if exception and kind and not exception.startswith(kind):
            exception = f"{kind}: {exception}"
        deadline_time = _str_or_none(ctx.get("deadline_time"))
        missed_deadline = ctx.get("source") == "deadline" or deadline_time is not None
        summary = None
        for key in ("message", "summary"):
            summary = _excerpt(ctx.get(key), 1000)
            if summary:
                break

        if ctx.get("title"):
            subject = str(ctx["title"])
        elif dag_id and missed_deadline:
            subject = f"{dag_id} missed its deadline"
        elif dag_id and task_id:
            subject = f"{dag_id}.{task_id} failed"
        elif dag_id:
            subject = f"{dag_id} failed"
        elif summary:
            subject = summary
        else:
            subject = f"incident {record.incident_id}"
        title = _one_line(f"[ESCALATION L{level_no}] {subject}", MAX_TITLE_CHARS)

        levels = (record.policy_snapshot or {}).get("levels") or []
        try:
            max_level = max(int(lv["level"]) for lv in levels) if levels else None
        except (KeyError, TypeError, ValueError):
            max_level = None

        base = base_url.rstrip("/")
        links = airflow_ui_links(base, dag_id, run_id, task_id, map_index, try_number)
        # the context is the triggering caller's text: its log_url is a link only into Airflow
        if base and is_under_base_url(ctx.get("log_url"), base):
            links["log"] = ctx["log_url"]
        if base:
            links["escalation"] = escalation_page_url(base, record.id)
            if with_actions and record.is_open:
                links.update(action_links(base, record.id, action_secret, action_ttl_seconds))
        ordered = {key: links[key] for key in LINK_LABELS if key in links}

        level_targets = level.targets if level is not None else []
        return cls(
            title=title,
            record_id=record.id,
            incident_id=record.incident_id,
            policy_name=record.policy_name,
            state=str(record.state),
            level=level_no,
            max_level=max_level,
            severity=record.severity,
            trigger_type=str(record.trigger_type),
            triggered_at=record.created_at,
            escalation_count=record.escalation_count,
            sent_at=now or datetime.now(timezone.utc),
            target=_target_dict(target) if target is not None else None,
            targets=tuple(_target_dict(t) for t in sorted(level_targets, key=lambda t: t.priority)),
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index if map_index is not None and map_index >= 0 else None,
            try_number=try_number,
            logical_date=_str_or_none(ctx.get("logical_date")),
            deadline_time=deadline_time,
            exception=exception,
            summary=summary,
            links=ordered,
            context=ctx,
        )

    # ------------------------------------------------------------------------- pieces
    @property
    def level_text(self) -> str:
        return f"{self.level} of {self.max_level}" if self.max_level else str(self.level)

    @property
    def targets_text(self) -> str:
        return ", ".join(t["name"] for t in self.targets)

    def facts(self) -> list[tuple[str, str]]:
        """``(label, value)`` lines shared by the text, HTML and Slack renderings."""
        rows = [
            ("Severity", self.severity or "unspecified"),
            ("Level", self.level_text),
            ("State", self.state),
            ("Incident", self.incident_id),
            ("Policy", self.policy_name),
            ("Escalation", self.record_id),
        ]
        if self.targets:
            rows.append(("Notified at this level", self.targets_text))
        if self.dag_id:
            rows.append(("Dag", self.dag_id))
        if self.run_id:
            rows.append(("Run", self.run_id))
        if self.task_id:
            task = self.task_id
            if self.map_index is not None:
                task += f" [{self.map_index}]"
            if self.try_number is not None:
                task += f" (try {self.try_number})"
            rows.append(("Task", task))
        if self.logical_date:
            rows.append(("Logical date", self.logical_date))
        if self.deadline_time:
            rows.append(("Deadline", self.deadline_time))
        rows.append(("Triggered", format_time(self.triggered_at)))
        return rows

    def link_items(self) -> list[tuple[str, str, str]]:
        """``(key, label, url)`` in display order."""
        return [(key, LINK_LABELS[key], url) for key, url in self.links.items()]

    # ------------------------------------------------------------------------- plain text
    def to_text(self) -> str:
        lines = [self.title, ""]
        if self.summary:
            lines += [self.summary, ""]
        width = max(len(label) for label, _ in self.facts())
        lines += [f"{label + ':':<{width + 1}} {value}" for label, value in self.facts()]
        if self.exception:
            lines += ["", "Error:"] + ["    " + line for line in self.exception.splitlines()]
        items = self.link_items()
        if items:
            lines += ["", "Links:"] + [f"    {label}: {url}" for _, label, url in items]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------------- HTML
    def to_html(self) -> str:
        e = html.escape
        rows = "".join(
            f'<tr><th align="left" style="padding:2px 12px 2px 0;color:#555">{e(label)}</th>'
            f'<td style="padding:2px 0">{e(value)}</td></tr>'
            for label, value in self.facts()
        )
        parts = [
            '<!DOCTYPE html><html><body style="font-family:Arial,Helvetica,sans-serif;font-size:14px">',
            f'<h2 style="margin:0 0 12px 0">{e(self.title)}</h2>',
        ]
        if self.summary:
            parts.append(f'<p style="white-space:pre-wrap">{e(self.summary)}</p>')
        parts.append(f'<table cellspacing="0" cellpadding="0">{rows}</table>')
        if self.exception:
            parts.append(
                '<h3 style="margin:16px 0 4px 0">Error</h3>'
                '<pre style="background:#f6f8fa;padding:8px;white-space:pre-wrap">'
                f"{e(self.exception)}</pre>"
            )
        actions = [(k, label, url) for k, label, url in self.link_items() if k in ACTIONS]
        others = [(k, label, url) for k, label, url in self.link_items() if k not in ACTIONS]
        if actions:
            colours = {"acknowledge": "#1f6feb", "resolve": "#1a7f37"}
            buttons = " ".join(
                f'<a href="{e(url, quote=True)}" style="display:inline-block;padding:8px 14px;'
                f"margin-right:8px;background:{colours[k]};color:#ffffff;text-decoration:none;"
                f'border-radius:4px">{e(label)}</a>'
                for k, label, url in actions
            )
            parts.append(f'<p style="margin:16px 0">{buttons}</p>')
        if others:
            items = "".join(f'<li><a href="{e(url, quote=True)}">{e(label)}</a></li>' for _, label, url in others)
            parts.append(f"<ul>{items}</ul>")
        parts.append("</body></html>")
        return "".join(parts)

    # ------------------------------------------------------------------------- Slack
    @property
    def slack_text(self) -> str:
        """The notification text Slack shows where blocks cannot be (push, previews)."""
        return slack_escape(self.title)

    def to_slack_blocks(self, interactive: bool = False) -> list[dict[str, Any]]:
        """Block Kit blocks: header, facts, error excerpt, links, acknowledge/resolve buttons.

        ``interactive`` (the Slack API connection): the buttons post back to the service's Slack
        interactivity endpoint (``action_id`` ``escalation_<action>``, ``value`` the record id) and
        act as the Slack member's escalation user. Otherwise (Incoming Webhooks) they are the
        signed one-click links."""
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _one_line(self.title, 150)}},
        ]
        if self.summary:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(self.summary)[:2900]}})
        fields = [
            {"type": "mrkdwn", "text": f"*{label}*\n{slack_escape(value)[:1900]}"}
            for label, value in self.facts()
            if label != "Triggered"
        ][:10]
        blocks.append({"type": "section", "fields": fields})
        if self.exception:
            excerpt = slack_escape(self.exception)
            if len(excerpt) > 2800:
                excerpt = excerpt[:2800] + "\n…"
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{excerpt}```"}})
        others = [(label, url) for key, label, url in self.link_items() if key not in ACTIONS]
        if others:
            text = " · ".join(slack_link(url, label) for label, url in others)
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2900]}]})
        buttons = self._slack_action_buttons() if interactive else self._slack_link_buttons()
        if buttons:
            blocks.append({"type": "actions", "block_id": SLACK_ACTIONS_BLOCK, "elements": buttons})
        return blocks

    def _slack_link_buttons(self) -> list[dict[str, Any]]:
        buttons = []
        for key, label, url in self.link_items():
            if key in ACTIONS:
                button = {
                    "type": "button",
                    "action_id": f"escalation_{key}",
                    "text": {"type": "plain_text", "text": label},
                    "url": url,
                }
                if key == "acknowledge":
                    button["style"] = "primary"
                buttons.append(button)
        return buttons

    def _slack_action_buttons(self) -> list[dict[str, Any]]:
        from airflow_escalation.core.states import can

        buttons: list[dict[str, Any]] = []
        for action in ACTIONS:
            if can(action, self.state):
                button = {
                    "type": "button",
                    "action_id": f"escalation_{action}",
                    "text": {"type": "plain_text", "text": LINK_LABELS[action]},
                    "value": self.record_id,
                }
                if action == "acknowledge":
                    button["style"] = "primary"
                buttons.append(button)
        return buttons

    # ------------------------------------------------------------------------- webhook
    def to_webhook_json(self) -> dict[str, Any]:
        """The webhook body (schema version 1; docs/channels.md). Keys are always present."""
        return {
            "event": WEBHOOK_EVENT,
            "schema_version": WEBHOOK_SCHEMA_VERSION,
            "sent_at": self.sent_at.isoformat(),
            "title": self.title,
            "text": self.to_text(),
            "record_id": self.record_id,
            "incident_id": self.incident_id,
            "policy": self.policy_name,
            "state": self.state,
            "level": self.level,
            "max_level": self.max_level,
            "severity": self.severity,
            "trigger_type": self.trigger_type,
            "triggered_at": self.triggered_at.isoformat(),
            "escalation_count": self.escalation_count,
            "target": self.target,
            "targets": list(self.targets),
            "dag": {
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "task_id": self.task_id,
                "map_index": self.map_index,
                "try_number": self.try_number,
                "logical_date": self.logical_date,
            }
            if self.dag_id
            else None,
            "exception": self.exception,
            "summary": self.summary,
            "links": dict(self.links),
            "context": _jsonable(self.context),
        }


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it (anything unknown becomes its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def slack_escape(text: Any) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(url: str, label: str) -> str:
    """``<url|label>`` with both parts safe inside Slack's link syntax."""
    safe_url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe_url}|{slack_escape(label).replace('|', '¦')}>"
