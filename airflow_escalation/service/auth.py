"""Authentication and authorization of the escalation service, by Airflow's own auth manager.

Plugin FastAPI apps are not authenticated by Airflow: every route here depends on
:func:`require_read`, and the routes that change something on :func:`require_write`.

- **Who**: :func:`get_user` is Airflow's ``airflow.api_fastapi.core_api.security.get_user``
  (bearer token from ``POST /auth/token``, the UI's ``_token`` cookie, or a JWT signed with
  ``[api_auth] jwt_secret``). No credentials: 401 ``Not authenticated``; an invalid token: 403
  ``Invalid JWT token``; an expired one: 401 ``Token Expired`` (Airflow's answers, unchanged).
- **The service** (every route): ``is_authorized_view(AccessView.PLUGINS)``, the permission
  behind Airflow's own plugins page. Every built-in role has it (SimpleAuthManager: VIEWER and
  up; FAB: Viewer and up).
- **Every record belongs to its Dag** (``EscalationRecord.dag_id``: its context's ``dag_id``).
  A caller reads the records of the Dags it may read, as Airflow's own routes decide it
  (:class:`DagScope`, :func:`read_scope`): with the Dag-wide read permission
  (``is_authorized_dag(method="GET", access_entity=RUN)`` without details) every record, the
  records of no Dag included; otherwise the records of the Dags
  ``get_authorized_dag_ids(method="GET")`` names, and no record of no Dag. Lists, stats, a
  record and its deliveries, ``/me``, the pages and the one-click links all ask it; a record
  outside the caller's scope answers 404, as if it did not exist.
- **Write** (trigger, acknowledge, resolve, cancel, escalate): ``is_authorized_dag(method="PUT",
  access_entity=DagAccessEntity.RUN)`` -- the permission to change Dag runs (clear, mark
  success/failed), which is what acting on a failure's escalation is. SimpleAuthManager grants it
  to USER, OP and ADMIN, not to VIEWER; FAB to User, Op and Admin, not to Viewer. The check is
  for the record's Dag (the trigger's ``context.dag_id``); a record of no Dag needs the Dag-wide
  permission (the check without details).
- **Connections** (an inline policy in a trigger whose targets name a ``conn_id``):
  ``is_authorized_connection(method="PUT")`` -- only who may edit connections decides where a
  connection sends; registered policies (the policies file) may name any.

Airflow's security module is imported when the first request arrives, not at import time: the
plugin module is imported by every Airflow process that loads plugins (task processes included),
and ``airflow.api_fastapi.core_api.security`` costs well over a second to import.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

# Same schemes (and so the same OpenAPI security entries) as Airflow's core API.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token",
    auto_error=False,
    description="A JWT from the Airflow API server's POST /auth/token.",
)
bearer_scheme = HTTPBearer(auto_error=False)


async def get_user(
    request: Request,
    oauth_token: Optional[str] = Depends(oauth2_scheme),
    bearer_credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer_scheme),
) -> "BaseUser":
    """The authenticated Airflow user (Airflow's ``get_user``, called as its own route would)."""
    from airflow.api_fastapi.core_api.security import get_user as airflow_get_user

    return await airflow_get_user(request, oauth_token, bearer_credentials)


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def _forbidden() -> HTTPException:
    # Airflow's own wording for a refused authorization (security._requires_access)
    return HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")


async def require_read(user: "BaseUser" = Depends(get_user)) -> "BaseUser":
    """Any user allowed to see Airflow's plugins page may use the service (each record then
    needs its Dag's read permission: :func:`read_scope`)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    if not _auth_manager().is_authorized_view(access_view=AccessView.PLUGINS, user=user):
        raise _forbidden()
    return user


@dataclass(frozen=True)
class DagScope:
    """The records a caller may read: all (``dag_ids`` None) or those of ``dag_ids``."""

    dag_ids: Optional[frozenset] = None

    @classmethod
    def everything(cls) -> "DagScope":
        return cls(None)

    def allows(self, dag_id: Optional[str]) -> bool:
        """May the caller read a record of ``dag_id`` (None: a record of no Dag)?"""
        return self.dag_ids is None or (dag_id is not None and dag_id in self.dag_ids)


def _dag_wide(method: str, user: "BaseUser") -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    return bool(
        _auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN, details=None, user=user)
    )


async def read_scope(user: "BaseUser" = Depends(require_read)) -> DagScope:
    """The records ``user`` may read: every one with the Dag-wide read permission, else those of
    the Dags the auth manager lists (``get_authorized_dag_ids``, as Airflow's list routes)."""
    if _dag_wide("GET", user):
        return DagScope.everything()
    dag_ids = await asyncio.to_thread(_auth_manager().get_authorized_dag_ids, user=user, method="GET")
    return DagScope(frozenset(dag_ids))


async def may_edit(user: "BaseUser", dag_id: Any = None) -> bool:
    """May ``user`` change runs of ``dag_id`` (of every Dag when it is None)?"""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    details = None
    if isinstance(dag_id, str) and dag_id:
        team = await asyncio.to_thread(_team_of, dag_id)
        details = DagDetails(id=dag_id, team_name=team)
    return bool(
        _auth_manager().is_authorized_dag(method="PUT", access_entity=DagAccessEntity.RUN, details=details, user=user)
    )


async def may_manage_connections(user: "BaseUser") -> bool:
    """May ``user`` edit Airflow connections (and so choose where a connection sends)?"""
    return bool(_auth_manager().is_authorized_connection(method="PUT", user=user))


def _team_of(dag_id: str) -> Optional[str]:
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return None
    from airflow.models.dag import DagModel

    return DagModel.get_team_name(dag_id)


async def authorize_write(user: "BaseUser", dag_id: Any = None) -> None:
    """Raise 403 unless ``user`` may change runs of ``dag_id`` (of every Dag when it is None)."""
    if not await may_edit(user, dag_id):
        raise _forbidden()


class RecordHidden(Exception):
    """The record does not exist, or the caller may not read it: both answer 404 alike."""

    def __init__(self, record_id: str) -> None:
        super().__init__(record_id)
        self.record_id = record_id


async def _record_of_request(request: Request, record_id: str) -> Any:
    from airflow_escalation.service.deps import get_engine, run_store
    from airflow_escalation.service.schemas import MAX_RECORD_ID

    if len(record_id) > MAX_RECORD_ID:
        return None
    engine = get_engine(request)
    return await run_store(engine, engine.store.get, record_id)


async def require_write(request: Request, user: "BaseUser" = Depends(require_read)) -> "BaseUser":
    """The user, if allowed to act on the escalation this request concerns.

    A browser's write must pass :func:`check_cookie_write` (403). On a record (``{record_id}`` in
    the path): 404 (:class:`RecordHidden`) unless it exists and the user may read its Dag, then
    403 unless the user may change its Dag's runs. A trigger: 403 unless the user may change runs
    of ``context.dag_id`` (of every Dag without one), and may edit connections when its inline
    policy names any.
    """
    check_cookie_write(request)
    record_id = request.path_params.get("record_id")
    if record_id is not None:
        record = await _record_of_request(request, record_id)
        if record is None or not (await read_scope(user)).allows(record.dag_id):
            raise RecordHidden(record_id)
        await authorize_write(user, record.dag_id)
        return user
    await _authorize_trigger(request, user)
    return user


async def _authorize_trigger(request: Request, user: "BaseUser") -> None:
    """A trigger: the user may change runs of its Dag, and may edit connections if its inline
    policy names any (a body the route cannot parse is left to its 422)."""
    from airflow_escalation.core.models import dag_id_of

    try:
        body = await request.json()
    except Exception:  # noqa: BLE001 - not JSON: the route's validation answers 422
        return
    if not isinstance(body, dict):
        return
    await authorize_write(user, dag_id_of(body.get("context")))
    inline = body.get("policy")
    if not isinstance(inline, dict):
        return
    try:
        policy = inline_policy(request, inline)
    except Exception:  # noqa: BLE001 - the route answers 422 naming the field
        return
    conn_ids = sorted({t.conn_id for level in policy.levels for t in level.targets if t.conn_id})
    if conn_ids and not await may_manage_connections(user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            (
                f"policy: an inline policy may send through Airflow connections ({', '.join(conn_ids)}) "
                "only for users allowed to edit connections; trigger a registered policy instead "
                "(policy_name, from the policies file) or ask a connection admin"
            ),
        )


def inline_policy(request: Request, raw: dict[str, Any]) -> Any:
    """``raw`` (a trigger's inline policy) as an ``EscalationPolicy``, parsed once per request:
    the write check and the route share it (``request.state``). Raises what ``from_dict`` raises."""
    from airflow_escalation.core.models import EscalationPolicy

    cached = getattr(request.state, "inline_policy", None)
    if cached is not None and cached[0] == raw:
        return cached[1]
    policy = EscalationPolicy.from_dict(raw)
    request.state.inline_policy = (raw, policy)
    return policy


# ---------------------------------------------------------------------------------- browsers


def public_origin(request: Request) -> str:
    """``scheme://host[:port]`` of Airflow's public URL (``[escalation] base_url``, else ``[api]
    base_url``): the only origin a cookie-authenticated form may come from. Never the ``Host``
    header, which proxies rewrite and clients choose."""
    from urllib.parse import urlsplit

    service = getattr(request.app.state, "service", None)
    settings = getattr(service, "settings", None)
    base = getattr(settings, "base_url", "") or ""
    if not base:
        from airflow_escalation.airflow_config import public_base_url

        base = public_base_url()
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def same_origin(request: Request) -> bool:
    """Did the browser send this request from Airflow's own origin (its ``Origin`` header)?"""
    origin = (request.headers.get("origin") or "").rstrip("/").lower()
    return bool(origin) and origin != "null" and origin == public_origin(request)


def _cookie_authenticated(request: Request) -> bool:
    return not request.headers.get("authorization") and "_token" in request.cookies


def _json_body(request: Request) -> bool:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return media == "application/json"


def foreign_origin(request: Request) -> bool:
    """Does the request name an ``Origin`` that is not Airflow's: ``null`` (a sandboxed or
    privacy-stripped page), or a host that is neither the public URL's nor the one the request
    was sent to (``Host``, or a proxy's ``X-Forwarded-Host``; a page on another site cannot set
    either)? The scheme is not compared: a proxy ending TLS serves https pages over http."""
    from urllib.parse import urlsplit

    origin = request.headers.get("origin")
    if origin is None:
        return False
    origin = origin.strip().rstrip("/").lower()
    if origin and origin == public_origin(request):
        return False
    try:
        host = urlsplit(origin).netloc if origin != "null" else ""
    except ValueError:
        return True
    served = {h.strip().lower() for h in (request.headers.get("x-forwarded-host") or "").split(",") if h.strip()}
    served.add((request.headers.get("host") or "").strip().lower())
    served.add(urlsplit(public_origin(request)).netloc)
    return not host or host not in served


def check_cookie_write(request: Request) -> None:
    """A write authenticated by the browser's session cookie must not name another site's
    ``Origin`` (nor ``null``), and must be JSON (which another site can send only through CORS,
    which Airflow grants nobody by default) or come from Airflow's own origin; else 403.
    Bearer-token callers are not browsers: unaffected."""
    if not _cookie_authenticated(request):
        return
    if foreign_origin(request) or (not _json_body(request) and not same_origin(request)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Forbidden: a write with the session cookie must come from Airflow's own "
            "origin ([api] base_url) and send a JSON body unless it names that origin",
        )


def actor_name(user: "BaseUser") -> str:
    """Who acted, as recorded in ``acknowledged_by`` etc.: the user's name, else its id."""
    name = None
    try:
        name = user.get_name()
    except Exception:  # noqa: BLE001 - any user object: fall back to its id
        name = None
    return str(name or user.get_id())
