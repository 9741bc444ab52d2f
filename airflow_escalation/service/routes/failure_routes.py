"""``/routes``: the failure routes of the policies file, and "which route would catch this"
(docs/routes.md). Listing needs the service's read permission; an explain is about one Dag and
answers 404 for a Dag the caller may not read."""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from airflow_escalation.core import bounds
from airflow_escalation.detection.explain import explain
from airflow_escalation.detection.routes import KIND_SOURCE, KINDS, RUN_TYPES, FailureEvent, RouteTable, route_dict
from airflow_escalation.service.auth import DagScope, read_scope, require_read
from airflow_escalation.service.deps import get_engine, get_service
from airflow_escalation.service.schemas import MAX_NAME, Detail

router = APIRouter(prefix="/routes", tags=["routes"], dependencies=[Depends(require_read)])

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "not authenticated"},
    403: {"model": Detail, "description": "invalid token, or not allowed"},
    503: {"model": Detail, "description": "the escalation service is not running"},
}

Kind = Literal[KINDS]  # type: ignore[valid-type]
RunType = Literal[RUN_TYPES]  # type: ignore[valid-type]


class RouteList(BaseModel):
    routes: list[dict[str, Any]] = Field(description="in precedence order: the first that matches wins")
    warnings: list[str] = Field(description="e.g. a route matching every DAG")
    precedence: str
    detector: Optional[dict[str, Any]] = Field(None, description="the detector's state; null when it is off")


def _table(service: Any) -> RouteTable:
    return service.routes if isinstance(service.routes, RouteTable) else RouteTable()


@router.get("", response_model=RouteList, responses=_AUTH_RESPONSES, summary="The failure routes, in precedence order")
async def list_routes(service: Any = Depends(get_service), engine: Any = Depends(get_engine)) -> RouteList:
    table = _table(service)
    return RouteList(
        routes=[route_dict(r, i) for i, r in enumerate(table.routes)],
        warnings=list(table.warnings),
        precedence="the first route in the file that matches wins",
        detector=service.detector.status() if service.detector is not None else None,
    )


def _dag_info(dag_id: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """The Dag's tags and owners from the metadata database, and whether Airflow knows it."""
    from airflow.utils.session import create_session

    from airflow_escalation.detection.scan import dag_infos

    with create_session() as session:
        infos = dag_infos(session, [dag_id])
        from airflow.models.dag import DagModel

        known = session.get(DagModel, dag_id) is not None
    info = infos.get(dag_id)
    return (info.tags, info.owners, known) if info else (frozenset(), frozenset(), known)


@router.get(
    "/explain",
    responses={**_AUTH_RESPONSES, 404: {"model": Detail, "description": "a Dag the caller may not read"}},
    summary="Which route would catch this failure, and what would happen",
)
async def explain_route(
    dag_id: str = Query(..., min_length=1, max_length=MAX_NAME),
    kind: Kind = Query("task_failed"),
    task_id: Optional[str] = Query(None, max_length=MAX_NAME),
    run_type: Optional[RunType] = Query(None),
    try_number: int = Query(1, ge=1, le=bounds.MAX_ROUTE_TRY),
    tags: Optional[list[str]] = Query(
        None, max_length=bounds.MAX_ROUTE_VALUES, description="instead of the Dag's own tags (what if)"
    ),
    owners: Optional[list[str]] = Query(
        None, max_length=bounds.MAX_ROUTE_VALUES, description="instead of the Dag's own owners (what if)"
    ),
    service: Any = Depends(get_service),
    engine: Any = Depends(get_engine),
    scope: DagScope = Depends(read_scope),
) -> Any:
    if not scope.allows(dag_id):
        return JSONResponse({"detail": f"no Dag {dag_id!r}"}, status_code=404)
    for name, values in (("tags", tags), ("owners", owners)):
        for value in values or ():
            if len(value) > MAX_NAME:
                return JSONResponse({"detail": f"{name}: at most {MAX_NAME} characters each"}, status_code=422)
    try:
        dag_tags, dag_owners, known = await asyncio.to_thread(_dag_info, dag_id)
    except Exception:  # noqa: BLE001 - outside Airflow (tests, embedding): only what was sent
        dag_tags, dag_owners, known = frozenset(), frozenset(), None
    fields = {"dag_id": dag_id, "task_id": task_id, "try_number": try_number, "map_index": -1}
    event = FailureEvent(
        kind=kind,
        dag_id=dag_id,
        task_id=task_id,
        run_type=run_type,
        try_number=try_number,
        tags=frozenset(tags) if tags is not None else dag_tags,
        owners=frozenset(owners) if owners is not None else dag_owners,
        fields={**fields, "source": KIND_SOURCE[kind]},
    )
    answer = explain(_table(service), engine.policies, event)
    answer["dag_known"] = known
    return answer
