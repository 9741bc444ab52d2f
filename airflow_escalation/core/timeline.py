"""An escalation's timeline as a person reads it: one entry per step, its deliveries nested.

A record's history is written for the engine: a climb is three events (``escalate``,
``escalate_success``, ``notified``), a reminder two (``notify``, ``notified``), and each carries
the state change it made. :func:`steps` folds them into the steps a person cares about ("Level 2
paged", "Reminder 1 to level 1", "Acknowledged by alice") and nests each notification's
deliveries (matched by level and round) under the step that sent it. The folded events stay on
the step (``events``, ``transitions``) for whoever wants the engine's view.

This is the one rule: the REST API serves its result (``GET /escalations/{id}``, ``timeline``),
and the pages, the CLI and the demo show that. It takes the JSON forms (``record.to_dict()``
history events and ``Delivery.to_dict()``), so a client holding only the API's answer can call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

from airflow_escalation.core import planner
from airflow_escalation.core.models import EscalationPolicy, EscalationRecord
from airflow_escalation.core.timefmt import format_time

#: events that are the engine's bookkeeping of a step another event opened
_FOLLOW_UPS = frozenset({"start", "escalate_success", "notified", "level_skipped", "notification_muted"})
#: step kinds whose step sends notifications (a following ``notified`` belongs to them)
_PAGING = frozenset({"triggered", "paged", "reminder", "escalated"})


@dataclass
class TimelineStep:
    """One step of an escalation: what happened, when, by whom, and who was told."""

    kind: str  # triggered, retriggered, paged, reminder, escalated, skipped, suppressed, acknowledged, …
    at: str  # ISO 8601, when the step began
    title: str
    level: int
    actor: str
    state: str  # the record's state after the step
    detail: str = ""  # a note, a reason, an error
    targets: list[str] = field(default_factory=list)  # target keys the step notified
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the history events folded in
    #: the notifications the step made: (level, round, target keys)
    _rounds: list[tuple[int, int, list[str]]] = field(default_factory=list, repr=False)

    @property
    def transitions(self) -> list[str]:
        """The state changes the step made, as ``event: from → to`` (the engine's view)."""
        out = []
        for event in self.events:
            before, after = event.get("from_state"), event.get("state")
            change = f"{before} \u2192 {after}" if before and before != after else str(after or "")
            out.append(f"{event.get('event')}: {change}" if change else str(event.get("event")))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at,
            "title": self.title,
            "level": self.level,
            "actor": self.actor,
            "state": self.state,
            "detail": self.detail,
            "targets": list(self.targets),
            "deliveries": list(self.deliveries),
            "transitions": self.transitions,
            "events": list(self.events),
        }


def target_key(target: Any) -> str:
    """``type:identifier`` of a target in its JSON form (the key ``notified`` events list)."""
    if isinstance(target, Mapping):
        return f"{target.get('type') or 'user'}:{target.get('identifier') or '?'}"
    return str(target)


def _by(actor: str) -> str:
    return f" by {actor}" if actor and actor != "system" else ""


def _muted_by(details: Mapping[str, Any]) -> str:
    by_what = "maintenance window" if details.get("kind") == "maintenance_window" else "silence"
    return f"{by_what} {details.get('id', '')}".rstrip()


def _muted_detail(details: Mapping[str, Any]) -> str:
    parts = [f"Comment: {details['comment']}"] if details.get("comment") else []
    if details.get("ends_at"):
        parts.append(f"until {format_time(str(details['ends_at']))}")
    return " \u00b7 ".join(parts)


def _escalated(level: int, actor: str) -> str:
    by = _by(actor)
    return f"Escalated to level {level}{by}" if by else f"Not acknowledged: escalated to level {level}"


def _detail(details: Mapping[str, Any]) -> str:
    parts = []
    for key, label in (("note", "Note"), ("reason", "Reason"), ("error", "Error")):
        if details.get(key):
            parts.append(f"{label}: {details[key]}")
    return " \u00b7 ".join(parts)


def _opening(event: Mapping[str, Any]) -> TimelineStep:
    """The step an event opens (every event that is not a follow-up of the current step)."""
    name = str(event.get("event") or "?")
    details: Mapping[str, Any] = event.get("details") or {}
    actor = str(event.get("actor") or "system")
    level = int(event.get("level") or 0)
    by = _by(actor)
    kind, title = name, f"{name}{by}"
    detail = _detail(details)
    if name == "triggered":
        kind, title = "triggered", f"Triggered{by}"
        extra = [f"Severity: {details['severity']}"] if details.get("severity") else []
        detail = " \u00b7 ".join(extra + ([detail] if detail else []))
    elif name == "retriggered":
        count = details.get("trigger_count")
        kind, title = "retriggered", f"Triggered again{by}" + (f" (\u00d7{count})" if count else "")
    elif name in ("start", "notified"):
        round_ = int(details.get("round") or 0)
        kind = "reminder" if round_ else "paged"
        title = f"Reminder {round_} to level {level}" if round_ else f"Level {level} paged"
    elif name == "notify":
        repeat = details.get("repeat")
        kind, title = "reminder", f"Reminder {repeat} to level {level}" if repeat else f"Level {level} paged again"
    elif name in ("escalate", "escalate_success"):
        # the level climbed to: the plan's to_level, else the next one (escalate_success corrects it)
        level = int(details.get("to_level") or (level + 1 if name == "escalate" else level))
        kind, title = "escalated", _escalated(level, actor)
    elif name == "level_skipped":
        kind, title = "skipped", f"Level {details.get('skipped_level', '?')} skipped"
    elif name == "notification_skipped":
        kind, title = "skipped", "Notification skipped"
    elif name in ("suppressed", "notification_muted"):  # a silence or a maintenance window (on-call)
        what = "Suppressed" if name == "suppressed" else "Notification muted"
        kind, title = "suppressed", f"{what} by {_muted_by(details)}"
        detail = " \u00b7 ".join([d for d in (detail, _muted_detail(details)) if d])
    elif name == "acknowledge":
        kind, title = "acknowledged", f"Acknowledged{by}"
    elif name == "resolve":
        kind, title = "resolved", f"Resolved{by}" if by else "Resolved automatically"
    elif name == "cancel":
        kind, title = "cancelled", f"Cancelled{by}"
    elif name == "timeout":
        kind, title = "timed_out", "Timed out: nobody acknowledged at the top level"
    elif name == "max_level_reached":
        kind, title = "timed_out", "Timed out: no more escalations allowed (max_escalations)"
    elif name == "error":
        kind, title = "failed", "Failed"
    return TimelineStep(
        kind=kind,
        at=str(event.get("at") or ""),
        title=title,
        level=level,
        actor=actor,
        state=str(event.get("state") or ""),
        detail=detail,
    )


def _folds_into(step: TimelineStep | None, event: Mapping[str, Any]) -> bool:
    """Is ``event`` the engine's bookkeeping of ``step`` (not a step of its own)?"""
    if step is None or event.get("event") not in _FOLLOW_UPS:
        return False
    name = event.get("event")
    details: Mapping[str, Any] = event.get("details") or {}
    if name == "start":  # pending → active right after the trigger (level 1 without delay)
        return step.kind == "triggered" and not step._rounds
    if name == "escalate_success":
        return step.kind == "escalated"
    if name == "level_skipped":  # a level passed over on the way up is part of the climb
        return step.kind == "escalated"
    if name == "notification_muted":  # the step's notification, held back by a silence
        return step.kind in _PAGING
    # notified: the notification of the step that paged, once per (level, round)
    key = (int(event.get("level") or 0), int(details.get("round") or 0))
    return step.kind in _PAGING and step.level == key[0] and key not in [r[:2] for r in step._rounds]


def steps(history: Sequence[Mapping[str, Any]], deliveries: Sequence[Mapping[str, Any]] = ()) -> list[TimelineStep]:
    """The record's ``history`` as steps, each with the ``deliveries`` its notification made.

    A delivery joins the step whose ``notified`` event has its level and round (the first such
    step not yet holding it: a level paged twice gets each time's own); deliveries no step
    claims form a last step of kind ``deliveries``.
    """
    out: list[TimelineStep] = []
    current: TimelineStep | None = None
    for event in history:
        folded = _folds_into(current, event)
        if not folded:
            current = _opening(event)
            out.append(current)
        assert current is not None
        current.events.append(dict(event))
        current.state = str(event.get("state") or current.state)
        if event.get("event") == "level_skipped" and current.kind == "escalated":
            skipped = f"Level {(event.get('details') or {}).get('skipped_level', '?')} skipped"
            current.detail = f"{current.detail} \u00b7 {skipped}" if current.detail else skipped
        if event.get("event") == "notification_muted" and folded:
            muted = f"Muted by {_muted_by(event.get('details') or {})}"
            more = _muted_detail(event.get("details") or {})
            note = f"{muted} \u00b7 {more}" if more else muted
            current.detail = f"{current.detail} \u00b7 {note}" if current.detail else note
        if event.get("event") == "escalate_success" and current.kind == "escalated":
            current.level = int(event.get("level") or current.level)  # where the climb landed
            current.title = _escalated(current.level, current.actor)
        if event.get("event") == "notified":
            details: Mapping[str, Any] = event.get("details") or {}
            targets = [str(t) for t in details.get("targets") or []]
            current._rounds.append((int(event.get("level") or 0), int(details.get("round") or 0), targets))
            current.targets.extend(t for t in targets if t not in current.targets)
    for step in out:
        if step.kind == "triggered" and step._rounds:
            step.title += f": level {step._rounds[0][0]} paged"
    used: set[int] = set()
    for step in out:
        for level, round_, targets in step._rounds:
            wanted = list(targets)  # each target of this notification once
            for i, delivery in enumerate(deliveries):
                key = target_key(delivery.get("target"))
                if (
                    i not in used
                    and key in wanted
                    and delivery.get("level") == level
                    and int(delivery.get("round") or 0) == round_
                ):
                    used.add(i)
                    wanted.remove(key)
                    step.deliveries.append(dict(delivery))
    rest = [dict(d) for i, d in enumerate(deliveries) if i not in used]
    if rest:
        first = min((str(d.get("created_at") or "") for d in rest), default="")
        out.append(
            TimelineStep(
                kind="deliveries",
                at=first,
                title="Other deliveries",
                level=int(rest[0].get("level") or 0),
                actor="system",
                state=out[-1].state if out else "",
                deliveries=rest,
            )
        )
    return out


@dataclass(frozen=True)
class NextStep:
    """What a record does next, when, and whom it tells: the planner's answer, in words."""

    action: str  # planner.START, REPEAT, ESCALATE, AUTO_RESOLVE or TIME_OUT
    due_at: datetime
    level: int | None  # the level told (None: nobody is told)
    targets: list[str]  # their display names
    text: str  # "level 2 → eng-manager, oncall-primary"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "due_at": self.due_at.isoformat(),
            "level": self.level,
            "targets": list(self.targets),
            "text": self.text,
        }


def next_step(record: EscalationRecord, policy: EscalationPolicy) -> NextStep | None:
    """The record's next step as the engine planned it (``next_action`` at ``next_escalation_at``,
    written from :func:`planner.plan`), with the level :func:`planner.paged_level` says it tells."""
    action, due = record.next_action, record.next_escalation_at
    if not action or due is None or not record.is_open:
        return None
    level = planner.paged_level(record, policy, action)
    names = [t.display_name for t in level.targets] if level is not None else []
    who = ", ".join(names) or "no targets"
    if action == planner.AUTO_RESOLVE:
        text = "resolves automatically"
    elif action == planner.TIME_OUT:
        text = f"times out at level {record.current_level}"
    elif level is None:
        text = action.replace("_", " ")
    elif action == planner.REPEAT:
        text = f"reminder {record.repeats_sent + 1} to level {level.level} \u2192 {who}"
    else:
        text = f"level {level.level} \u2192 {who}"
    return NextStep(action, due, level.level if level is not None else None, names, text)
