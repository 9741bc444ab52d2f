"""``POST /integrations/pagerduty/{conn_id}``: PagerDuty (v3 webhooks) acknowledging or resolving.

A PagerDuty webhook subscription posts JSON ``{"event": {...}}`` signed with its secret
(``X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the body>``, several comma-separated while a
secret is rotated). ``conn_id`` is the ``pagerduty_events`` connection the escalations page
through; its ``webhook_secret`` extra holds the subscription's secret (a list, or several
comma-separated, while rotating). The route, in order:

1. checks the signature (**401** and nothing changes when no entry matches, or the connection
   has no ``webhook_secret``), then that the event's ``occurred_at`` is at most
   ``bounds.MAX_PAGERDUTY_EVENT_AGE_SECONDS`` old -- PagerDuty retries a delivery for about 20
   minutes -- and at most ``bounds.MAX_SIGNED_AGE_SECONDS`` ahead (**401**: stale);
2. acts only on ``incident.acknowledged`` and ``incident.resolved``; other events answer 200
   ``{"ignored": ...}``;
3. finds the record: the incident's ``incident_key`` (in ``event.data`` of every ``incident``
   event) is the Events API ``dedup_key`` the service sent, the record id -- when the PagerDuty
   service creates an incident per alert; one the alert was grouped into keeps its own key and
   is answered 200, ignored (docs/channels.md). A record that never paged through ``conn_id`` is not this subscription's to change
   (200, ignored);
4. refuses an event already used (**401**): the action records
   ``via PagerDuty (pagerduty:<event id>)`` in the record's history, by the same compare-and-swap
   as the action, in the store all replicas share;
5. acknowledges or resolves the record as ``<agent> (PagerDuty)``. The acknowledge/resolve
   events the service sends PagerDuty when a record is acknowledged or resolved
   (``service/delivery.py``) skip ``conn_id`` for this change: PagerDuty is not told what it
   said itself (no echo loop).

A record already acknowledged or closed answers 200 with what it is (PagerDuty would retry a
non-2xx answer for something no retry can change).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from airflow_escalation.core import bounds
from airflow_escalation.core.states import can
from airflow_escalation.service.deps import get_engine, run_store
from airflow_escalation.service.integrations.signatures import SignatureRefused, check_age, used, verify_pagerduty

log = logging.getLogger("airflow_escalation.pagerduty")

# not in the OpenAPI schema: PagerDuty calls it, not API clients (docs/channels.md)
router = APIRouter(prefix="/integrations/pagerduty", tags=["integrations"], include_in_schema=False)

_EVENTS = {"incident.acknowledged": "acknowledge", "incident.resolved": "resolve"}


def _refused(reason: str) -> JSONResponse:
    log.warning("PagerDuty webhook refused (401): %s", reason)
    return JSONResponse(status_code=401, content={"detail": "request signature not accepted"})


def _ignored(reason: str) -> JSONResponse:
    return JSONResponse(status_code=200, content={"ignored": bounds.truncate(reason, 300)})


def replay_marker(event_id: str) -> str:
    return f"pagerduty:{event_id}"


def _secrets(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return []
    return [s.strip() for s in value if isinstance(s, str) and s.strip()]


def _pages_through(record: Any, conn_id: str) -> bool:
    for level in (record.policy_snapshot or {}).get("levels") or ():
        for target in level.get("targets") or ():
            if isinstance(target, dict) and target.get("conn_id") == conn_id:
                return True
    return False


@router.post(
    "/{conn_id}",
    summary="PagerDuty v3 webhook: incident acknowledged / resolved (PagerDuty-signed)",
    responses={401: {"description": "not signed with the connection's webhook secret, stale, or replayed"}},
)
async def webhook(conn_id: str, request: Request) -> JSONResponse:
    body = await request.body()
    if len(body) > bounds.MAX_WEBHOOK_BYTES:
        return JSONResponse(status_code=413, content={"detail": f"body: at most {bounds.MAX_WEBHOOK_BYTES} bytes"})
    if len(conn_id) > bounds.MAX_NAME:
        return _refused("connection id too long")
    engine = get_engine(request)
    from airflow_escalation.channels.base import (
        PAGERDUTY_WEBHOOK_SECRET,
        airflow_connection,
        connection_extra_value,
        normalize_conn_type,
    )

    try:
        conn = await asyncio.to_thread(airflow_connection, conn_id)
    except Exception as exc:  # noqa: BLE001 - an unknown connection verifies nothing
        return _refused(f"connection {conn_id!r}: {exc}")
    secrets = _secrets(connection_extra_value(conn, PAGERDUTY_WEBHOOK_SECRET))
    if normalize_conn_type(getattr(conn, "conn_type", "") or "") != "pagerduty_events" or not secrets:
        return _refused(f"connection {conn_id!r} is not a pagerduty_events connection with a webhook_secret extra")
    try:
        verify_pagerduty(secrets, body, request.headers.get("x-pagerduty-signature"))
    except SignatureRefused as exc:
        return _refused(str(exc))

    try:
        event = json.loads(body)["event"]
        event_type, event_id = event["event_type"], event["id"]
        occurred_at = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
        if not isinstance(event_type, str) or not isinstance(event_id, str) or occurred_at.tzinfo is None:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JSONResponse(
            status_code=400, content={"detail": "event: expected id, event_type and occurred_at (ISO 8601, with zone)"}
        )
    try:
        check_age(
            occurred_at.timestamp(), engine.clock.now(), "event.occurred_at", bounds.MAX_PAGERDUTY_EVENT_AGE_SECONDS
        )
    except SignatureRefused as exc:
        return _refused(str(exc))
    action = _EVENTS.get(event_type)
    if action is None:
        return _ignored(f"event type {event_type!r} changes nothing here")
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    record_id = data.get("incident_key")
    if not isinstance(record_id, str) or not 0 < len(record_id) <= bounds.MAX_RECORD_ID:
        return _ignored("the incident has no incident_key the escalation service sent")
    record = await run_store(engine, engine.store.get, record_id)
    if record is None or not _pages_through(record, conn_id):
        return _ignored(f"no escalation {record_id!r} pages through connection {conn_id!r}")
    marker = replay_marker(bounds.truncate(event_id, 100))
    if used(record, marker):
        return _refused(f"event {event_id!r} already used on escalation {record_id}")
    if not can(action, record.state):
        return _ignored(f"escalation {record_id} is already {record.state}")
    agent = event.get("agent") if isinstance(event.get("agent"), dict) else {}
    who = agent.get("summary") if isinstance(agent.get("summary"), str) and agent.get("summary") else "someone"
    actor = f"{who[:200]} (PagerDuty)"
    from airflow_escalation.service.delivery import told_by

    method = engine.acknowledge if action == "acknowledge" else engine.resolve
    with told_by(conn_id):
        result = await method(record.id, actor, f"via PagerDuty ({marker})")
    if not result.success:
        again = await run_store(engine, engine.store.get, record.id)
        if again is not None and used(again, marker):
            return _refused(f"event {event_id!r} already used on escalation {record_id} (concurrently)")
        return _ignored(result.error or result.message)
    return JSONResponse(status_code=200, content={"escalation": record.id, "state": result.record.state})


#: the PagerDuty provider's default Events API connection (``PagerdutyEventsHook.default_conn_name``)
DEFAULT_CONN_ID = "pagerduty_events_default"


@router.post("", summary="The same, through the connection pagerduty_events_default")
async def webhook_default(request: Request) -> JSONResponse:
    return await webhook(DEFAULT_CONN_ID, request)
