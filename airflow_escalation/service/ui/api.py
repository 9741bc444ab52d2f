"""``GET /me``: who the caller is and whether they may act (drives the pages' buttons).

``can_act`` is the answer of the very check the action routes make (``auth.may_edit``), for the
Dag ``dag_id`` when given (an escalation's ``context.dag_id``), else for all Dags. A ``dag_id``
the caller may not read answers 404: permissions on other teams' Dags are not shown. The action
routes still enforce it: a hidden or enabled button changes nothing about who may act.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from airflow_escalation.service import auth
from airflow_escalation.service.schemas import MAX_NAME, Detail

router = APIRouter(tags=["ui"])


class Me(BaseModel):
    username: str
    can_act: bool = Field(
        description="may acknowledge, resolve, cancel and escalate (escalations of dag_id when given)"
    )
    dag_id: Optional[str] = None
    can_edit_policies: bool = Field(
        False, description="may edit the policies (the permission to edit Airflow connections)"
    )


@router.get(
    "/me",
    response_model=Me,
    responses={
        401: {"model": Detail, "description": "not authenticated"},
        403: {"model": Detail, "description": "invalid token, or not allowed to read"},
        404: {"model": Detail, "description": "a dag_id the caller may not read"},
    },
    summary="The caller, and whether they may act on escalations (of a Dag)",
)
async def me(
    dag_id: Optional[str] = Query(None, max_length=MAX_NAME, description="check the permission for this Dag"),
    user: Any = Depends(auth.require_read),
) -> Me:
    if dag_id is not None and not (await auth.read_scope(user)).allows(dag_id):
        raise HTTPException(404, f"no Dag {dag_id!r}")
    can_act = await auth.may_edit(user, dag_id)
    policies = await auth.may_manage_connections(user)
    return Me(username=auth.actor_name(user), can_act=can_act, dag_id=dag_id, can_edit_policies=policies)
