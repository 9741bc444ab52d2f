"""Domain model of the spec: targets, levels, policies, records, results and stats.

Policies are validated on construction and raise ``ValueError`` naming the field and the value.
Records are plain data; the engine decides every change to them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import pendulum

from airflow_escalation.core import bounds
from airflow_escalation.core.severity import normalize_severity
from airflow_escalation.core.timeutil import UTC, from_iso, minutes, to_iso
from airflow_escalation.core.types import (
    ACTIVE_STATE_VALUES,
    BusinessHoursMode,
    DelayBasis,
    DeliveryState,
    EscalationState,
    EscalationTrigger,
    OPEN_STATE_VALUES,
    TargetType,
)


def _short(value: Any) -> str:
    """``repr(value)`` cut short: error messages quote what was given, never all of it."""
    return bounds.truncate(repr(value), 80)


def _enum(enum_cls: type[Enum], value: Any, field_name: str) -> Any:
    try:
        return enum_cls(value.value if isinstance(value, enum_cls) else value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValueError(f"{field_name}: unknown value {_short(value)} (allowed: {allowed})") from None


# Delays beyond a year are a typo, and would overflow datetime arithmetic long before they mattered.
MAX_MINUTES = 366 * 24 * 60


def _number(
    value: Any, field_name: str, *, minimum: float = 0, integer: bool = False, maximum: float = math.inf
) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field_name}: expected a number, got {_short(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{field_name}: must be a finite number, got {_short(value)}")
    if value > maximum:
        raise ValueError(f"{field_name}: must be <= {maximum}, got {_short(value)}")
    if integer and int(value) != value:
        raise ValueError(f"{field_name}: expected a whole number, got {_short(value)}")
    if value < minimum:
        raise ValueError(f"{field_name}: must be >= {minimum}, got {_short(value)}")
    return int(value) if integer else value


def _known_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(map(str, set(data) - allowed))
    if unknown:
        raise ValueError(bounds.truncate(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}", 300))


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class EscalationTarget:
    """Someone (or somewhere) to notify. Frozen and hashable (as truthound's): targets go in sets
    and dict keys; ``metadata`` is left out of the hash.

    ``conn_id`` names an Airflow connection that delivers to this target (Slack, SMTP, HTTP,
    PagerDuty); without one the engine's notification handler delivers it.
    """

    type: TargetType
    identifier: str
    name: str = ""
    priority: int = 0
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    conn_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _enum(TargetType, self.type, "target.type"))
        if not isinstance(self.identifier, str) or not self.identifier:
            raise ValueError(f"target.identifier: must be a non-empty string, got {_short(self.identifier)}")
        bounds.check_text(self.identifier, "target.identifier", bounds.MAX_IDENTIFIER)
        bounds.check_text(self.name, "target.name")
        if self.conn_id is not None:
            bounds.check_text(self.conn_id, "target.conn_id", allow_empty=False)
        bounds.check_mapping(self.metadata, "target.metadata")
        priority = _number(self.priority, "target.priority", minimum=-(10**9), maximum=10**9, integer=True)
        object.__setattr__(self, "priority", priority)

    @property
    def key(self) -> str:
        """Stable identity of the target, used to count notifications per target."""
        return f"{self.type.value}:{self.identifier}"

    @property
    def display_name(self) -> str:
        return self.name or self.identifier

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type.value,
            "identifier": self.identifier,
            "name": self.name,
            "priority": self.priority,
            "metadata": dict(self.metadata),
        }
        if self.conn_id:
            data["conn_id"] = self.conn_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str | EscalationTarget) -> EscalationTarget:
        if isinstance(data, str):  # "lead" shorthand: a user
            return cls(TargetType.USER, data)
        if isinstance(data, EscalationTarget):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"target: expected a mapping, got {_short(data)}")
        _known_keys(data, {"type", "identifier", "name", "priority", "metadata", "conn_id"}, "target")
        if "identifier" not in data:
            raise ValueError(f"target.identifier: missing in a target with fields {sorted(map(str, data))}")
        return cls(
            type=data.get("type", TargetType.USER),
            identifier=data["identifier"],
            name=data.get("name", "") or "",
            priority=data.get("priority", 0),
            metadata=data.get("metadata") or {},
            conn_id=data.get("conn_id"),
        )

    @classmethod
    def user(cls, identifier: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.USER, identifier, name, **kwargs)

    @classmethod
    def team(cls, identifier: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.TEAM, identifier, name, **kwargs)

    @classmethod
    def channel(cls, identifier: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.CHANNEL, identifier, name, **kwargs)

    @classmethod
    def schedule(cls, identifier: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.SCHEDULE, identifier, name, **kwargs)

    @classmethod
    def webhook(cls, url: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.WEBHOOK, url, name, **kwargs)

    @classmethod
    def email(cls, address: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.EMAIL, address, name, **kwargs)

    @classmethod
    def phone(cls, number: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.PHONE, number, name, **kwargs)

    @classmethod
    def custom(cls, identifier: str, name: str = "", **kwargs: Any) -> EscalationTarget:
        return cls(TargetType.CUSTOM, identifier, name, **kwargs)


# --------------------------------------------------------------------------- levels

_MINUTES: dict[float, timedelta] = {}


def _minutes_cached(value: float) -> timedelta:
    delta = _MINUTES.get(value)
    if delta is None:
        delta = _MINUTES[value] = minutes(value)
    return delta


_LEVEL_FIELDS = {
    "level",
    "delay_minutes",
    "targets",
    "repeat_count",
    "repeat_interval_minutes",
    "require_ack",
    "auto_resolve_minutes",
    "conditions",
    "metadata",
}


@dataclass
class EscalationLevel:
    """One rung of the ladder: who is told, after how long, and how often they are reminded.

    ``delay_minutes`` and ``repeat_interval_minutes`` accept fractions of a minute.
    ``require_ack=False`` makes the level notify-only: once it has fired (and sent its repeats)
    the escalation closes itself as resolved instead of waiting for an acknowledgement.
    ``auto_resolve_minutes`` resolves the record that long after this level fired.
    """

    level: int
    delay_minutes: float = 0
    targets: list[EscalationTarget] = field(default_factory=list)
    repeat_count: int = 0
    repeat_interval_minutes: float = 5
    require_ack: bool = True
    auto_resolve_minutes: float = 0
    conditions: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"levels[level={_short(self.level)}]"
        self.level = _number(self.level, f"{where}.level", minimum=1, maximum=10**9, integer=True)
        self.delay_minutes = _number(self.delay_minutes, f"{where}.delay_minutes", maximum=MAX_MINUTES)
        self.repeat_count = _number(
            self.repeat_count, f"{where}.repeat_count", integer=True, maximum=bounds.MAX_REPEAT_COUNT
        )
        self.repeat_interval_minutes = _number(
            self.repeat_interval_minutes, f"{where}.repeat_interval_minutes", maximum=MAX_MINUTES
        )
        if self.repeat_count and self.repeat_interval_minutes <= 0:
            raise ValueError(
                f"{where}.repeat_interval_minutes: must be > 0 when repeat_count is set, "
                f"got {_short(self.repeat_interval_minutes)}"
            )
        self.auto_resolve_minutes = _number(
            self.auto_resolve_minutes, f"{where}.auto_resolve_minutes", maximum=MAX_MINUTES
        )
        if not isinstance(self.require_ack, bool):
            raise ValueError(f"{where}.require_ack: expected true or false, got {_short(self.require_ack)}")
        if not isinstance(self.conditions, dict):
            raise ValueError(f"{where}.conditions: expected a mapping, got {_short(self.conditions)}")
        bounds.check_json(self.conditions, f"{where}.conditions")
        bounds.check_mapping(self.metadata, f"{where}.metadata")
        if not isinstance(self.targets or [], (list, tuple)):
            raise ValueError(f"{where}.targets: expected a list, got {_short(self.targets)}")
        if len(self.targets or []) > bounds.MAX_TARGETS:
            raise ValueError(f"{where}.targets: at most {bounds.MAX_TARGETS} targets, got {len(self.targets)}")
        self.targets = [EscalationTarget.from_dict(t) for t in (self.targets or [])]

    # computed on every planning step: cache them, keyed by the minutes they came from
    @property
    def delay(self) -> timedelta:
        return _minutes_cached(self.delay_minutes)

    @property
    def repeat_interval(self) -> timedelta:
        return _minutes_cached(self.repeat_interval_minutes)

    @property
    def auto_resolve_timeout(self) -> timedelta | None:
        return _minutes_cached(self.auto_resolve_minutes) if self.auto_resolve_minutes > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "delay_minutes": self.delay_minutes,
            "targets": [t.to_dict() for t in self.targets],
            "repeat_count": self.repeat_count,
            "repeat_interval_minutes": self.repeat_interval_minutes,
            "require_ack": self.require_ack,
            "auto_resolve_minutes": self.auto_resolve_minutes,
            "conditions": dict(self.conditions),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | EscalationLevel) -> EscalationLevel:
        if isinstance(data, EscalationLevel):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"levels: each level must be a mapping, got {_short(data)}")
        _known_keys(data, _LEVEL_FIELDS, f"levels[level={_short(data.get('level'))}]")
        if "level" not in data:
            raise ValueError(f"levels.level: missing in {_short(data)}")
        return cls(**{k: v for k, v in data.items() if v is not None or k == "targets"})


# --------------------------------------------------------------------------- policies

_POLICY_FIELDS = {
    "name",
    "description",
    "levels",
    "enabled",
    "triggers",
    "severity_filter",
    "max_escalations",
    "cooldown_minutes",
    "business_hours_only",
    "business_hours_start",
    "business_hours_end",
    "business_days",
    "timezone",
    "metadata",
    "business_hours_mode",
    "delay_basis",
    "timeout_minutes",
}


@dataclass
class EscalationPolicy:
    """A complete escalation policy.

    Beyond the spec's fields: ``business_hours_mode`` (wait | skip | notify) says what happens to
    a notification due outside business hours, and ``delay_basis`` (previous_level | trigger) what
    a level's ``delay_minutes`` counts from. An empty ``severity_filter`` matches every severity.
    """

    name: str
    description: str = ""
    levels: list[EscalationLevel] = field(default_factory=list)
    enabled: bool = True
    triggers: list[EscalationTrigger] = field(default_factory=lambda: [EscalationTrigger.UNACKNOWLEDGED])
    severity_filter: list[str] = field(default_factory=list)
    max_escalations: int = 0
    cooldown_minutes: float = 0
    business_hours_only: bool = False
    business_hours_start: int = 9
    business_hours_end: int = 18
    business_days: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    timezone: str = "UTC"
    metadata: dict[str, Any] = field(default_factory=dict)
    business_hours_mode: BusinessHoursMode = BusinessHoursMode.WAIT
    delay_basis: DelayBasis = DelayBasis.PREVIOUS_LEVEL
    timeout_minutes: float = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"policy.name: must be a non-empty string, got {_short(self.name)}")
        bounds.check_text(self.name, "policy.name")
        where = f"policy {_short(self.name)}"
        bounds.check_text(self.description, f"{where}: description", bounds.MAX_NOTE)
        if not isinstance(self.levels, (list, tuple)):
            raise ValueError(f"{where}: levels: expected a list, got {_short(self.levels)}")
        if len(self.levels) > bounds.MAX_LEVELS:
            raise ValueError(f"{where}: levels: at most {bounds.MAX_LEVELS} levels, got {len(self.levels)}")
        if not self.levels:
            raise ValueError(f"{where}: levels: at least one level is required, got {_short(self.levels)}")
        levels = [EscalationLevel.from_dict(lv) for lv in self.levels]
        numbers = [lv.level for lv in levels]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            raise ValueError(f"{where}: levels: duplicate level number(s) {duplicates}")
        expected = list(range(1, len(levels) + 1))
        if sorted(numbers) != expected:
            missing = sorted(set(expected) - set(numbers))
            raise ValueError(
                f"{where}: levels: level numbers must run 1..{len(levels)} without gaps, "
                f"got {sorted(numbers)} (missing {missing})"
            )
        self.levels = sorted(levels, key=lambda lv: lv.level)
        self._by_number = {lv.level: lv for lv in self.levels}
        if not isinstance(self.triggers or [], (list, tuple, set)):
            raise ValueError(f"{where}: triggers: expected a list, got {_short(self.triggers)}")
        self.triggers = [_enum(EscalationTrigger, t, f"{where}: triggers") for t in self.triggers or []]
        if not isinstance(self.severity_filter, (list, tuple, set)):
            raise ValueError(f"{where}: severity_filter: expected a list, got {_short(self.severity_filter)}")
        self.severity_filter = [str(normalize_severity(s)) for s in self.severity_filter]
        self.max_escalations = _number(self.max_escalations, f"{where}: max_escalations", integer=True, maximum=10**9)
        self.cooldown_minutes = _number(self.cooldown_minutes, f"{where}: cooldown_minutes", maximum=MAX_MINUTES)
        self.timeout_minutes = _number(self.timeout_minutes, f"{where}: timeout_minutes", maximum=MAX_MINUTES)
        for flag in ("enabled", "business_hours_only"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{where}: {flag}: expected true or false, got {_short(getattr(self, flag))}")
        for hour_field in ("business_hours_start", "business_hours_end"):
            value = getattr(self, hour_field)
            _number(value, f"{where}: {hour_field}", integer=True)
            if not 0 <= value <= 24:
                raise ValueError(f"{where}: {hour_field}: must be within 0..24, got {_short(value)}")
        if self.business_hours_start >= self.business_hours_end:
            raise ValueError(
                f"{where}: business_hours_start ({_short(self.business_hours_start)}) must be before "
                f"business_hours_end ({_short(self.business_hours_end)})"
            )
        if not isinstance(self.business_days, (list, tuple, set)):
            raise ValueError(f"{where}: business_days: expected a list, got {_short(self.business_days)}")
        if not self.business_days:
            raise ValueError(f"{where}: business_days: at least one weekday is required")
        for day in self.business_days:
            if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
                raise ValueError(f"{where}: business_days: weekday must be 0 (Monday)..6, got {_short(day)}")
        self.business_days = sorted(set(self.business_days))
        try:
            self._zone: pendulum.Timezone | pendulum.FixedTimezone = pendulum.timezone(self.timezone)
        except (ValueError, TypeError, KeyError):  # pendulum's InvalidTimezone is a ValueError
            raise ValueError(f"{where}: timezone: unknown IANA timezone {_short(self.timezone)}") from None
        self.business_hours_mode = _enum(BusinessHoursMode, self.business_hours_mode, f"{where}: business_hours_mode")
        self.delay_basis = _enum(DelayBasis, self.delay_basis, f"{where}: delay_basis")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"{where}: metadata: expected a mapping, got {_short(self.metadata)}")
        self._fingerprint: str | None = None
        self._snapshot: dict[str, Any] | None = None
        # the whole definition: every text UTF-8, nesting and size bounded (metadata, conditions)
        bounds.check_policy_json(self.snapshot, where)

    # -- spec properties
    @property
    def cooldown(self) -> timedelta:
        return minutes(self.cooldown_minutes)

    @property
    def timeout(self) -> timedelta:
        """How long after the top level fired an unanswered record ends TIMED_OUT (0: never)."""
        return minutes(self.timeout_minutes)

    @property
    def max_level(self) -> int:
        return self.levels[-1].level

    @property
    def zone(self) -> pendulum.Timezone | pendulum.FixedTimezone:
        return self._zone

    def get_level(self, level_num: int) -> EscalationLevel | None:
        return self._by_number.get(level_num)

    def get_next_level(self, current_level: int) -> EscalationLevel | None:
        return self._by_number.get(current_level + 1)

    def matches_severity(self, severity: Any) -> bool:
        if not self.severity_filter:
            return True
        return severity is not None and normalize_severity(severity) in self.severity_filter

    @property
    def continues_after_ack(self) -> bool:
        """With the UNRESOLVED trigger, acknowledging does not stop the climb; resolving does."""
        return EscalationTrigger.UNRESOLVED in self.triggers

    @property
    def fingerprint(self) -> str:
        """Content hash of the policy; records snapshot the policy under this key."""
        if self._fingerprint is None:
            canonical = json.dumps(self.snapshot, sort_keys=True, default=str)
            self._fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return self._fingerprint

    @property
    def snapshot(self) -> dict[str, Any]:
        """``to_dict()`` computed once and shared by every record triggered with this policy
        (treat it as read-only)."""
        if self._snapshot is None:
            self._snapshot = self.to_dict()
        return self._snapshot

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "levels": [lv.to_dict() for lv in self.levels],
            "enabled": self.enabled,
            "triggers": [t.value for t in self.triggers],
            "severity_filter": list(self.severity_filter),
            "max_escalations": self.max_escalations,
            "cooldown_minutes": self.cooldown_minutes,
            "business_hours_only": self.business_hours_only,
            "business_hours_start": self.business_hours_start,
            "business_hours_end": self.business_hours_end,
            "business_days": list(self.business_days),
            "timezone": self.timezone,
            "metadata": dict(self.metadata),
            "business_hours_mode": self.business_hours_mode.value,
            "delay_basis": self.delay_basis.value,
            # only when set: policies without it keep their fingerprint (and records their snapshot)
            **({"timeout_minutes": self.timeout_minutes} if self.timeout_minutes else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | EscalationPolicy) -> EscalationPolicy:
        if isinstance(data, EscalationPolicy):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"policy: expected a mapping, got {_short(data)}")
        _known_keys(data, _POLICY_FIELDS, f"policy {_short(data.get('name'))}")
        if data.get("name") is None:
            raise ValueError(
                bounds.truncate(f"policy.name: missing in policy with fields {sorted(map(str, data))}", 300)
            )
        kwargs = {k: v for k, v in data.items() if v is not None}
        kwargs["levels"] = [EscalationLevel.from_dict(lv) for lv in data.get("levels") or []]
        return cls(**kwargs)


# --------------------------------------------------------------------------- records

_last_iso: tuple[datetime | None, str] = (None, "")


#: longest DAG id a record belongs to (Airflow's own limit is 250; the SQL column holds a name)
MAX_DAG_ID = bounds.MAX_NAME


def dag_id_of(context: Any) -> str | None:
    """The DAG a record with this ``context`` belongs to: ``context["dag_id"]`` when it is a
    non-empty string of at most :data:`MAX_DAG_ID` characters, else None (a record of no DAG).

    The one rule for "which DAG": the engine's one-open-record key, the stores' DAG filters and
    the service's authorization all ask it.
    """
    dag_id = context.get("dag_id") if isinstance(context, dict) else None
    return dag_id if isinstance(dag_id, str) and 0 < len(dag_id) <= MAX_DAG_ID else None


def _iso(at: datetime) -> str:
    """``at.isoformat()``, remembering the last one: one step writes several events at one time."""
    global _last_iso
    if _last_iso[0] is not at:
        _last_iso = (at, at.isoformat())
    return _last_iso[1]


#: metadata key of a record suppressed at its trigger (EscalationRecord.suppressed_by)
SUPPRESSED_BY = "suppressed_by"


@dataclass
class EscalationRecord:
    """One escalation of one incident under one policy, and its progress.

    Beyond the spec's fields the record carries what makes it durable: ``version`` for
    compare-and-swap, ``policy_snapshot`` (the policy as it was when triggered), and the schedule
    state (``level_fired_at``, ``repeats_sent``, ``next_action``) the engine resumes from.
    """

    id: str
    incident_id: str
    policy_name: str
    current_level: int = 1
    state: EscalationState = EscalationState.PENDING  # a str Enum: compares equal to its value
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    next_escalation_at: datetime | None = None
    escalation_count: int = 0
    notification_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # durable schedule state
    version: int = 0
    trigger_type: str = EscalationTrigger.UNACKNOWLEDGED.value
    policy_snapshot: dict[str, Any] = field(default_factory=dict)
    level_fired_at: datetime | None = None
    repeats_sent: int = 0
    next_action: str | None = None
    notify_rounds: int = 0
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        self.state = EscalationState(self.state)

    @staticmethod
    def generate_id() -> str:
        return os.urandom(16).hex()  # 128 random bits, like uuid4, at a third of the cost

    @classmethod
    def create(
        cls,
        incident_id: str,
        policy_name: str,
        context: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> EscalationRecord:
        return cls(
            id=cls.generate_id(), incident_id=incident_id, policy_name=policy_name, context=context or {}, **kwargs
        )

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATE_VALUES

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATE_VALUES

    @property
    def is_acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def is_resolved(self) -> bool:
        return self.state == EscalationState.RESOLVED.value

    @property
    def duration(self) -> timedelta:
        """From trigger to close; an open record's runs on to now (the system clock: with a
        fake clock ask :meth:`duration_at`)."""
        return self.duration_at(datetime.now(UTC))

    def duration_at(self, now: datetime) -> timedelta:
        """From trigger to close, or to ``now`` while the record is open."""
        return (self.closed_at or now) - self.created_at

    @property
    def suppressed_by(self) -> dict[str, Any] | None:
        """The silence or maintenance window this record was suppressed by at its trigger (it was
        recorded, closed and paged nobody: docs/oncall.md), else None."""
        found = self.metadata.get(SUPPRESSED_BY)
        return found if isinstance(found, dict) else None

    @property
    def dag_id(self) -> str | None:
        """The DAG this record belongs to (:func:`dag_id_of` its context), None for no DAG."""
        return dag_id_of(self.context)

    @property
    def severity(self) -> str | None:
        return normalize_severity(self.context.get("severity"))

    def clone(self) -> EscalationRecord:
        """A copy the caller may change without touching the original (history shared-nothing)."""
        twin = object.__new__(EscalationRecord)
        twin.__dict__.update(self.__dict__)
        twin.history = list(self.history)
        twin.metadata = dict(self.metadata)
        return twin

    def add_history_event(
        self, event: str, at: datetime, actor: str = "system", *, from_state: str | None = None, **details: Any
    ) -> dict[str, Any]:
        """Append ``{event, at, actor, state, level[, from_state][, details]}`` to the history."""
        entry = {
            "event": event,
            "at": _iso(at),
            "actor": actor,
            "state": getattr(self.state, "value", self.state),
            "level": self.current_level,
        }
        if from_state is not None:  # transitions; kept flat: one dict per event keeps memory lean
            entry["from_state"] = from_state
        if details:
            entry["details"] = details
        self.history.append(entry)
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "policy_name": self.policy_name,
            "current_level": self.current_level,
            "state": getattr(self.state, "value", self.state),  # a str assigned by hand stays as it is
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "acknowledged_at": to_iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": to_iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "next_escalation_at": to_iso(self.next_escalation_at),
            "escalation_count": self.escalation_count,
            "notification_count": self.notification_count,
            "history": list(self.history),
            "context": self.context,
            "metadata": self.metadata,
            "version": self.version,
            "trigger_type": self.trigger_type,
            "policy_snapshot": self.policy_snapshot,
            "level_fired_at": to_iso(self.level_fired_at),
            "repeats_sent": self.repeats_sent,
            "next_action": self.next_action,
            "notify_rounds": self.notify_rounds,
            "closed_at": to_iso(self.closed_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EscalationRecord:
        values = dict(data)
        for key in _RECORD_TIME_FIELDS:
            if key in values:
                values[key] = from_iso(values[key])
        return cls(**{k: v for k, v in values.items() if k in _RECORD_FIELDS})

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EscalationRecord) and other.id == self.id and other.version == self.version


_RECORD_FIELDS = set(EscalationRecord.__dataclass_fields__)
_RECORD_TIME_FIELDS = (
    "created_at",
    "updated_at",
    "acknowledged_at",
    "resolved_at",
    "next_escalation_at",
    "level_fired_at",
    "closed_at",
)


# --------------------------------------------------------------------------- outbox


@dataclass
class Delivery:
    """One notification of one target, written with the transition that caused it."""

    id: str
    record_id: str
    level: int
    round: int  # 0 = the level's first notification, k = its k-th repeat
    target: EscalationTarget
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state not in (DeliveryState.PENDING, DeliveryState.SENDING)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "record_id": self.record_id,
            "level": self.level,
            "round": self.round,
            "target": self.target.to_dict(),
            "state": self.state.value,
            "attempts": self.attempts,
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "next_attempt_at": to_iso(self.next_attempt_at),
            "sent_at": to_iso(self.sent_at),
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(
            id=data["id"],
            record_id=data["record_id"],
            level=int(data["level"]),
            round=int(data["round"]),
            target=EscalationTarget.from_dict(data["target"]),
            state=DeliveryState(data.get("state", "pending")),
            attempts=int(data.get("attempts", 0)),
            created_at=from_iso(data.get("created_at")) or datetime.now(UTC),
            updated_at=from_iso(data.get("updated_at")) or datetime.now(UTC),
            next_attempt_at=from_iso(data.get("next_attempt_at")),
            sent_at=from_iso(data.get("sent_at")),
            last_error=data.get("last_error"),
        )


# --------------------------------------------------------------------------- results and stats


@dataclass
class EscalationResult:
    """Outcome of an engine call. Engine calls never raise for bad ids or illegal transitions."""

    success: bool
    record: EscalationRecord | None = None
    action: str = ""
    level: int = 0
    targets_notified: list[EscalationTarget] = field(default_factory=list)
    message: str = ""
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # every target the change paged (written to the outbox); ``targets_notified`` are those of
    # them already sent when the call returned
    targets_queued: list[EscalationTarget] = field(default_factory=list)

    @classmethod
    def success_result(
        cls,
        record: EscalationRecord,
        action: str,
        targets: list[EscalationTarget] | None = None,
        message: str = "",
        queued: list[EscalationTarget] | None = None,
    ) -> EscalationResult:
        return cls(
            True,
            record,
            action,
            record.current_level,
            targets or [],
            message or f"{action} succeeded",
            targets_queued=queued if queued is not None else list(targets or []),
        )

    @classmethod
    def failure_result(
        cls, record: EscalationRecord | None, action: str, error: str, *, code: str = "invalid"
    ) -> EscalationResult:
        return cls(
            False,
            record,
            action,
            record.current_level if record else 0,
            [],
            f"{action} failed: {error}",
            error,
            {"code": code},
        )

    @property
    def code(self) -> str:
        """``ok``, or why it failed: ``not_found``, ``conflict``, ``filtered``, ``suppressed``..."""
        return "ok" if self.success else self.metadata.get("code", "invalid")

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "record": self.record.to_dict() if self.record else None,
            "action": self.action,
            "level": self.level,
            "targets_notified": [t.to_dict() for t in self.targets_notified],
            "targets_queued": [t.to_dict() for t in self.targets_queued],
            "message": self.message,
            "error": self.error,
            "metadata": self.metadata,
        }


@dataclass
class EscalationStats:
    """Counts and rates over the records in a store. Rates are fractions in [0, 1]."""

    total_escalations: int = 0
    active_escalations: int = 0
    acknowledged_count: int = 0
    resolved_count: int = 0
    timed_out_count: int = 0
    cancelled_count: int = 0
    failed_count: int = 0
    avg_time_to_acknowledge_seconds: float = 0.0
    avg_time_to_resolve_seconds: float = 0.0
    escalations_by_level: dict[int, int] = field(default_factory=dict)
    escalations_by_policy: dict[str, int] = field(default_factory=dict)
    notifications_sent: int = 0
    notifications_by_target: dict[str, int] = field(default_factory=dict)
    notifications_failed: int = 0

    @property
    def acknowledgment_rate(self) -> float:
        return self.acknowledged_count / self.total_escalations if self.total_escalations else 0.0

    @property
    def resolution_rate(self) -> float:
        return self.resolved_count / self.total_escalations if self.total_escalations else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_escalations": self.total_escalations,
            "active_escalations": self.active_escalations,
            "acknowledged_count": self.acknowledged_count,
            "resolved_count": self.resolved_count,
            "timed_out_count": self.timed_out_count,
            "cancelled_count": self.cancelled_count,
            "failed_count": self.failed_count,
            "acknowledgment_rate": self.acknowledgment_rate,
            "resolution_rate": self.resolution_rate,
            "avg_time_to_acknowledge_seconds": self.avg_time_to_acknowledge_seconds,
            "avg_time_to_resolve_seconds": self.avg_time_to_resolve_seconds,
            "escalations_by_level": dict(self.escalations_by_level),
            "escalations_by_policy": dict(self.escalations_by_policy),
            "notifications_sent": self.notifications_sent,
            "notifications_by_target": dict(self.notifications_by_target),
            "notifications_failed": self.notifications_failed,
        }


class StatsAccumulator:
    """Builds ``EscalationStats`` from records and delivery counts; every store uses it."""

    def __init__(self) -> None:
        self.stats = EscalationStats()
        self._ack_total = 0.0
        self._ack_n = 0
        self._resolve_total = 0.0
        self._resolve_n = 0

    def add_record(self, record: EscalationRecord) -> None:
        s = self.stats
        s.total_escalations += 1
        state = record.state
        if state in ACTIVE_STATE_VALUES:
            s.active_escalations += 1
        elif state == EscalationState.TIMED_OUT.value:
            s.timed_out_count += 1
        elif state == EscalationState.CANCELLED.value:
            s.cancelled_count += 1
        elif state == EscalationState.FAILED.value:
            s.failed_count += 1
        elif state == EscalationState.ACKNOWLEDGED:
            # by state, like the other counts: they partition the total (an acknowledged record
            # later resolved counts as resolved)
            s.acknowledged_count += 1
        if record.acknowledged_at is not None:
            self._ack_total += (record.acknowledged_at - record.created_at).total_seconds()
            self._ack_n += 1
        if state == EscalationState.RESOLVED.value:
            s.resolved_count += 1
            if record.resolved_at is not None:
                self._resolve_total += (record.resolved_at - record.created_at).total_seconds()
                self._resolve_n += 1
        s.escalations_by_level[record.current_level] = s.escalations_by_level.get(record.current_level, 0) + 1
        s.escalations_by_policy[record.policy_name] = s.escalations_by_policy.get(record.policy_name, 0) + 1

    def add_delivery(self, target_key: str, state: DeliveryState | str, count: int = 1) -> None:
        state = DeliveryState(state)
        if state == DeliveryState.SENT:
            self.stats.notifications_sent += count
            by_target = self.stats.notifications_by_target
            by_target[target_key] = by_target.get(target_key, 0) + count
        elif state == DeliveryState.FAILED:
            self.stats.notifications_failed += count

    def result(self) -> EscalationStats:
        s = self.stats
        s.avg_time_to_acknowledge_seconds = self._ack_total / self._ack_n if self._ack_n else 0.0
        s.avg_time_to_resolve_seconds = self._resolve_total / self._resolve_n if self._resolve_n else 0.0
        return s
