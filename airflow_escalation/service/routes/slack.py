"""``POST /integrations/slack/{conn_id}``: the Acknowledge / Resolve buttons of Slack messages.

Slack posts an interaction (``application/x-www-form-urlencoded``, one field ``payload`` holding
JSON) to the Slack app's *Request URL* when someone clicks a button. The route, in order:

1. reads the Slack API connection ``conn_id`` and its ``signing_secret`` extra, and checks the
   request's signature and timestamp (``integrations.signatures.verify_slack``): a forged or stale
   request -- or one for a connection without a signing secret -- answers **401** and changes
   nothing;
2. takes the first ``escalation_acknowledge`` / ``escalation_resolve`` button of the payload
   (``value``: the record id); anything else is answered 200 and ignored;
3. refuses a payload already used (**401**): an action taken from Slack records
   ``via Slack (slack:<digest of the signature>)`` in the record's history, written by the same
   compare-and-swap as the action, in the store every API-server replica shares;
4. maps the Slack member to an escalation user (``integrations.directory``), takes that user's
   Airflow identity (``integrations.identity``) and asks the auth manager whether it may change
   runs of the record's Dag (``auth.authorize_write``, as for the REST API);
5. acts as that user, then replaces the message in place through the payload's ``response_url``
   ("Acknowledged by alice at 09:12", and the buttons still allowed).

Every refusal after the signature check (unknown member, no permission, a closed record) is
answered 200 with an *ephemeral* message to the member who clicked, saying why: Slack shows a
non-200 answer as a bare error. The messages are posted after the answer is sent (a background
task), so Slack's 3-second limit holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response

from airflow_escalation.core import bounds
from airflow_escalation.core.states import can
from airflow_escalation.service import auth
from airflow_escalation.service.deps import get_engine, run_store
from airflow_escalation.service.integrations import directory, identity
from airflow_escalation.service.integrations.signatures import SignatureRefused, used, verify_slack

log = logging.getLogger("airflow_escalation.slack")

# not in the OpenAPI schema: Slack calls it, not API clients (docs/channels.md)
router = APIRouter(prefix="/integrations/slack", tags=["integrations"], include_in_schema=False)

_ACTIONS = {"escalation_acknowledge": "acknowledge", "escalation_resolve": "resolve"}
_DONE = {"acknowledge": "acknowledged", "resolve": "resolved"}
_RESPONSE_URL_TIMEOUT = 5.0


def _refused(reason: str) -> JSONResponse:
    log.warning("Slack interaction refused (401): %s", reason)
    return JSONResponse(status_code=401, content={"detail": "request signature not accepted"})


def replay_marker(timestamp: str, signature: str) -> str:
    """What the history note of an action from Slack carries: one payload, one marker."""
    return "slack:" + hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()[:24]


async def _connection(conn_id: str) -> Any:
    from airflow_escalation.channels.base import airflow_connection

    return await asyncio.to_thread(airflow_connection, conn_id)


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20)
        data = json.loads(fields["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _button(payload: dict[str, Any]) -> tuple[str, str] | None:
    """``(action, record_id)`` of the first escalation button the payload reports."""
    if payload.get("type") != "block_actions":
        return None
    for item in payload.get("actions") or ():
        if not isinstance(item, dict):
            continue
        action, value = _ACTIONS.get(str(item.get("action_id"))), item.get("value")
        if action and isinstance(value, str) and 0 < len(value) <= bounds.MAX_RECORD_ID:
            return action, value
    return None


async def _post(response_url: Any, message: dict[str, Any]) -> None:
    """Post ``message`` to the interaction's ``response_url`` (signed by Slack with the payload)."""
    if not isinstance(response_url, str) or not response_url.startswith(("https://", "http://")):
        log.warning("Slack interaction without a usable response_url: cannot answer %r", message.get("text"))
        return
    import httpx

    try:
        async with httpx.AsyncClient(timeout=_RESPONSE_URL_TIMEOUT, follow_redirects=False) as client:
            answer = await client.post(response_url, json=message)
        if answer.status_code >= 300:
            log.warning("Slack response_url answered HTTP %d", answer.status_code)
    except httpx.HTTPError as exc:
        log.warning("cannot post to the Slack response_url: %s: %s", type(exc).__name__, exc)


def _tell(tasks: BackgroundTasks, payload: dict[str, Any], text: str) -> Response:
    """Answer 200 and tell the member who clicked (only them) ``text``."""
    tasks.add_task(
        _post, payload.get("response_url"), {"response_type": "ephemeral", "replace_original": False, "text": text}
    )
    return Response(status_code=200)


@router.post(
    "/{conn_id}",
    summary="Slack interactivity Request URL: the Acknowledge / Resolve buttons (Slack-signed)",
    responses={401: {"description": "not signed by Slack with the connection's signing secret, stale, or replayed"}},
)
async def interaction(conn_id: str, request: Request, tasks: BackgroundTasks) -> Response:
    body = await request.body()
    if len(body) > bounds.MAX_WEBHOOK_BYTES:
        return JSONResponse(status_code=413, content={"detail": f"body: at most {bounds.MAX_WEBHOOK_BYTES} bytes"})
    if len(conn_id) > bounds.MAX_NAME:
        return _refused("connection id too long")
    timestamp = request.headers.get("x-slack-request-timestamp") or ""
    signature = request.headers.get("x-slack-signature") or ""
    engine = get_engine(request)
    try:
        conn = await _connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - an unknown connection verifies nothing
        return _refused(f"connection {conn_id!r}: {exc}")
    from airflow_escalation.channels.base import SLACK_SIGNING_SECRET, connection_extra_value, normalize_conn_type

    secret = connection_extra_value(conn, SLACK_SIGNING_SECRET)
    if (
        normalize_conn_type(getattr(conn, "conn_type", "") or "") != "slack"
        or not isinstance(secret, str)
        or not secret
    ):
        return _refused(f"connection {conn_id!r} is not a slack connection with a {SLACK_SIGNING_SECRET!r} extra")
    try:
        verify_slack(secret, body, timestamp, signature, engine.clock.now())
    except SignatureRefused as exc:
        return _refused(str(exc))

    payload = _payload(body)
    if payload is None:
        return JSONResponse(status_code=400, content={"detail": "payload: expected a form field holding JSON"})
    button = _button(payload)
    if button is None:
        return Response(status_code=200)  # not one of our buttons (a link button, another app's)
    action, record_id = button
    marker = replay_marker(timestamp, signature)
    record = await run_store(engine, engine.store.get, record_id)
    if record is not None and used(record, marker):
        return _refused(f"payload already used on escalation {record_id}")

    slack_user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
    slack_id = str(slack_user.get("id") or "")[: bounds.MAX_NAME]
    extra = getattr(conn, "extra_dejson", None) or {}
    service = request.app.state.service
    lookup = directory.slack_user_lookup(directory.users_directory(service), extra)
    username = lookup(slack_id) if slack_id else None
    if username is None:
        return _tell(
            tasks,
            payload,
            f"You cannot act on escalations from Slack yet: your Slack account ({slack_id or 'unknown'}) "
            "is not linked to an escalation user. Ask an Airflow admin to add it to your entry in the "
            "users directory.",
        )
    try:
        user = await asyncio.to_thread(identity.airflow_user, username)
    except identity.IdentityUnavailable as exc:
        return _tell(tasks, payload, f"Refused: {exc}.")
    except Exception:  # the auth manager's own failure: refuse, say so, log it
        log.exception("cannot look up the Airflow user %r for a Slack click", username)
        return _tell(tasks, payload, f"Refused: the Airflow user {username} cannot be looked up now; try again.")
    if user is None:
        return _tell(tasks, payload, f"Refused: {username} is not an Airflow user here, so cannot {action}.")
    if record is None or not (await auth.read_scope(user)).allows(record.dag_id):
        return _tell(tasks, payload, "This escalation does not exist (any more).")
    if not await auth.may_edit(user, record.dag_id):
        return _tell(
            tasks,
            payload,
            f"Refused: {username} may not {action} this escalation (it needs permission to change runs "
            f"of Dag {record.dag_id or '(none)'}).",
        )
    if not can(action, record.state):
        return _tell(tasks, payload, _closed_text(record, action))
    method = engine.acknowledge if action == "acknowledge" else engine.resolve
    result = await method(record.id, username, f"via Slack ({marker})")
    if not result.success:
        again = await run_store(engine, engine.store.get, record.id)
        if again is not None and used(again, marker):
            return _refused(f"payload already used on escalation {record_id} (concurrently)")
        if again is not None and not can(action, again.state):
            return _tell(tasks, payload, _closed_text(again, action))
        return _tell(tasks, payload, f"Could not {action}: {bounds.truncate(result.error or result.message, 300)}")
    from airflow_escalation.channels.slack import acted_blocks

    done = result.record
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    blocks = acted_blocks(message.get("blocks"), action, username, engine.clock.now(), done.state, done.id)
    tasks.add_task(
        _post,
        payload.get("response_url"),
        # Slack's documented update: replace_original, with text (the notification fallback) and blocks
        {"replace_original": True, "text": message.get("text") or f"Escalation {_DONE[action]}", "blocks": blocks},
    )
    return Response(status_code=200)


def _closed_text(record: Any, action: str) -> str:
    by = record.acknowledged_by if record.state == "acknowledged" else record.resolved_by
    if record.state == "cancelled":
        by = record.metadata.get("cancelled_by")
    return f"Nothing to do: this escalation is already {record.state}" + (f" (by {by})." if by else ".")


#: the Slack provider's default connection (``SlackHook.default_conn_name``)
DEFAULT_CONN_ID = "slack_api_default"


@router.post("", summary="The same, through the connection slack_api_default")
async def interaction_default(request: Request, tasks: BackgroundTasks) -> Response:
    return await interaction(DEFAULT_CONN_ID, request, tasks)
