"""Policies as data: a revision of the policies document, each policy's errors, what an edit
changed, and the timeline a policy produces.

The document is the policies file's ``escalation:`` mapping (``policies``, ``default_policy``,
``global_enabled``, …), kept as its author wrote it; each saved version of it is a revision
(``service/policy_sync.py`` stores and applies them; ``service/policy_validation.py`` checks a
whole document). Pure functions of the domain: no I/O, no Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_escalation.core import planner
from airflow_escalation.core.models import EscalationLevel, EscalationPolicy, EscalationRecord
from airflow_escalation.core.types import EscalationState

#: steps a preview shows at most (a policy repeating every minute for a day stops there)
MAX_PREVIEW_STEPS = 60
#: a preview's last step when the escalation times out (timeout_minutes, or max_escalations)
TIMEOUT = planner.TIME_OUT


@dataclass(frozen=True)
class PolicyRevision:
    """One saved version of the policies document: who saved it, when, and what changed."""

    revision: int
    document: dict[str, Any]
    author: str
    created_at: datetime
    comment: str = ""
    source: str = "api"  # api, import, file (the policies file at start), rollback
    changes: list[str] = field(default_factory=list)

    def to_dict(self, with_document: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "revision": self.revision,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "comment": self.comment,
            "source": self.source,
            "changes": list(self.changes),
        }
        if with_document:
            data["document"] = self.document
        return data


class RevisionConflict(Exception):
    """Someone saved another revision first (the caller's ``expected`` is not the latest)."""

    def __init__(self, expected: int, latest: int) -> None:
        super().__init__(f"revision {expected} is not the latest (revision {latest} is): reload and edit again")
        self.expected, self.latest = expected, latest


#: sections a policies file may hold beside its ``escalation:`` block (on-call, failure routes)
BESIDE = frozenset({"users", "schedules", "maintenance_windows", "routes"})


def unwrap(data: Any) -> Any:
    """The document itself, one flat mapping, whether given as the file (``escalation:``, with
    the on-call sections and routes beside it or inside it) or bare."""
    if isinstance(data, dict) and "escalation" in data and set(data) - {"escalation"} <= BESIDE:
        inner = data["escalation"] if data["escalation"] is not None else {}
        if not isinstance(inner, dict):
            return data  # the validation names it
        beside = {k: v for k, v in data.items() if k != "escalation"}
        return {**inner, **beside} if not set(beside) & set(inner) else data
    return data


def policy_errors_of(item: Any) -> list[str]:
    """Every error of one policy definition: each level's own, then the policy's."""
    if not isinstance(item, dict):
        return [f"expected a mapping, got {type(item).__name__}"]
    errors: list[str] = []
    levels = item.get("levels") or []
    if not isinstance(levels, list):
        return [f"levels: expected a list, got {type(levels).__name__}"]
    good = []
    for index, level in enumerate(levels):
        try:
            good.append(EscalationLevel.from_dict(level).to_dict())
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            errors.append(f"levels[{index}]: {exc}")
    # the policy's own fields, checked with its valid levels (a stand-in when none is valid, so
    # a bad level is not reported twice as "no levels")
    checked = good if good or not errors else [{"level": 1}]
    try:
        EscalationPolicy.from_dict({**item, "levels": checked})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        errors.append(str(exc))
    return errors


def policy_entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    raw = unwrap(data).get("policies") or []
    return [p for p in raw if isinstance(p, dict)] if isinstance(raw, list) else []


def with_policy(document: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``policy`` added, or replacing the policy of its name."""
    doc = dict(unwrap(document))
    entries = list(policy_entries(doc))
    for index, entry in enumerate(entries):
        if entry.get("name") == policy.get("name"):
            entries[index] = policy
            break
    else:
        entries.append(policy)
    doc["policies"] = entries
    return doc


def without_policy(document: dict[str, Any], name: str) -> dict[str, Any]:
    doc = dict(unwrap(document))
    doc["policies"] = [p for p in policy_entries(doc) if p.get("name") != name]
    if doc.get("default_policy") == name:
        doc.pop("default_policy")
    return doc


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """What an edit changed, in words: policies added, removed or changed (with the fields that
    changed), and top-level settings changed."""
    old = unwrap(before or {})
    new = unwrap(after)
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key != "policies" and old.get(key) != new.get(key):
            out.append(f"{key}: {_short(old.get(key))} \u2192 {_short(new.get(key))}")
    olds = {p.get("name"): p for p in policy_entries(old)}
    news = {p.get("name"): p for p in policy_entries(new)}
    for name in news:
        if name not in olds:
            out.append(f"policy {name} added")
        elif olds[name] != news[name]:
            fields = _changed_fields(olds[name], news[name])
            out.append(f"policy {name} changed: {', '.join(fields)}")
    out += [f"policy {name} removed" for name in olds if name not in news]
    return out or ["no change"]


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    fields = []
    for key in sorted(set(old) | set(new), key=str):
        if key == "levels" and isinstance(old.get(key), list) and isinstance(new.get(key), list):
            before, after = old[key], new[key]
            for index in range(max(len(before), len(after))):
                a = before[index] if index < len(before) else None
                b = after[index] if index < len(after) else None
                if a == b:
                    continue
                if a is None or b is None:
                    fields.append(f"levels[{index}] {'added' if a is None else 'removed'}")
                elif isinstance(a, dict) and isinstance(b, dict):
                    fields += [f"levels[{index}].{k}" for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
                else:
                    fields.append(f"levels[{index}]")
        elif old.get(key) != new.get(key):
            fields.append(str(key))
    return fields


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "\u2026"


# ---------------------------------------------------------------------------------- preview


@dataclass(frozen=True)
class PreviewStep:
    minute: float  # after the trigger
    level: int
    action: str  # start, repeat, escalate, auto_resolve, timeout
    targets: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"minute": self.minute, "level": self.level, "action": self.action, "targets": list(self.targets)}


def preview(policy: EscalationPolicy) -> list[PreviewStep]:
    """The notifications ``policy`` sends when nobody acknowledges: the planner's own steps
    (``planner.plan``) played forward from a trigger, business hours aside."""
    t0 = datetime(2000, 1, 3, tzinfo=timezone.utc)
    record = EscalationRecord(id="preview", incident_id="preview", policy_name=policy.name, created_at=t0)
    out: list[PreviewStep] = []
    escalations = 0
    while len(out) < MAX_PREVIEW_STEPS:
        step = planner.plan(record, policy, record.level_fired_at or t0, business_hours=False)
        if step is None:
            break
        due = step.due
        if step.action in (planner.AUTO_RESOLVE, planner.TIME_OUT):
            out.append(PreviewStep(_minutes(due - t0), record.current_level, step.action, []))
            break
        level = planner.paged_level(record, policy, step.action)
        if level is None:
            break
        if step.action == planner.ESCALATE:
            if policy.max_escalations and escalations >= policy.max_escalations:
                # the climb the policy does not allow: the escalation times out then
                out.append(PreviewStep(_minutes(due - t0), record.current_level, TIMEOUT, []))
                break
            escalations += 1
        if step.action == planner.REPEAT:
            record.repeats_sent += 1
        else:
            record.current_level, record.level_fired_at, record.repeats_sent = level.level, due, 0
            record.state = EscalationState.ACTIVE
        out.append(PreviewStep(_minutes(due - t0), level.level, step.action, [t.display_name for t in level.targets]))
        if not level.require_ack and record.repeats_sent >= level.repeat_count:
            break  # a notify-only level resolves after its last round
    return out


def preview_text(steps: list[PreviewStep]) -> str:
    """``L1 at 0, 5, 10 min; L2 at 15; L3 at 45`` (the unit once, on the first level)."""
    parts: list[str] = []
    current: tuple[int, list[str]] | None = None
    for step in steps:
        if step.action in (planner.AUTO_RESOLVE, TIMEOUT):
            if current:
                parts.append(_level_part(current, not parts))
                current = None
            verb = "auto-resolve" if step.action == planner.AUTO_RESOLVE else "times out"
            parts.append(f"{verb} at {_num(step.minute)}")
            continue
        if current is None or current[0] != step.level or step.action != planner.REPEAT:
            if current:
                parts.append(_level_part(current, not parts))
            current = (step.level, [])
        current[1].append(_num(step.minute))
    if current:
        parts.append(_level_part(current, not parts))
    return "; ".join(parts) if parts else "notifies nobody"


def _level_part(part: tuple[int, list[str]], first: bool) -> str:
    return f"L{part[0]} at {', '.join(part[1])}" + (" min" if first else "")


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60, 2)


def _num(value: float) -> str:
    return f"{value:g}"
