"""The pages Airflow embeds (``external_views``) and their static assets.

The pages are shells: the script ``static/escalation.js`` reads the REST API and renders with
``textContent`` only, polling every few seconds, and calls the action routes with the user's
session. Nothing from an escalation is rendered into the HTML on the server, so nothing from an
incident's context can become markup.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse
from starlette.requests import Request

from airflow_escalation import __version__
from airflow_escalation.service import auth
from airflow_escalation.service.deps import ServiceUnavailable, get_engine, run_store
from airflow_escalation.service.schemas import MAX_NAME, MAX_RECORD_ID
from airflow_escalation.stores.base import StoreError
from airflow_escalation.service.ui.render import STATIC, PageError, page_reader, render, service_root

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)

#: seconds between two refreshes of a page (the pages pause while hidden)
POLL_SECONDS = 5

_STATIC_FILES = {
    "escalation.css": "text/css; charset=utf-8",
    "escalation.js": "text/javascript; charset=utf-8",
    "theme.js": "text/javascript; charset=utf-8",
    "routes.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "icon-dark.svg": "image/svg+xml",
    "oncall.js": "text/javascript; charset=utf-8",
    "oncall.css": "text/css; charset=utf-8",
}


def _common(user: Any) -> dict[str, Any]:
    from airflow_escalation.service.auth import actor_name

    return {"username": actor_name(user), "version": __version__, "poll_ms": POLL_SECONDS * 1000}


def _templated(value: Optional[str]) -> str:
    """A destination parameter; ``{RUN_ID}`` etc. left untemplated by the UI mean 'absent'."""
    if value is None:
        return ""
    value = value.strip()
    return "" if value.startswith("{") and value.endswith("}") else value


@router.get("", include_in_schema=False)
async def index_redirect(request: Request, user: Any = Depends(page_reader)) -> RedirectResponse:
    return RedirectResponse(f"{service_root(request)}/ui/", status_code=307)


@router.get("/")
async def escalations_page(request: Request, user: Any = Depends(page_reader)) -> Any:
    """The Escalations page: active ones first, filters, actions (the nav entry)."""
    return render(request, "list.html", view="list", **_common(user))


@router.get("/policies")
async def policies_page(request: Request, user: Any = Depends(page_reader)) -> Any:
    """The policies in force, their timelines, an editor with check and save, the revisions."""
    return render(request, "policies.html", view="policies", **_common(user))


@router.get("/records/{record_id}")
async def record_page(request: Request, record_id: str, user: Any = Depends(page_reader)) -> Any:
    """One escalation: its summary, actions, context and timeline."""
    record = None
    if len(record_id) <= MAX_RECORD_ID:
        try:
            engine = get_engine(request)
            record = await run_store(engine, engine.store.get, record_id)
        except (ServiceUnavailable, StoreError) as exc:
            raise PageError(503, "The escalation service is not available", str(exc)) from None
    # a record of a Dag the user may not read does not exist for them
    if record is None or not (await auth.read_scope(user)).allows(record.dag_id):
        raise PageError(404, "No such escalation", f"There is no escalation {record_id[:80]!r}.")
    return render(request, "record.html", view="record", record_id=record_id, **_common(user))


@router.get("/oncall")
async def oncall_page(request: Request, user: Any = Depends(page_reader)) -> Any:
    """On call: who is on call per schedule and the next two weeks, silences, windows (docs/oncall.md)."""
    return render(request, "oncall.html", view="oncall", **_common(user))


@router.get("/ti")
async def task_page(
    request: Request,
    dag_id: Optional[str] = Query(None, max_length=MAX_NAME),
    run_id: Optional[str] = Query(None, max_length=MAX_NAME),
    task_id: Optional[str] = Query(None, max_length=MAX_NAME),
    map_index: Optional[str] = Query(None, max_length=16),
    user: Any = Depends(page_reader),
) -> Any:
    """The tab on the task-instance, task and Dag-run pages: that failure's escalations."""
    scope = {
        "dag_id": _templated(dag_id),
        "run_id": _templated(run_id),
        "task_id": _templated(task_id),
        "map_index": _templated(map_index),
    }
    try:
        scope["map_index"] = str(int(scope["map_index"])) if scope["map_index"] else ""
    except ValueError:
        scope["map_index"] = ""
    if scope["dag_id"] and not (await auth.read_scope(user)).allows(scope["dag_id"]):
        raise PageError(404, "No such Dag", f"There is no Dag {scope['dag_id'][:80]!r} you may read.")
    return render(request, "ti.html", view="ti", scope=scope, **_common(user))


@router.get("/routes")
async def routes_page(
    request: Request, dag_id: Optional[str] = Query(None, max_length=MAX_NAME), user: Any = Depends(page_reader)
) -> Any:
    """The failure routes, and "which route would catch this" for a Dag (docs/routes.md)."""
    from airflow_escalation.detection.routes import KINDS, RUN_TYPES

    return render(
        request,
        "routes.html",
        view="routes",
        dag_id=_templated(dag_id),
        kinds=KINDS,
        run_types=RUN_TYPES,
        **_common(user),
    )


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """CSS, script and icons. Public: constant files of the package that hold no data (the
    link error pages use them before anyone logs in)."""
    media_type = _STATIC_FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    return FileResponse(
        STATIC / name, media_type=media_type, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    )
