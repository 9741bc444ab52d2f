"""Request and response models of the REST API (docs/api.md), so the OpenAPI schema is exact.

Responses are built from the core's ``to_dict()`` forms; timestamps are written exactly as the
core writes them (``datetime.isoformat()``, UTC with ``+00:00``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from airflow_escalation.core import bounds
from airflow_escalation.core.types import (
    BusinessHoursMode,
    DelayBasis,
    DeliveryState,
    EscalationState,
    EscalationTrigger,
    TargetType,
)

# Every bound lives in core/bounds.py (docs/security.md); the names stay importable here.
# They also fit the SQL store's columns, so a longer value is a 422 and never a database error.
MAX_NAME = bounds.MAX_NAME
MAX_RECORD_ID = bounds.MAX_RECORD_ID
MAX_NOTE = bounds.MAX_NOTE


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 (a lone surrogate such as '\\ud800')") from None
    return value


# JSON text may spell a lone surrogate ("\ud800"): such a string can be neither stored in every
# database nor written back out as UTF-8, so it is refused with the other bounds
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_utf8)]
Note = Annotated[str, Field(max_length=MAX_NOTE), AfterValidator(_utf8)]

RESULT_CODES = ("ok", "filtered", "suppressed", "not_found", "conflict", "invalid", "capacity")


def readable(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record's dict made safe to answer with, whatever was stored (core/bounds.scrub):
    a record written before a bound existed, or by another writer, never breaks a listing."""
    for key in ("context", "metadata"):
        record[key] = bounds.scrub(record.get(key) or {})
    history = record.get("history") or []
    if history:
        record["history"] = bounds.scrub(history, bounds.MAX_DEPTH + 2, 16 * bounds.MAX_CONTEXT_BYTES)
        if not isinstance(record["history"], list):
            record["history"] = []
    for key in ("incident_id", "policy_name", "acknowledged_by", "resolved_by"):
        if isinstance(record.get(key), str):
            record[key] = bounds.scrub(record[key])
    return record


def readable_delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    delivery["target"] = bounds.scrub(delivery["target"])
    if delivery.get("last_error"):
        delivery["last_error"] = bounds.scrub(bounds.truncate(delivery["last_error"]))
    return delivery


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------------- objects


class Target(BaseModel):
    type: TargetType
    identifier: str
    name: str = ""
    priority: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    conn_id: Optional[str] = Field(None, description="Airflow connection that delivers to this target")


class Level(BaseModel):
    level: int
    delay_minutes: float
    targets: list[Target]
    repeat_count: int
    repeat_interval_minutes: float
    require_ack: bool
    auto_resolve_minutes: float
    conditions: dict[str, Any]
    metadata: dict[str, Any]


class Policy(BaseModel):
    """``EscalationPolicy.to_dict()``."""

    name: str
    description: str
    levels: list[Level]
    enabled: bool
    triggers: list[EscalationTrigger]
    severity_filter: list[str]
    max_escalations: int
    cooldown_minutes: float
    business_hours_only: bool
    business_hours_start: int
    business_hours_end: int
    business_days: list[int]
    timezone: str
    metadata: dict[str, Any]
    business_hours_mode: BusinessHoursMode
    delay_basis: DelayBasis


class HistoryEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    event: str
    at: datetime
    actor: str
    state: str
    level: int
    details: Optional[dict[str, Any]] = None

    @field_serializer("at")
    def _at(self, value: datetime) -> str:
        return value.isoformat()


class NextStepOut(BaseModel):
    """What the record does next, when, and whom it tells (core/timeline.next_step)."""

    action: str = Field(description="start, repeat, escalate or auto_resolve")
    due_at: datetime
    level: Optional[int] = Field(None, description="the level told; null when nobody is told")
    targets: list[str] = Field(description="display names of that level's targets")
    text: str = Field(description='e.g. "level 2 \u2192 eng-manager, oncall-primary"')

    @field_serializer("due_at")
    def _due(self, value: datetime) -> str:
        return value.isoformat()


class Record(BaseModel):
    """``EscalationRecord.to_dict()`` fields and its ``history``."""

    id: str
    incident_id: str
    policy_name: str
    current_level: int
    state: EscalationState
    created_at: datetime
    updated_at: datetime
    acknowledged_at: Optional[datetime] = None
    acknowledged_by: Optional[str] = None
    resolved_at: Optional[datetime] = None
    resolved_by: Optional[str] = None
    next_escalation_at: Optional[datetime] = None
    next_action: Optional[str] = None
    escalation_count: int
    notification_count: int
    context: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    trigger_type: str
    closed_at: Optional[datetime] = None
    history: list[HistoryEvent] = Field(default_factory=list)
    next_step: Optional[NextStepOut] = Field(
        None, description="the planned next step and whom it tells (null when nothing is planned)"
    )

    @field_serializer("created_at", "updated_at", "acknowledged_at", "resolved_at", "next_escalation_at", "closed_at")
    def _times(self, value: Optional[datetime]) -> Optional[str]:
        return _iso(value)

    @classmethod
    def from_core(cls, record: Any) -> "Record":
        data = readable(record.to_dict())
        data["next_step"] = _next_step(record)
        return cls.model_validate(data)


class Delivery(BaseModel):
    """``Delivery.to_dict()``: one notification of one target (the outbox row)."""

    id: str
    record_id: str
    level: int
    round: int = Field(
        description=(
            "0 = the level's first notification, k = its k-th repeat, -1 = a follow-up telling the "
            "remote incident service (PagerDuty) of the acknowledgement or resolution"
        )
    )
    target: Target
    state: DeliveryState
    attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: Optional[datetime] = None
    sent_at: Optional[datetime] = None
    last_error: Optional[str] = None
    resolved_to: Optional[str] = Field(
        None,
        description="whom a schedule: or user: target reached at its last attempt: 'schedule:oncall-primary → alice'",
    )

    @field_serializer("created_at", "updated_at", "next_attempt_at", "sent_at")
    def _times(self, value: Optional[datetime]) -> Optional[str]:
        return _iso(value)


class TimelineStep(BaseModel):
    """One step of the timeline (core/timeline.steps): the history events it folds, the
    deliveries its notification made."""

    kind: str = Field(
        description="triggered, retriggered, paged, reminder, escalated, skipped, acknowledged, "
        "resolved, cancelled, timed_out, failed, deliveries (unmatched ones), or a raw event name"
    )
    at: datetime
    title: str
    level: int
    actor: str
    state: str = Field(description="the record's state after the step")
    detail: str = ""
    targets: list[str] = Field(default_factory=list, description="target keys the step notified")
    deliveries: list[Delivery] = Field(default_factory=list)
    transitions: list[str] = Field(
        default_factory=list, description="the state changes it made (event: from \u2192 to)"
    )
    events: list[HistoryEvent] = Field(default_factory=list, description="the history events it folds")

    @field_serializer("at")
    def _at(self, value: datetime) -> str:
        return value.isoformat()


class RecordDetail(Record):
    """A record with its deliveries and its timeline (``GET /escalations/{id}``)."""

    deliveries: list[Delivery] = Field(default_factory=list)
    timeline: list[TimelineStep] = Field(
        default_factory=list, description="the history as steps, deliveries nested (docs/ui.md)"
    )

    @classmethod
    def from_core_with(cls, record: Any, deliveries: list[Any]) -> "RecordDetail":
        from airflow_escalation.core.timeline import steps

        data = readable(record.to_dict())
        data["deliveries"] = [readable_delivery(d.to_dict()) for d in deliveries]
        data["timeline"] = [step.to_dict() for step in steps(data.get("history") or [], data["deliveries"])]
        data["next_step"] = _next_step(record)
        return cls.model_validate(data)


#: policies parsed from records' snapshots, by fingerprint (a listing shows a few policies)
_SNAPSHOTS: dict[str, Any] = {}


def _next_step(record: Any) -> Optional[dict[str, Any]]:
    """The record's next step in words, from the policy it was triggered with (its snapshot)."""
    from airflow_escalation.core.models import EscalationPolicy
    from airflow_escalation.core.timeline import next_step

    if not record.next_action or not record.policy_snapshot:
        return None
    key = str(record.metadata.get("policy_fingerprint") or "")
    policy = _SNAPSHOTS.get(key) if key else None
    if policy is None:
        try:
            policy = EscalationPolicy.from_dict(record.policy_snapshot)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # a snapshot written by another version: no sentence, never a failed read
        if key:
            if len(_SNAPSHOTS) >= 256:
                _SNAPSHOTS.clear()
            _SNAPSHOTS[key] = policy
    step = next_step(record, policy)
    if step is None:
        return None
    data = step.to_dict()
    data["targets"] = [bounds.scrub(t) for t in data["targets"]]
    data["text"] = bounds.scrub(data["text"])
    return data


class Result(BaseModel):
    """Outcome of a trigger or an action on an escalation."""

    success: bool
    action: str
    code: str = Field(description="ok, filtered, suppressed, not_found, conflict, invalid or capacity")
    message: str
    error: Optional[str] = None
    record: Optional[Record] = None
    targets_notified: list[Target] = Field(default_factory=list, description="the targets already sent to")
    targets_queued: list[Target] = Field(
        default_factory=list, description="every target the change paged (sent, or in the outbox)"
    )

    @classmethod
    def from_core(cls, result: Any) -> "Result":
        return cls(
            success=result.success,
            action=result.action,
            code=result.code,
            message=result.message,
            error=result.error,
            record=Record.from_core(result.record) if result.record is not None else None,
            targets_notified=[Target.model_validate(t.to_dict()) for t in result.targets_notified],
            targets_queued=[Target.model_validate(t.to_dict()) for t in result.targets_queued],
        )


class ErrorResult(Result):
    """A refused action: the ``Result`` plus FastAPI's usual ``detail`` (the error message)."""

    detail: str


class Detail(BaseModel):
    detail: str


class EscalationList(BaseModel):
    escalations: list[Record]
    total: int
    limit: int
    offset: int


class Stats(BaseModel):
    """``EscalationStats.to_dict()``; rates are fractions in [0, 1]."""

    total_escalations: int
    active_escalations: int
    acknowledged_count: int
    resolved_count: int
    timed_out_count: int
    cancelled_count: int
    failed_count: int
    acknowledgment_rate: float
    resolution_rate: float
    avg_time_to_acknowledge_seconds: float
    avg_time_to_resolve_seconds: float
    escalations_by_level: dict[int, int]
    escalations_by_policy: dict[str, int]
    notifications_sent: int
    notifications_by_target: dict[str, int]
    notifications_failed: int


class PolicyList(BaseModel):
    policies: list[Policy]


class ValidationReport(BaseModel):
    valid: bool
    errors: list[str]
    policies: list[str] = Field(description="names of the policies the input defines")
    warnings: list[str] = Field(
        default_factory=list, description="allowed but flagged, e.g. a failure route matching every DAG"
    )


class Health(BaseModel):
    status: str = Field(description="ok; degraded (running, see errors); disabled; unavailable")
    engine_id: Optional[str] = None
    store: Optional[str] = None
    running: bool
    errors: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------- requests


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerRequest(_Body):
    incident_id: Name
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="free-form; `severity` is matched by severity filters, `dag_id` scopes "
        f"authorization and the dag_id filter of the listing. At most "
        f"{bounds.MAX_CONTEXT_BYTES} bytes as JSON, nested at most {bounds.MAX_DEPTH} "
        "levels, text valid UTF-8",
    )
    policy_name: Optional[Name] = None
    trigger_type: EscalationTrigger = EscalationTrigger.UNACKNOWLEDGED
    policy: Optional[dict[str, Any]] = Field(
        None,
        description="an inline policy definition (EscalationPolicy.to_dict() form), "
        f"snapshotted on the record; at most {bounds.MAX_POLICY_BYTES} bytes as JSON",
    )

    @field_validator("context")
    @classmethod
    def _bounded_context(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounds.check_mapping(value, "context")

    @field_validator("policy")
    @classmethod
    def _bounded_policy(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None:
            bounds.check_policy_json(value, "policy")
        return value


class NoteRequest(_Body):
    note: Optional[Note] = None


class CancelRequest(_Body):
    reason: Optional[Note] = None


class EscalateRequest(_Body):
    force: bool = False


class ValidateRequest(_Body):
    policy: Optional[dict[str, Any]] = None
    yaml: Optional[str] = Field(
        None,
        max_length=bounds.MAX_YAML_BYTES,
        description=f"at most {bounds.MAX_YAML_BYTES} bytes; aliases (*name) are refused",
    )

    @field_validator("policy")
    @classmethod
    def _bounded_policy(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None:
            bounds.check_document_json(value, "policy")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> "ValidateRequest":
        if (self.policy is None) == (self.yaml is None):
            raise ValueError("give exactly one of 'policy' (a mapping) or 'yaml' (YAML text)")
        return self
