"""``/schedules``, ``/overrides``, ``/silences``, ``/maintenance-windows`` (docs/oncall.md).

Authorization follows the records' model (service/auth.py):

- reading schedules, who is on call and the maintenance windows needs the service (the
  plugins view permission): they are not any one Dag's;
- a silence belongs to the Dag its ``dag_id`` matcher names: listing shows a caller the
  silences of the Dags it may read (one without a ``dag_id`` matcher only with the Dag-wide read
  permission); creating or expiring one needs permission to change that Dag's runs
  (``is_authorized_dag(method="PUT")``), the Dag-wide one for a silence without a ``dag_id``;
- overrides change who is paged for every Dag: they need the Dag-wide write permission.

Bodies are bounded by their schemas (core/bounds.py) and the service's body limit.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from airflow_escalation.core import bounds
from airflow_escalation.oncall.runtime import NotFound, OnCall, OnCallError
from airflow_escalation.oncall.schedule import Schedule
from airflow_escalation.oncall.silence import Silence
from airflow_escalation.service.auth import (
    DagScope,
    actor_name,
    authorize_write,
    check_cookie_write,
    read_scope,
    require_read,
)
from airflow_escalation.service.deps import get_service
from airflow_escalation.service.schemas import Detail, Name, Note

router = APIRouter(tags=["on call"], dependencies=[Depends(require_read)])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "not authenticated"},
    403: {"model": Detail, "description": "invalid token, or not allowed"},
    503: {"model": Detail, "description": "the escalation service is not running"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Detail, "description": "not found"}}


def get_oncall(request: Request) -> OnCall:
    """The engine's OnCall (one is made for an engine built without one)."""
    service = get_service(request)
    engine = service.require_engine()
    if engine.oncall is None:
        config = getattr(service.policy_config, "oncall", None)
        engine.set_oncall(OnCall(config, engine.store, engine.clock))
    return engine.oncall  # type: ignore[no-any-return]


async def _call(oncall: OnCall, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if getattr(oncall.store, "blocking", False):
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def _error(exc: Exception, where: str = "body") -> JSONResponse:
    """404 (``{"detail": "..."}``) for what is not there; else 422 in the shape of every other
    invalid request (``{"detail": [{"type", "loc", "msg"}]}``), ``loc`` naming the field."""
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)
    message = bounds.truncate(str(exc))
    field = message.split(":", 1)[0] if ":" in message and " " not in message.split(":", 1)[0] else None
    loc = [where, *field.split(".")] if field else [where]
    return JSONResponse({"detail": [{"type": "value_error", "loc": loc, "msg": message}]}, status_code=422)


def _utc(at: Optional[datetime], field: str) -> Optional[datetime]:
    if at is not None and at.tzinfo is None:
        raise OnCallError(f"{field}: give a time zone (e.g. 2026-03-01T09:00:00Z)")
    return at


async def _from(
    oncall: OnCall, at: Optional[datetime], field: str, ask: Callable[[datetime], Any]
) -> tuple[datetime, Any] | JSONResponse:
    """``ask`` of the query's time ``field`` (default now) and that time; or the 404/422 answer
    for an unknown schedule, a time without its zone, or one out of range."""
    try:
        moment = _utc(at, field) or oncall.now()
        return moment, await _call(oncall, ask, moment)
    except (NotFound, OnCallError) as exc:
        return _error(exc, "query")
    except (OverflowError, ValueError):  # a time pendulum or datetime arithmetic cannot take
        return _error(OnCallError(f"{field}: out of range"), "query")


# ------------------------------------------------------------------------------- schedules


def _schedule_summary(oncall: OnCall, schedule: Schedule, at: datetime) -> dict[str, Any]:
    now = oncall.on_call(schedule.name, at)
    handoffs = oncall.handoffs(schedule.name, at, at + timedelta(days=14), limit=3)
    return {
        "name": schedule.name,
        "description": schedule.description,
        "time_zone": schedule.time_zone,
        "layers": [layer.name for layer in schedule.layers],
        "fallback": schedule.fallback,
        "on_call": _who(oncall, now.user, now.source, at),
        "next_handoffs": [_shift(oncall, h) for h in handoffs],
    }


def _who(oncall: OnCall, user: Optional[str], source: str, at: datetime) -> dict[str, Any]:
    found = oncall.directory.get(user) if user else None
    return {
        "at": at.isoformat(),
        "user": user,
        "name": found.display_name if found else user,
        "time_zone": found.time_zone if found else None,
        "source": source,
    }


def _shift(oncall: OnCall, shift: Any) -> dict[str, Any]:
    data = shift.to_dict()
    found = oncall.directory.get(shift.user) if shift.user else None
    data["name"] = found.display_name if found else shift.user
    return data


@router.get("/schedules", responses=_AUTH, summary="Schedules, who is on call now and the next handoffs")
async def list_schedules(oncall: OnCall = Depends(get_oncall)) -> Any:
    at = oncall.now()

    def build() -> list[dict[str, Any]]:
        return [_schedule_summary(oncall, s, at) for s in oncall.schedules.values()]

    return {"schedules": await _call(oncall, build), "at": at.isoformat()}


@router.get(
    "/schedules/{name}/oncall",
    responses={**_AUTH, **_NOT_FOUND},
    summary="Who is on call now, or at a given time",
)
async def who_is_on_call(
    name: str = Path(..., max_length=bounds.MAX_NAME),
    at: Optional[datetime] = Query(None, description="an ISO time with its zone; default now"),
    oncall: OnCall = Depends(get_oncall),
) -> Any:
    answer = await _from(oncall, at, "at", lambda moment: oncall.on_call(name, moment))
    if isinstance(answer, JSONResponse):
        return answer
    moment, found = answer
    return {"schedule": name, **_who(oncall, found.user, found.source, moment)}


@router.get(
    "/schedules/{name}/shifts",
    responses={**_AUTH, **_NOT_FOUND},
    summary="Who is on call from start for a number of days (the on-call strip)",
)
async def schedule_shifts(
    name: str = Path(..., max_length=bounds.MAX_NAME),
    start: Optional[datetime] = Query(None, description="ISO time with zone; default now"),
    days: float = Query(14, gt=0, le=bounds.MAX_ONCALL_HORIZON_DAYS),
    oncall: OnCall = Depends(get_oncall),
) -> Any:
    answer = await _from(oncall, start, "start", lambda begin: oncall.shifts(name, begin, begin + timedelta(days=days)))
    if isinstance(answer, JSONResponse):
        return answer
    begin, shifts = answer
    return {
        "schedule": name,
        "start": begin.isoformat(),
        "shifts": [_shift(oncall, s) for s in shifts[: bounds.MAX_HANDOFFS * 5]],
    }


@router.get(
    "/schedules/{name}/handoffs",
    responses={**_AUTH, **_NOT_FOUND},
    summary="The next handoffs (a different person on call)",
)
async def schedule_handoffs(
    name: str = Path(..., max_length=bounds.MAX_NAME),
    start: Optional[datetime] = Query(None),
    days: float = Query(14, gt=0, le=bounds.MAX_ONCALL_HORIZON_DAYS),
    limit: int = Query(10, ge=1, le=bounds.MAX_HANDOFFS),
    oncall: OnCall = Depends(get_oncall),
) -> Any:
    answer = await _from(
        oncall, start, "start", lambda begin: oncall.handoffs(name, begin, begin + timedelta(days=days), limit)
    )
    if isinstance(answer, JSONResponse):
        return answer
    begin, handoffs = answer
    return {"schedule": name, "start": begin.isoformat(), "handoffs": [_shift(oncall, h) for h in handoffs]}


@router.get("/maintenance-windows", responses=_AUTH, summary="Recurring maintenance windows and their next openings")
async def maintenance_windows(oncall: OnCall = Depends(get_oncall)) -> Any:
    at = oncall.now()
    out = []
    for window in oncall.config.maintenance_windows:
        data = window.model_dump(mode="json")
        current = window.open_window(at)
        data["open_now"] = current is not None
        data["openings"] = [
            {"start": s.isoformat(), "end": e.isoformat()} for s, e in window.openings(at, at + timedelta(days=14), 5)
        ]
        out.append(data)
    return {"maintenance_windows": out, "at": at.isoformat()}


# ------------------------------------------------------------------------------- overrides


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: Name
    user: Name
    start: datetime
    end: datetime
    comment: Note = ""


@router.get("/overrides", responses=_AUTH, summary="Current and future overrides (of one schedule)")
async def list_overrides(
    schedule: Optional[str] = Query(None, max_length=bounds.MAX_NAME),
    include_past: bool = Query(False),
    oncall: OnCall = Depends(get_oncall),
) -> Any:
    found = await _call(oncall, oncall.list_overrides, schedule, include_past=include_past)
    return {"overrides": [o.model_dump(mode="json") for o in found]}


@router.post("/overrides", status_code=201, responses=_AUTH, summary="Put someone on call for a time range")
async def create_override(
    request: Request, body: OverrideRequest, user: Any = Depends(require_read), oncall: OnCall = Depends(get_oncall)
) -> Any:
    check_cookie_write(request)
    await authorize_write(user, None)  # an override pages for every Dag
    try:
        _utc(body.start, "start"), _utc(body.end, "end")
        override = await _call(
            oncall,
            oncall.create_override,
            body.schedule,
            body.user,
            body.start,
            body.end,
            created_by=actor_name(user),
            comment=body.comment,
        )
    except (NotFound, OnCallError) as exc:
        return _error(exc)
    except OverflowError:
        return _error(OnCallError("end: out of range"))
    return JSONResponse(override.model_dump(mode="json"), status_code=201)


@router.delete("/overrides/{override_id}", responses={**_AUTH, **_NOT_FOUND}, summary="Remove an override")
async def delete_override(
    request: Request,
    override_id: str = Path(..., max_length=64),
    user: Any = Depends(require_read),
    oncall: OnCall = Depends(get_oncall),
) -> Any:
    check_cookie_write(request)
    await authorize_write(user, None)
    try:
        override = await _call(oncall, oncall.delete_override, override_id)
    except NotFound as exc:
        return _error(exc)
    return override.model_dump(mode="json")


# -------------------------------------------------------------------------------- silences


class MatchersRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dag_id: Optional[Name] = None
    task_id: Optional[Name] = None
    policy: Optional[Name] = None
    incident: Optional[Name] = Field(None, description="a glob: * ? [abc]")
    severity: Optional[str] = Field(None, min_length=1, max_length=64)


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: MatchersRequest
    starts_at: Optional[datetime] = Field(None, description="default: now")
    ends_at: Optional[datetime] = Field(None, description="or duration_minutes")
    duration_minutes: Optional[float] = Field(None, gt=0, le=bounds.MAX_ONCALL_SPAN_DAYS * 24 * 60)
    comment: Note = ""


def _silence_out(silence: Silence, at: datetime) -> dict[str, Any]:
    return {**silence.model_dump(mode="json"), "status": silence.status(at)}


async def _visible_silence(oncall: OnCall, silence_id: str, scope: DagScope) -> Silence:
    """The silence, if the caller may read its Dag; NotFound otherwise (as for none at all)."""
    silence: Silence = await _call(oncall, oncall.get_silence, silence_id)
    if not scope.allows(silence.matchers.dag_id):
        raise NotFound(f"silence {silence_id!r} not found")
    return silence


@router.get("/silences", responses=_AUTH, summary="Silences (pending and active; expired too on request)")
async def list_silences(
    include_expired: bool = Query(False),
    oncall: OnCall = Depends(get_oncall),
    scope: DagScope = Depends(read_scope),
) -> Any:
    at = oncall.now()
    found = await _call(oncall, oncall.list_silences, include_expired=include_expired, at=at)
    visible = [s for s in found if scope.allows(s.matchers.dag_id)]
    return {"silences": [_silence_out(s, at) for s in visible], "at": at.isoformat()}


@router.get("/silences/{silence_id}", responses={**_AUTH, **_NOT_FOUND}, summary="One silence")
async def get_silence(
    silence_id: str = Path(..., max_length=64),
    oncall: OnCall = Depends(get_oncall),
    scope: DagScope = Depends(read_scope),
) -> Any:
    try:
        silence = await _visible_silence(oncall, silence_id, scope)
    except NotFound as exc:
        return _error(exc)
    return _silence_out(silence, oncall.now())


@router.post("/silences", status_code=201, responses=_AUTH, summary="Create a silence")
async def create_silence(
    request: Request, body: SilenceRequest, user: Any = Depends(require_read), oncall: OnCall = Depends(get_oncall)
) -> Any:
    check_cookie_write(request)
    await authorize_write(user, body.matchers.dag_id)
    try:
        _utc(body.starts_at, "starts_at"), _utc(body.ends_at, "ends_at")
        if (body.ends_at is None) == (body.duration_minutes is None):
            raise OnCallError("ends_at: give ends_at or duration_minutes (one of them)")
        silence = await _call(
            oncall,
            oncall.create_silence,
            body.matchers.model_dump(exclude_none=True),
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            duration=timedelta(minutes=body.duration_minutes) if body.duration_minutes else None,
            comment=body.comment,
            created_by=actor_name(user),
        )
    except OnCallError as exc:
        return _error(exc)
    except OverflowError:
        return _error(OnCallError("ends_at: out of range"))
    return JSONResponse(_silence_out(silence, oncall.now()), status_code=201)


async def _expire(request: Request, silence_id: str, user: Any, oncall: OnCall, scope: DagScope) -> Any:
    check_cookie_write(request)
    try:
        silence = await _visible_silence(oncall, silence_id, scope)
    except NotFound as exc:
        return _error(exc)
    await authorize_write(user, silence.matchers.dag_id)
    expired = await _call(oncall, oncall.expire_silence, silence_id, actor_name(user))
    return _silence_out(expired, oncall.now())


@router.post("/silences/{silence_id}/expire", responses={**_AUTH, **_NOT_FOUND}, summary="End a silence now")
async def expire_silence(
    request: Request,
    silence_id: str = Path(..., max_length=64),
    user: Any = Depends(require_read),
    oncall: OnCall = Depends(get_oncall),
    scope: DagScope = Depends(read_scope),
) -> Any:
    return await _expire(request, silence_id, user, oncall, scope)


@router.delete("/silences/{silence_id}", responses={**_AUTH, **_NOT_FOUND}, summary="End a silence now (as expire)")
async def delete_silence(
    request: Request,
    silence_id: str = Path(..., max_length=64),
    user: Any = Depends(require_read),
    oncall: OnCall = Depends(get_oncall),
    scope: DagScope = Depends(read_scope),
) -> Any:
    return await _expire(request, silence_id, user, oncall, scope)


# ----------------------------------------------------------------------------- resolutions


@router.get(
    "/escalations/{record_id}/oncall",
    responses={**_AUTH, **_NOT_FOUND},
    summary="Whom the escalation's schedule: and user: deliveries reached",
)
async def record_resolutions(
    record_id: str = Path(..., max_length=bounds.MAX_RECORD_ID),
    oncall: OnCall = Depends(get_oncall),
    scope: DagScope = Depends(read_scope),
) -> Any:
    record = await _call(oncall, oncall.store.get, record_id)
    if record is None or not scope.allows(record.dag_id):
        return _error(NotFound(f"escalation {record_id!r} not found"))
    return {"resolutions": await _call(oncall, oncall.resolutions, record_id)}
