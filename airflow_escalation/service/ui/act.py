"""``/escalation/act/{token}``: the pages behind one-click links (see ``service/links.py``).

``GET`` never changes anything. It checks the link (signature, expiry: 400/410 at once, before
anyone logs in), then needs a logged-in Airflow user allowed to read escalations (else 303 to
Airflow's login with ``next`` back to the link, or 403), reads the escalation (404), refuses a
link already used (409) or an action the escalation no longer allows (409), checks the user's
permission exactly as the REST API's action routes do (403), and shows a confirmation page: which
incident, which action, when the link expires, and a button.

``POST`` (the confirmation form: the token in the URL, the record id and action the page showed
in the body) repeats every check, and the form must match the token (409 otherwise). Then the
engine acts as the logged-in user with the note ``via one-click link (link:<jti>)``: that note in
the record's history is what marks the link used. It is written by the same compare-and-swap as
the action, in the store every API-server worker and replica shares, so no separate table is
needed: a second use is refused because the history holds the marker, and two concurrent uses
cannot both act because the second one's transition is refused by the record's state (it is then
reported as a used link).
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request

from airflow_escalation.core.states import can
from airflow_escalation.service import auth, links
from airflow_escalation.service.deps import ServiceUnavailable, get_service, run_store
from airflow_escalation.service.ui.render import NAV_URL_ROUTE, PageError, airflow_root, page_reader, render
from airflow_escalation.stores.base import StoreError

router = APIRouter(prefix="/act", tags=["links"], include_in_schema=False)

_MAX_FORM_BYTES = 4096
_VERB = {"acknowledge": "Acknowledge", "resolve": "Resolve"}
_DONE = {"acknowledge": "acknowledged", "resolve": "resolved"}


def _secret(request: Request) -> str:
    secret = getattr(request.app.state, "link_secret", None)  # tests and embedding
    if secret:
        return secret
    try:
        return links.default_link_secret()
    except links.ActionLinkConfigError as exc:
        raise PageError(503, "One-click links are not configured", str(exc), referrer="no-referrer") from None


def _verify(request: Request, token: str, **expected: Optional[str]) -> links.ActionToken:
    try:
        return links.verify_action_token(token, secret=_secret(request), **expected)
    except links.ActionLinkError as exc:
        raise _link_error(exc) from None


def _link_error(exc: links.ActionLinkError, **context: Any) -> PageError:
    return PageError(exc.status, exc.title, str(exc), referrer="no-referrer", **context)


async def _record(request: Request, claims: links.ActionToken) -> tuple[Any, Any]:
    try:
        engine = get_service(request).require_engine()
        record = await run_store(engine, engine.store.get, claims.record_id)
    except (ServiceUnavailable, StoreError) as exc:
        raise PageError(503, "The escalation service is not available", str(exc), referrer="no-referrer") from None
    if record is None:
        raise PageError(
            404,
            "No such escalation",
            "The escalation this link is for does not exist (any more).",
            referrer="no-referrer",
        )
    return engine, record


def _check_unused(claims: links.ActionToken, record: Any) -> None:
    used = links.is_used(record.history, claims.jti)
    if used is not None:
        raise _link_error(
            links.UsedActionLink(
                f"{used.get('actor', 'someone')} used it at {used.get('at', '?')} ({used.get('event', claims.action)})."
            ),
            record=_summary(record),
        )


async def _check_readable(user: Any, record: Any) -> None:
    """A record of a Dag the user may not read is, for them, a record that does not exist."""
    if not (await auth.read_scope(user)).allows(record.dag_id):
        raise PageError(
            404,
            "No such escalation",
            "The escalation this link is for does not exist (any more).",
            referrer="no-referrer",
        )


async def _check_allowed(user: Any, record: Any, action: str) -> None:
    try:
        await auth.authorize_write(user, record.dag_id)
    except HTTPException:
        raise PageError(
            403,
            f"You may not {action} this escalation",
            f"{auth.actor_name(user)} lacks the permission to change runs of this Dag, "
            "which acting on its escalations needs.",
            referrer="no-referrer",
            record=_summary(record),
        ) from None


def _check_applies(record: Any, action: str) -> None:
    if not can(action, record.state):
        by = (
            record.acknowledged_by
            if record.state == "acknowledged"
            else (record.resolved_by or record.metadata.get("cancelled_by"))
        )
        raise PageError(
            409,
            f"This escalation cannot be {_DONE[action]} any more",
            f"It is {record.state}" + (f" (by {by})." if by else "."),
            referrer="no-referrer",
            record=_summary(record),
        )


def _summary(record: Any) -> dict[str, Any]:
    """What the pages show of a record: plain values, escaped by the templates."""
    context = record.context if isinstance(record.context, dict) else {}
    items = []
    for key, value in list(context.items())[:40]:
        text = value if isinstance(value, str) else repr(value)
        items.append((str(key)[:200], text[:2000]))
    return {
        "id": record.id,
        "incident_id": record.incident_id,
        "policy_name": record.policy_name,
        "state": record.state,
        "level": record.current_level,
        "created_at": record.created_at.isoformat() if record.created_at else "",
        "acknowledged_by": record.acknowledged_by,
        "context": items,
    }


def _record_url(request: Request, record_id: str) -> str:
    """The escalation's page inside the Airflow UI (the nav entry's iframe follows the path)."""
    from urllib.parse import quote

    return f"{airflow_root(request)}/plugin/{NAV_URL_ROUTE}/escalation/ui/records/{quote(record_id, safe='')}"


@router.get("/{token}")
async def confirm(request: Request, token: str) -> Any:
    claims = _verify(request, token)
    user = await page_reader(request)
    _, record = await _record(request, claims)
    await _check_readable(user, record)
    _check_unused(claims, record)
    _check_applies(record, claims.action)
    await _check_allowed(user, record, claims.action)
    # same-origin, not no-referrer: the form's POST then carries this origin (under no-referrer
    # browsers send "Origin: null"), and the link's URL still never leaves Airflow
    return render(
        request,
        "confirm.html",
        referrer="same-origin",
        claims=claims,
        verb=_VERB[claims.action],
        record=_summary(record),
        token=token,
        username=auth.actor_name(user),
        record_url=_record_url(request, record.id),
    )


@router.post("/{token}")
async def act(request: Request, token: str) -> Any:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise PageError(413, "The form is too large", referrer="no-referrer")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
    record_id, action = form.get("record_id"), form.get("action")
    if not record_id or not action:
        raise PageError(
            400,
            "This form is incomplete",
            "Open the link again and use the button on its page.",
            referrer="no-referrer",
        )
    claims = _verify(request, token, record_id=record_id, action=action)
    if not auth.same_origin(request):
        # the confirmation form is a form post with the session cookie: it must come from
        # Airflow's own origin ([api] base_url), never from another site
        raise PageError(
            403,
            "Refused",
            "The form was not posted from this Airflow's own pages (its Origin is not the Airflow base URL).",
            referrer="no-referrer",
        )
    user = await page_reader(request)
    engine, record = await _record(request, claims)
    await _check_readable(user, record)
    _check_unused(claims, record)
    _check_applies(record, claims.action)
    await _check_allowed(user, record, claims.action)
    actor = auth.actor_name(user)
    method = engine.acknowledge if claims.action == "acknowledge" else engine.resolve
    result = await method(record.id, actor, links.action_note(claims))
    if not result.success:
        _, again = await _record(request, claims)
        _check_unused(claims, again)  # a concurrent use of the same link won the race
        raise PageError(
            404 if result.code == "not_found" else 409,
            f"The escalation could not be {_DONE[claims.action]}",
            result.error or result.message,
            referrer="no-referrer",
            record=_summary(again),
        )
    return render(
        request,
        "done.html",
        referrer="no-referrer",
        verb=_VERB[claims.action],
        done=_DONE[claims.action],
        record=_summary(result.record),
        username=actor,
        record_url=_record_url(request, record.id),
    )
