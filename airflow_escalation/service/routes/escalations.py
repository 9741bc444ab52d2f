"""``/escalations``: trigger, list, read, and act on escalation records (docs/api.md)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status
from fastapi.responses import JSONResponse

from airflow_escalation.core import bounds
from airflow_escalation.core.models import EscalationResult
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, STATE_VALUES, EscalationState
from airflow_escalation.runtime.builder import trigger_with_gates
from airflow_escalation.runtime.engine import EscalationEngine
from airflow_escalation.service.auth import DagScope, actor_name, inline_policy, read_scope, require_read, require_write
from airflow_escalation.service.deps import get_engine, get_service, run_store
from airflow_escalation.service.schemas import (
    MAX_NAME,
    MAX_RECORD_ID,
    CancelRequest,
    Detail,
    ErrorResult,
    EscalateRequest,
    EscalationList,
    NoteRequest,
    Record,
    RecordDetail,
    Result,
    TriggerRequest,
)

router = APIRouter(prefix="/escalations", tags=["escalations"], dependencies=[Depends(require_read)])

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "not authenticated"},
    403: {"model": Detail, "description": "invalid token, or not allowed"},
    503: {"model": Detail, "description": "the escalation service is not running"},
}
_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_AUTH_RESPONSES,
    404: {"model": ErrorResult, "description": "no such escalation, or one of a Dag the caller may not read"},
    409: {"model": ErrorResult, "description": "illegal transition (e.g. already resolved)"},
}

# result code -> HTTP status when the engine refused
_FAILURE_STATUS = {"not_found": 404, "conflict": 409, "invalid": 422}
# refusals by a policy gate are answers, not errors (docs/api.md)
_GATE_CODES = {"filtered", "suppressed", "capacity"}

RecordId = Path(..., description="the escalation record's id")

# ids per GET /escalations?ids=...: 32-hex ids, so 200 fit a URL of about 6.6 KB (proxies' usual
# 8 KB request-line limit); the shared trigger poller sends at most this many per request
MAX_IDS = 200


def _answer(result: EscalationResult, success_status: int = 200) -> Any:
    body = Result.from_core(result)
    # engine messages may quote what the caller sent: answer with a bounded excerpt
    body.message = bounds.truncate(body.message)
    body.error = bounds.truncate(body.error) if body.error is not None else None
    if result.success:
        return JSONResponse(body.model_dump(mode="json"), status_code=success_status)
    if result.code in _GATE_CODES:
        return JSONResponse(body.model_dump(mode="json"), status_code=200)
    code = _FAILURE_STATUS.get(result.code, 409)
    content = ErrorResult(**body.model_dump(), detail=body.error or body.message).model_dump(mode="json")
    return JSONResponse(content, status_code=code)


def _not_found(record_id: str, action: str) -> EscalationResult:
    return EscalationResult.failure_result(None, action, f"escalation {record_id!r} not found", code="not_found")


def _invalid(action: str, message: str) -> EscalationResult:
    return EscalationResult.failure_result(None, action, message, code="invalid")


# ---------------------------------------------------------------------------------- trigger


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Result,
    responses={
        **_AUTH_RESPONSES,
        200: {
            "model": Result,
            "description": "joined the incident's open escalation "
            "(action trigger_existing), or refused by a policy gate (success false, code "
            "filtered, suppressed or capacity)",
        },
        404: {"model": ErrorResult, "description": "unknown policy_name (or no policy registered)"},
        409: {"model": ErrorResult, "description": "too many concurrent writers; retry"},
        422: {"description": "invalid body or inline policy"},
    },
    summary="Trigger an escalation (or join the incident's open one)",
)
async def trigger(
    request_body: TriggerRequest,
    request: Request,
    user: Any = Depends(require_write),
    engine: EscalationEngine = Depends(get_engine),
    service: Any = Depends(get_service),
) -> Any:
    inline = None
    if request_body.policy is not None:
        try:
            inline = inline_policy(request, request_body.policy)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            message = str(exc)
            return _answer(_invalid("trigger", message if message.startswith("policy") else f"policy: {message}"))
    try:
        result = await trigger_with_gates(
            engine,
            service.policy_config,
            request_body.incident_id,
            request_body.context,
            request_body.policy_name,
            request_body.trigger_type,
            policy=inline,
            triggered_by=actor_name(user),
        )
    except LookupError as exc:  # e.g. a level condition no evaluator is registered for
        return _answer(_invalid("trigger", str(exc)))
    created = result.success and result.action == "trigger"
    return _answer(result, status.HTTP_201_CREATED if created else status.HTTP_200_OK)


# ---------------------------------------------------------------------------------- reads


@router.get(
    "",
    response_model=EscalationList,
    responses=_AUTH_RESPONSES,
    summary="List escalations, newest first",
)
async def list_escalations(
    state: Optional[list[EscalationState]] = Query(None, description="repeatable"),
    policy: Optional[str] = Query(None, max_length=MAX_NAME, description="policy name"),
    incident: Optional[str] = Query(None, max_length=MAX_NAME, description="incident id"),
    dag_id: Optional[str] = Query(
        None, max_length=MAX_NAME, description="matches context.dag_id (only Dags the caller may read are ever listed)"
    ),
    active: Optional[bool] = Query(None, description="true: pending, active or escalating; false: every other state"),
    ids: Optional[list[str]] = Query(
        None,
        description="record ids, comma-separated and/or repeated "
        f"(at most {MAX_IDS}): only these records, combined with the other "
        "filters; unknown ids are left out",
    ),
    limit: int = Query(50, ge=1, le=bounds.MAX_LIST_LIMIT),
    offset: int = Query(0, ge=0, le=bounds.MAX_LIST_OFFSET),
    engine: EscalationEngine = Depends(get_engine),
    scope: DagScope = Depends(read_scope),
) -> Any:
    states: Optional[set[str]] = {s.value for s in state} if state else None
    if active is not None:
        wanted = set(ACTIVE_STATE_VALUES) if active else set(STATE_VALUES) - set(ACTIVE_STATE_VALUES)
        states = wanted if states is None else states & wanted
    if states is not None and not states:
        return EscalationList(escalations=[], total=0, limit=limit, offset=offset)
    if ids is not None:
        wanted_ids = list(dict.fromkeys(i.strip() for part in ids for i in part.split(",") if i.strip()))
        if len(wanted_ids) > MAX_IDS:
            return JSONResponse(
                {"detail": f"ids: at most {MAX_IDS} ids per request, got {len(wanted_ids)}"}, status_code=422
            )
        records = await run_store(engine, _get_many, engine.store, wanted_ids)
        records = [
            r
            for r in records
            if scope.allows(r.dag_id)
            and (states is None or getattr(r.state, "value", r.state) in states)
            and (policy is None or r.policy_name == policy)
            and (incident is None or r.incident_id == incident)
            and (dag_id is None or r.dag_id == dag_id)
        ]
        records.sort(key=lambda r: r.created_at, reverse=True)
        page = records[offset : offset + limit]
        return EscalationList(
            escalations=[Record.from_core(r) for r in page], total=len(records), limit=limit, offset=offset
        )
    # every shipped store lists records (the store contract suite checks it): no 501 branch
    records, total = await run_store(
        engine,
        engine.store.list_records,
        states=sorted(states) if states is not None else None,
        policy_name=policy,
        incident_id=incident,
        dag_id=dag_id,
        dag_ids=scope.dag_ids,
        limit=limit,
        offset=offset,
    )
    return EscalationList(escalations=[Record.from_core(r) for r in records], total=total, limit=limit, offset=offset)


def _get_many(store: Any, record_ids: list[str]) -> list[Any]:
    """The records among ``record_ids`` (one store call each, in one worker-thread hop)."""
    found = []
    for record_id in record_ids:
        if len(record_id) <= MAX_RECORD_ID and (record := store.get(record_id)) is not None:
            found.append(record)
    return found


@router.get(
    "/{record_id}",
    response_model=RecordDetail,
    responses={
        **_AUTH_RESPONSES,
        404: {"model": Detail, "description": "no such escalation, or one of a Dag the caller may not read"},
    },
    summary="One escalation with its history and deliveries",
)
async def get_escalation(
    record_id: str = RecordId, engine: EscalationEngine = Depends(get_engine), scope: DagScope = Depends(read_scope)
) -> Any:
    record = None
    if len(record_id) <= MAX_RECORD_ID:
        record = await run_store(engine, engine.store.get, record_id)
    if record is None or not scope.allows(record.dag_id):
        return JSONResponse({"detail": f"escalation {record_id!r} not found"}, status_code=404)
    deliveries = await run_store(engine, engine.store.get_deliveries, record_id)
    detail = RecordDetail.from_core_with(record, deliveries)
    if engine.oncall is not None:  # whom schedule:/user: deliveries reached (docs/oncall.md)
        reached = await run_store(engine, engine.oncall.resolutions, record_id)
        labels = {r.get("delivery_id"): r.get("label") for r in reached}
        for delivery in detail.deliveries:
            delivery.resolved_to = labels.get(delivery.id)
    return detail


# ---------------------------------------------------------------------------------- actions


async def _act(record_id: str, action: str, call: Callable[[], Awaitable[EscalationResult]]) -> Any:
    """Run one action route's engine call; an id longer than any stored one is simply not found."""
    if len(record_id) > MAX_RECORD_ID:
        return _answer(_not_found(record_id, action))
    return _answer(await call())


@router.post(
    "/{record_id}/acknowledge",
    response_model=Result,
    responses=_ACTION_RESPONSES,
    summary="Acknowledge: stop the climb (unless the policy escalates until resolved)",
)
async def acknowledge(
    record_id: str = RecordId,
    body: Optional[NoteRequest] = Body(None),
    user: Any = Depends(require_write),
    engine: EscalationEngine = Depends(get_engine),
) -> Any:
    note = body.note if body else None
    return await _act(record_id, "acknowledge", lambda: engine.acknowledge(record_id, actor_name(user), note))


@router.post(
    "/{record_id}/resolve", response_model=Result, responses=_ACTION_RESPONSES, summary="Resolve: close the escalation"
)
async def resolve(
    record_id: str = RecordId,
    body: Optional[NoteRequest] = Body(None),
    user: Any = Depends(require_write),
    engine: EscalationEngine = Depends(get_engine),
) -> Any:
    note = body.note if body else None
    return await _act(record_id, "resolve", lambda: engine.resolve(record_id, actor_name(user), note))


@router.post(
    "/{record_id}/cancel",
    response_model=Result,
    responses=_ACTION_RESPONSES,
    summary="Cancel: close the escalation without resolving it",
)
async def cancel(
    record_id: str = RecordId,
    body: Optional[CancelRequest] = Body(None),
    user: Any = Depends(require_write),
    engine: EscalationEngine = Depends(get_engine),
) -> Any:
    reason = (body.reason if body else None) or ""
    return await _act(record_id, "cancel", lambda: engine.cancel(record_id, actor_name(user), reason))


@router.post(
    "/{record_id}/escalate",
    response_model=Result,
    responses=_ACTION_RESPONSES,
    summary="Escalate now to the next level (force: also when acknowledged or at the top)",
)
async def escalate(
    record_id: str = RecordId,
    body: Optional[EscalateRequest] = Body(None),
    user: Any = Depends(require_write),
    engine: EscalationEngine = Depends(get_engine),
) -> Any:
    force = body.force if body else False
    return await _act(
        record_id, "escalate", lambda: engine.escalate(record_id, force=force, escalated_by=actor_name(user))
    )
