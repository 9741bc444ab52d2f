"""Checking that a request really comes from Slack or PagerDuty (docs/security.md).

* **Slack** signs each request with the app's *signing secret*: ``X-Slack-Signature:
  v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{raw body}">``. The check is
  ``slack_sdk``'s :class:`~slack_sdk.signature.SignatureVerifier` (the Slack provider's own
  client library), after the timestamp is checked to be at most
  :data:`~airflow_escalation.core.bounds.MAX_SIGNED_AGE_SECONDS` old (or ahead).
* **PagerDuty** (v3 webhooks) signs the raw body with the subscription's secret:
  ``X-PagerDuty-Signature: v1=<hex HMAC-SHA256>``, several comma-separated while a secret is
  rotated; one matching entry is enough. PagerDuty signs no time: the event's ``occurred_at``
  (inside the signed body) may be up to
  :data:`~airflow_escalation.core.bounds.MAX_PAGERDUTY_EVENT_AGE_SECONDS` old, since PagerDuty
  retries a failed delivery for about 20 minutes.

Both answer with :class:`SignatureRefused`, whose message says which check failed (for the log;
the caller answers 401 with a short, fixed text). Whether a payload was used before is the
record's history (:func:`used`): an action taken from a payload carries its marker in its note,
written by the same compare-and-swap as the action, so every API-server replica agrees.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from airflow_escalation.core import bounds


class SignatureRefused(Exception):
    """The request is not signed as it should be, or too old: answer 401, change nothing."""


class _FixedClock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def check_age(signed_at: float, now: datetime, what: str, max_past: int = bounds.MAX_SIGNED_AGE_SECONDS) -> None:
    """Refuse a signed time more than ``max_past`` seconds before ``now``, or more than
    ``MAX_SIGNED_AGE_SECONDS`` after it (clock skew)."""
    age = now.timestamp() - signed_at
    if age > max_past or -age > bounds.MAX_SIGNED_AGE_SECONDS:
        raise SignatureRefused(
            f"{what} is {int(age)} s from now; at most {max_past} s back "
            f"and {bounds.MAX_SIGNED_AGE_SECONDS} s ahead is accepted"
        )


def verify_slack(signing_secret: str, body: bytes, timestamp: str | None, signature: str | None, now: datetime) -> None:
    """Raise :class:`SignatureRefused` unless Slack signed ``body`` at ``timestamp`` recently."""
    from slack_sdk.signature import SignatureVerifier

    if not signature or not timestamp:
        raise SignatureRefused("X-Slack-Signature or X-Slack-Request-Timestamp is missing")
    if len(signature) > bounds.MAX_SIGNATURE_HEADER or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureRefused("X-Slack-Signature or X-Slack-Request-Timestamp is malformed")
    check_age(int(timestamp), now, "X-Slack-Request-Timestamp")
    verifier = SignatureVerifier(signing_secret, clock=_FixedClock(now.timestamp()))  # type: ignore[arg-type]
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        raise SignatureRefused("X-Slack-Signature does not match the body signed with the signing secret")


def pagerduty_signature(secret: str, body: bytes) -> str:
    """``v1=<hex>``: how PagerDuty signs ``body`` with ``secret``."""
    return "v1=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_pagerduty(secrets: Iterable[str], body: bytes, header: str | None) -> None:
    """Raise :class:`SignatureRefused` unless one ``v1=`` entry of ``header`` signs ``body``
    with one of ``secrets``."""
    if not header:
        raise SignatureRefused("X-PagerDuty-Signature is missing")
    if len(header) > bounds.MAX_SIGNATURE_HEADER:
        raise SignatureRefused("X-PagerDuty-Signature is too long")
    offered = [part.strip() for part in header.split(",") if part.strip().startswith("v1=")]
    if not offered:
        raise SignatureRefused("X-PagerDuty-Signature has no v1= signature")
    for secret in secrets:
        expected = pagerduty_signature(secret, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise SignatureRefused("no X-PagerDuty-Signature entry matches the body signed with the webhook secret")


def used(record: Any, marker: str) -> bool:
    """Whether an action of ``record``'s history was taken from the payload ``marker`` names.

    The note carries the marker in parentheses (``via Slack (<marker>)``): matched whole, so one
    event id that begins another's is not taken for it."""
    needle = f"({marker})"
    for event in getattr(record, "history", None) or ():
        details = event.get("details") if isinstance(event, dict) else None
        note = details.get("note") if isinstance(details, dict) else None
        if isinstance(note, str) and needle in note:
            return True
    return False
