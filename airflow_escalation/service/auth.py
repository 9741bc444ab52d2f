"""Authentication and authorization of the escalation service, by Airflow's own auth manager.

Plugin FastAPI apps are not authenticated by Airflow: every route here depends on
:func:`require_read`, and the routes that change something on :func:`require_write`.

- **Who**: :func:`get_user` is Airflow's ``airflow.api_fastapi.core_api.security.get_user``
  (bearer token from ``POST /auth/token``, the UI's ``_token`` cookie, or a JWT signed with
  ``[api_auth] jwt_secret``). No credentials: 401 ``Not authenticated``; an invalid token: 403
  ``Invalid JWT token``; an expired one: 401 ``Token Expired`` (Airflow's answers, unchanged).
- **Read** (every route): ``is_authorized_view(AccessView.PLUGINS)``, the permission behind
  Airflow's own plugins page. Every built-in role has it (SimpleAuthManager: VIEWER and up; FAB:
  Viewer and up).
- **Write** (trigger, acknowledge, resolve, cancel, escalate): ``is_authorized_dag(method="PUT",
  access_entity=DagAccessEntity.RUN)`` -- the permission to change Dag runs (clear, mark
  success/failed), which is what acting on a failure's escalation is. SimpleAuthManager grants it
  to USER, OP and ADMIN, not to VIEWER; FAB to User, Op and Admin, not to Viewer. When the
  escalation's context names a ``dag_id`` the check is for that Dag (so FAB per-Dag permissions
  and multi-team setups scope who may acknowledge what); otherwise it is the Dag-wide check.

Airflow's security module is imported when the first request arrives, not at import time: the
plugin module is imported by every Airflow process that loads plugins (task processes included),
and ``airflow.api_fastapi.core_api.security`` costs well over a second to import.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

# Same schemes (and so the same OpenAPI security entries) as Airflow's core API.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token", auto_error=False,
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
    """Any user allowed to see Airflow's plugins page may read escalations."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    if not _auth_manager().is_authorized_view(access_view=AccessView.PLUGINS, user=user):
        raise _forbidden()
    return user


def _team_of(dag_id: str) -> Optional[str]:
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return None
    from airflow.models.dag import DagModel

    return DagModel.get_team_name(dag_id)


async def authorize_write(user: "BaseUser", dag_id: Any = None) -> None:
    """Raise 403 unless ``user`` may change runs of ``dag_id`` (of any Dag when it is None)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    details = None
    if isinstance(dag_id, str) and dag_id:
        team = await asyncio.to_thread(_team_of, dag_id)
        details = DagDetails(id=dag_id, team_name=team)
    if not _auth_manager().is_authorized_dag(
        method="PUT", access_entity=DagAccessEntity.RUN, details=details, user=user
    ):
        raise _forbidden()


async def _dag_id_of_request(request: Request) -> Any:
    """The Dag an action concerns: the escalation's ``context.dag_id``, or the trigger body's."""
    record_id = request.path_params.get("record_id")
    if record_id is not None:
        service = getattr(request.app.state, "service", None)
        engine = getattr(service, "engine", None)
        if engine is None or len(record_id) > 64:
            return None
        store = engine.store
        try:
            record = (await asyncio.to_thread(store.get, record_id) if store.blocking
                      else store.get(record_id))
        except Exception:  # noqa: BLE001 - the route reports store failures itself
            return None
        return record.context.get("dag_id") if record is not None else None
    try:
        body = await request.json()
    except Exception:  # noqa: BLE001 - not JSON: the route's validation answers 422
        return None
    if isinstance(body, dict) and isinstance(body.get("context"), dict):
        return body["context"].get("dag_id")
    return None


async def require_write(request: Request, user: "BaseUser" = Depends(require_read)) -> "BaseUser":
    """The user, if allowed to act on the escalation this request concerns; else 403."""
    await authorize_write(user, await _dag_id_of_request(request))
    return user


def actor_name(user: "BaseUser") -> str:
    """Who acted, as recorded in ``acknowledged_by`` etc.: the user's name, else its id."""
    name = None
    try:
        name = user.get_name()
    except Exception:  # noqa: BLE001 - any user object: fall back to its id
        name = None
    return str(name or user.get_id())
