"""``/stats`` and ``/health``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from airflow_escalation.runtime.engine import EscalationEngine
from airflow_escalation.service.auth import DagScope, read_scope, require_read
from airflow_escalation.service.deps import get_engine, get_service, run_store
from airflow_escalation.service.schemas import Detail, Health, Stats

router = APIRouter(tags=["service"], dependencies=[Depends(require_read)])

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "not authenticated"},
    403: {"model": Detail, "description": "invalid token, or not allowed"},
}


@router.get(
    "/stats",
    response_model=Stats,
    responses={**_AUTH_RESPONSES, 503: {"model": Detail, "description": "not running"}},
    summary="Counts and rates over the stored escalations of the Dags the caller may read",
)
async def stats(engine: EscalationEngine = Depends(get_engine), scope: DagScope = Depends(read_scope)) -> Stats:
    result = await run_store(engine, engine.store.get_stats, scope.dag_ids)
    return Stats.model_validate(result.to_dict())


@router.get(
    "/health",
    response_model=Health,
    responses={**_AUTH_RESPONSES, 503: {"model": Health, "description": "disabled or not running"}},
    summary="Is the engine running here (this API-server worker)?",
)
async def health(service: Any = Depends(get_service)) -> Any:
    engine = service.engine
    body = Health(
        status=service.status,
        engine_id=engine.engine_id if engine is not None else None,
        store=engine.store.name if engine is not None else None,
        running=bool(engine is not None and engine.is_running),
        errors=list(service.errors) + ([service.unavailable_reason()] if service.disabled else []),
    )
    if body.status in ("ok", "degraded"):
        return body
    return JSONResponse(body.model_dump(mode="json"), status_code=503)
