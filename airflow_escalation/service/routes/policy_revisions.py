"""Policies as data over REST: the current document, its revisions, edits, roll-back, preview.

Reads need the service's read permission; every write needs permission to edit Airflow
connections (a policy decides where messages go, through which connections: principle 8), and
a browser's write passes the same origin/JSON check as every other write. Each write names the
revision it edits (``expected_revision``): a save based on a revision that is no longer the
latest is a 409, never a silent overwrite. A document that fails validation is a 422 listing
every error, and the current revision stays in force. See docs/policies.md.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_escalation.core import bounds
from airflow_escalation.runtime.policy_config import parse_yaml
from airflow_escalation.core.models import EscalationPolicy
from airflow_escalation.core.policy_doc import (
    PolicyRevision,
    RevisionConflict,
    policy_entries,
    policy_errors_of,
    preview,
    preview_text,
    with_policy,
    without_policy,
)
from airflow_escalation.service import auth
from airflow_escalation.service.deps import ServiceUnavailable, get_service
from airflow_escalation.service.schemas import Detail, Name, Note

router = APIRouter(prefix="/policies", tags=["policies"], dependencies=[Depends(auth.require_read)])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "not authenticated"},
    403: {"model": Detail, "description": "invalid token, or not allowed"},
    503: {"model": Detail, "description": "the escalation service is not running"},
}


# ---------------------------------------------------------------------------------- models


class RevisionSummary(BaseModel):
    revision: int
    author: str
    created_at: str
    comment: str
    source: str = Field(
        description="api (REST or the UI), import (the policies file on a first start), file "
        "(policies_source = file), rollback"
    )
    changes: list[str] = Field(description="what this revision changed, in words")


class RevisionDetail(RevisionSummary):
    document: dict[str, Any] = Field(description="the policies document (the policies file's escalation: block)")
    yaml: str = Field(description="the same document as YAML (an export)")
    previews: dict[str, str] = Field(description='per policy, the timeline it produces ("L1 at 0, 5, 10 min; …")')


class RevisionList(BaseModel):
    revisions: list[RevisionSummary]
    total: int
    current: int = Field(description="the revision in force on this API server (0: none yet)")
    source: str = Field(description="which wins: database (edited here) or file (config as code)")


class InvalidDocument(BaseModel):
    detail: str
    errors: list[str] = Field(description="every error found, each naming where it is")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Edit(_Body):
    expected_revision: int = Field(ge=0, description="the revision this edit is based on (0: none yet)")
    comment: Note = ""


class _PolicyBody(_Body):
    policy: dict[str, Any] = Field(description="one policy (EscalationPolicy.to_dict() form)")

    @field_validator("policy")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        bounds.check_policy_json(value, "policy")
        return value


class _DocumentBody(_Body):
    """A whole document: as data or as YAML text, exactly one of them."""

    document: Optional[dict[str, Any]] = Field(None, description="the whole document as data")
    yaml: Optional[str] = Field(None, max_length=bounds.MAX_YAML_BYTES, description="or as YAML text (an import)")

    @field_validator("document")
    @classmethod
    def _bounded(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None:
            bounds.check_document_json(value, "document")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> "_DocumentBody":
        if (self.document is None) == (self.yaml is None):
            raise ValueError("give exactly one of 'document' (a mapping) or 'yaml' (YAML text)")
        return self


class DocumentEdit(_Edit, _DocumentBody):
    pass


class PolicyEdit(_Edit, _PolicyBody):
    pass


class Rollback(_Edit):
    pass


class PreviewRequest(_PolicyBody):
    pass


class DocumentCheck(_DocumentBody):
    pass


class CheckAnswer(BaseModel):
    valid: bool
    errors: list[str] = Field(description="every error found, each naming where it is")
    previews: dict[str, str] = Field(description="per policy, the timeline it would produce")
    changes: list[str] = Field(description="what saving it would change, against the latest revision")
    based_on: int = Field(description="the latest revision it was compared with (send it as expected_revision)")


class PreviewStepOut(BaseModel):
    minute: float
    level: int
    action: str
    targets: list[str]


class PreviewAnswer(BaseModel):
    valid: bool
    errors: list[str]
    text: str = Field(description='"L1 at 0, 5, 10 min; L2 at 15; L3 at 45" (empty when invalid)')
    steps: list[PreviewStepOut]


# ---------------------------------------------------------------------------------- helpers


def _sync(request: Request) -> Any:
    sync = getattr(get_service(request), "policy_sync", None)
    if sync is None:
        raise ServiceUnavailable("policies in the database are not available on this service (see /health)")
    return sync


async def require_policy_admin(request: Request, user: Any = Depends(auth.require_read)) -> Any:
    """A user who may edit policies: the same as editing Airflow connections."""
    auth.check_cookie_write(request)
    if not await auth.may_manage_connections(user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "editing policies needs permission to edit Airflow connections (a policy decides where messages go)",
        )
    return user


def _summary(revision: PolicyRevision) -> RevisionSummary:
    return RevisionSummary.model_validate(revision.to_dict(with_document=False))


def _previews(document: dict[str, Any]) -> dict[str, str]:
    out = {}
    for entry in policy_entries(document):
        try:
            policy = EscalationPolicy.from_dict(entry)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        out[policy.name] = preview_text(preview(policy))
    return out


def _detail(revision: PolicyRevision) -> RevisionDetail:
    return RevisionDetail(
        **revision.to_dict(with_document=False),
        document=revision.document,
        yaml=yaml.safe_dump({"escalation": revision.document}, sort_keys=False, allow_unicode=True),
        previews=_previews(revision.document),
    )


async def _save(request: Request, user: Any, document: Any, body: _Edit, source: str = "api") -> Any:
    from airflow_escalation.service.policy_sync import PolicyEditRefused, PolicyInvalid

    sync = _sync(request)
    try:
        saved = await sync.save(document, body.expected_revision, auth.actor_name(user), body.comment, source)
    except PolicyInvalid as exc:
        errors = [bounds.truncate(e, 500) for e in exc.errors]
        return JSONResponse(
            InvalidDocument(
                detail=f"the policies are invalid ({len(errors)} errors); nothing changed", errors=errors
            ).model_dump(),
            status_code=422,
        )
    except RevisionConflict as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    except PolicyEditRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    return _detail(saved)


async def _latest(request: Request) -> PolicyRevision:
    import asyncio

    latest = await asyncio.to_thread(_sync(request).revisions.latest)
    if latest is None:
        return PolicyRevision(revision=0, document={"policies": []}, author="", created_at=_epoch(), source="none")
    return latest


async def _revision(request: Request, revision: int) -> PolicyRevision | JSONResponse:
    """Revision ``revision``, or the 404 answer when there is none."""
    import asyncio

    found: PolicyRevision | None = await asyncio.to_thread(_sync(request).revisions.get, revision)
    if found is None:
        return JSONResponse({"detail": f"no policies revision {revision}"}, status_code=404)
    return found


def _epoch() -> Any:
    from datetime import datetime, timezone

    return datetime(1970, 1, 1, tzinfo=timezone.utc)


_EDIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    409: {"model": Detail, "description": "expected_revision is not the latest, or policies are managed as code"},
    422: {
        "description": "an invalid body (FastAPI's detail list), or invalid policies: "
        '{"detail": "...", "errors": [every error found]}, and nothing changed'
    },
}


# ---------------------------------------------------------------------------------- routes


@router.get("/document", response_model=RevisionDetail, responses=_RESPONSES, summary="The policies in force")
async def current_document(request: Request) -> Any:
    return _detail(await _latest(request))


@router.get(
    "/document.yaml",
    responses={**_RESPONSES, 200: {"content": {"application/yaml": {}}}},
    summary="Export: the policies in force as a policies file",
)
async def export_document(request: Request) -> Response:
    latest = await _latest(request)
    return Response(
        _detail(latest).yaml,
        media_type="application/yaml",
        headers={"Content-Disposition": 'attachment; filename="escalation_policies.yaml"'},
    )


@router.put(
    "/document", response_model=RevisionDetail, responses=_EDIT_RESPONSES, summary="Replace the policies (or import)"
)
async def replace_document(request: Request, body: DocumentEdit, user: Any = Depends(require_policy_admin)) -> Any:
    document: Any = body.document
    if body.yaml is not None:
        try:
            document = parse_yaml(body.yaml)
        except ValueError as exc:
            return JSONResponse(
                InvalidDocument(
                    detail="the YAML cannot be read; nothing changed", errors=[bounds.truncate(exc)]
                ).model_dump(),
                status_code=422,
            )
    return await _save(request, user, document, body)


@router.post(
    "/document/check",
    response_model=CheckAnswer,
    responses=_RESPONSES,
    summary="Check a document before saving: every error, each policy's timeline, what would change",
)
async def check_document(request: Request, body: DocumentCheck) -> Any:
    from airflow_escalation.core.policy_doc import changes, unwrap
    from airflow_escalation.service.policy_validation import validate_document

    latest = await _latest(request)
    document: Any = body.document
    if body.yaml is not None:
        try:
            document = parse_yaml(body.yaml)
        except ValueError as exc:
            return CheckAnswer(
                valid=False, errors=[bounds.truncate(exc)], previews={}, changes=[], based_on=latest.revision
            )
    _, errors = validate_document(document)
    if errors:
        errors = [bounds.truncate(e, 500) for e in errors]
        return CheckAnswer(valid=False, errors=errors, previews={}, changes=[], based_on=latest.revision)
    document = unwrap(document)
    return CheckAnswer(
        valid=True,
        errors=[],
        previews=_previews(document),
        changes=changes(latest.document if latest.revision else None, document),
        based_on=latest.revision,
    )


@router.get("/revisions", response_model=RevisionList, responses=_RESPONSES, summary="Revisions, newest first")
async def list_revisions(
    request: Request, limit: int = Query(50, ge=1, le=bounds.MAX_LIST_LIMIT), offset: int = Query(0, ge=0)
) -> Any:
    import asyncio

    sync = _sync(request)
    revisions, total = await asyncio.to_thread(sync.revisions.history, limit, offset)
    return RevisionList(
        revisions=[_summary(r) for r in revisions], total=total, current=sync.applied, source=sync.source
    )


@router.get(
    "/revisions/{revision}",
    response_model=RevisionDetail,
    responses={**_RESPONSES, 404: {"model": Detail, "description": "no such revision"}},
    summary="One revision with its document",
)
async def get_revision(request: Request, revision: int = Path(..., ge=1)) -> Any:
    found = await _revision(request, revision)
    return found if isinstance(found, JSONResponse) else _detail(found)


@router.post(
    "/revisions/{revision}/rollback",
    response_model=RevisionDetail,
    responses={**_EDIT_RESPONSES, 404: {"model": Detail, "description": "no such revision"}},
    summary="Roll back: save an earlier revision's document as the new latest",
)
async def rollback(
    request: Request, body: Rollback, revision: int = Path(..., ge=1), user: Any = Depends(require_policy_admin)
) -> Any:
    found = await _revision(request, revision)
    if isinstance(found, JSONResponse):
        return found
    if not body.comment:
        body.comment = f"roll back to revision {revision}"
    return await _save(request, user, found.document, body, "rollback")


@router.post("/preview", response_model=PreviewAnswer, responses=_RESPONSES, summary="The timeline a policy produces")
async def preview_policy(body: PreviewRequest) -> Any:
    errors = policy_errors_of(body.policy)
    if errors:
        return PreviewAnswer(valid=False, errors=[bounds.truncate(e, 500) for e in errors], text="", steps=[])
    steps = preview(EscalationPolicy.from_dict(body.policy))
    return PreviewAnswer(
        valid=True,
        errors=[],
        text=preview_text(steps),
        steps=[PreviewStepOut.model_validate(s.to_dict()) for s in steps],
    )


@router.put(
    "/{name}/definition",
    response_model=RevisionDetail,
    responses=_EDIT_RESPONSES,
    summary="Create or replace one policy (a new revision of the document)",
)
async def put_policy(
    request: Request, body: PolicyEdit, name: Name = Path(...), user: Any = Depends(require_policy_admin)
) -> Any:
    if body.policy.get("name") != name:
        return JSONResponse(
            InvalidDocument(
                detail="the policy's name must be the one in the path; nothing changed",
                errors=[f"policy.name: {body.policy.get('name')!r} is not {name!r}"],
            ).model_dump(),
            status_code=422,
        )
    latest = await _latest(request)
    if not body.comment:
        exists = any(p.get("name") == name for p in policy_entries(latest.document))
        body.comment = f"{'edit' if exists else 'create'} policy {name}"
    return await _save(request, user, with_policy(latest.document, body.policy), body)


@router.delete(
    "/{name}/definition",
    response_model=RevisionDetail,
    responses={**_EDIT_RESPONSES, 404: {"model": Detail, "description": "no such policy in the latest revision"}},
    summary="Remove one policy (a new revision; open escalations keep their snapshot)",
)
async def delete_policy(
    request: Request,
    name: str = Path(..., max_length=bounds.MAX_NAME),
    expected_revision: int = Query(..., ge=0),
    comment: str = Query("", max_length=bounds.MAX_NOTE),
    user: Any = Depends(require_policy_admin),
) -> Any:
    latest = await _latest(request)
    if not any(p.get("name") == name for p in policy_entries(latest.document)):
        return JSONResponse({"detail": f"no policy {name!r} in revision {latest.revision}"}, status_code=404)
    body = Rollback(expected_revision=expected_revision, comment=comment or f"remove policy {name}")
    return await _save(request, user, without_policy(latest.document, name), body)
