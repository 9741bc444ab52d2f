"""One-click acknowledge/resolve links for notifications: signed, expiring, usable once.

A notification (Slack, e-mail, webhook) carries two links such as
``https://airflow.example.com/escalation/act/<token>``. The token says which escalation record
and which action (``acknowledge`` or ``resolve``), when it expires, and carries a random id
(``jti``); it is signed with HMAC-SHA256 under a key derived from a server secret (by default
``[api_auth] jwt_secret``, else ``[api] secret_key``) and a purpose string, so it cannot be
altered, moved to another record or action, or made by anyone without the secret::

    from airflow_escalation.service.links import action_url, default_link_secret, make_action_token

    token = make_action_token(record.id, "acknowledge", secret=default_link_secret())
    url = action_url("https://airflow.example.com", token)

Opening the link (``GET``) never changes anything: it shows a confirmation page (which incident,
which action, when the link expires) with a button that ``POST``s the form back to the same URL.
The action is performed by the logged-in Airflow user, who needs the same permission as the
REST API's action routes (see ``service/ui/act.py`` and docs/ui.md).

This module imports nothing from Airflow at import time (channels may build links anywhere).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Optional

Action = Literal["acknowledge", "resolve"]
ACTIONS: tuple[str, ...] = ("acknowledge", "resolve")

#: the URL path of a link under the Airflow base URL: ``{base_url}/escalation/act/{token}``
ACT_PATH = "/escalation/act/"
#: default lifetime of a link (one day)
DEFAULT_TTL_SECONDS = 86400
#: longest accepted token (a longer one is refused before any decoding)
MAX_TOKEN_LENGTH = 1024

_VERSION = 1
_PURPOSE = b"airflow-escalation/action-link/v1"
_ACTION_CODES = {"acknowledge": "ack", "resolve": "res"}
_CODE_ACTIONS = {v: k for k, v in _ACTION_CODES.items()}
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_JTI_BYTES = 12


# ---------------------------------------------------------------------------------- errors


class ActionLinkError(Exception):
    """A link that cannot be used. ``status`` is the HTTP status the link pages answer with."""

    status = 400
    title = "This link is not valid"


class InvalidActionLink(ActionLinkError):
    """Malformed, tampered with, or signed with another secret (400)."""


class ExpiredActionLink(ActionLinkError):
    """Past its expiry (410)."""

    status = 410
    title = "This link has expired"


class WrongRecordActionLink(ActionLinkError):
    """Presented for another record or action than the one it was made for (409)."""

    status = 409
    title = "This link is for another escalation or action"


class UsedActionLink(ActionLinkError):
    """Already used once (409)."""

    status = 409
    title = "This link was already used"


class ActionLinkConfigError(RuntimeError):
    """No server secret is configured to sign or check links."""


# ---------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class ActionToken:
    """What a verified token says."""

    record_id: str
    action: str
    issued_at: datetime
    expires_at: datetime
    jti: str

    @property
    def marker(self) -> str:
        """The text the engine records in the action's history note; its presence means *used*."""
        return used_marker(self.jti)


def used_marker(jti: str) -> str:
    return f"link:{jti}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ActionLinkConfigError("an empty secret cannot sign action links")
    # a key of its own for this purpose: a link signature is never a valid signature of
    # anything else made with the same server secret (JWTs, session cookies)
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def _sign(secret: str | bytes, payload_b64: str) -> str:
    return _b64(hmac.new(_key(secret), payload_b64.encode("ascii"), hashlib.sha256).digest())


def _utc(now: Optional[datetime]) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC), got a naive datetime")
    return now.astimezone(timezone.utc)


def make_action_token(
    record_id: str,
    action: Literal["acknowledge", "resolve"],
    *,
    secret: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: datetime | None = None,
) -> str:
    """A signed token that lets a logged-in user ``action`` the escalation ``record_id`` once.

    It expires ``ttl_seconds`` after ``now`` (default: the current time). ``secret`` is the
    server secret the API server checks links with (:func:`default_link_secret`).
    """
    if action not in _ACTION_CODES:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not isinstance(record_id, str) or not record_id:
        raise ValueError(f"record_id must be a non-empty string, got {record_id!r}")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)) or not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be a positive number, got {ttl_seconds!r}")
    issued = _utc(now)
    iat = int(issued.timestamp())
    payload = {
        "v": _VERSION,
        "r": record_id,
        "a": _ACTION_CODES[action],
        "i": iat,
        "e": iat + int(ttl_seconds),
        "j": _b64(os.urandom(_JTI_BYTES)),
    }
    payload_b64 = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    token = f"{payload_b64}.{_sign(secret, payload_b64)}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"record_id is too long for a link ({len(record_id)} characters)")
    return token


def action_url(base_url: str, token: str) -> str:
    """``{base_url}/escalation/act/{token}``: the link to put in a notification."""
    return f"{base_url.rstrip('/')}{ACT_PATH}{token}"


def verify_action_token(
    token: str, *, secret: str, now: datetime | None = None, record_id: str | None = None, action: str | None = None
) -> ActionToken:
    """The token's claims if it is authentic and not expired; else an :class:`ActionLinkError`.

    ``record_id`` / ``action``, when given, must be the ones the token was made for
    (:class:`WrongRecordActionLink` otherwise). Whether it was already used is the caller's
    question (the record's history says it: :func:`is_used`).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _TOKEN_RE.match(token):
        raise InvalidActionLink("the link is malformed (was it cut or changed?)")
    payload_b64, signature = token.split(".")
    if not hmac.compare_digest(signature, _sign(secret, payload_b64)):
        raise InvalidActionLink(
            "the link's signature does not match: it was changed, or it was not made by this Airflow"
        )
    try:
        payload = json.loads(_unb64(payload_b64))
        if payload.get("v") != _VERSION:
            raise ValueError("version")
        claims = ActionToken(
            record_id=str(payload["r"]),
            action=_CODE_ACTIONS[payload["a"]],
            issued_at=datetime.fromtimestamp(int(payload["i"]), timezone.utc),
            expires_at=datetime.fromtimestamp(int(payload["e"]), timezone.utc),
            jti=str(payload["j"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error, OverflowError, OSError):
        raise InvalidActionLink("the link's content cannot be read") from None
    if _utc(now) >= claims.expires_at:
        raise ExpiredActionLink(f"the link expired at {claims.expires_at.isoformat()}")
    if record_id is not None and record_id != claims.record_id:
        raise WrongRecordActionLink(f"the link is for escalation {claims.record_id!r}, not {record_id!r}")
    if action is not None and action != claims.action:
        raise WrongRecordActionLink(f"the link is to {claims.action}, not to {action}")
    return claims


def is_used(history: Any, jti: str) -> Optional[dict]:
    """The history event that recorded the use of link ``jti``, if any."""
    marker = used_marker(jti)
    for event in history or ():
        details = event.get("details") if isinstance(event, dict) else None
        note = details.get("note") if isinstance(details, dict) else None
        if isinstance(note, str) and marker in note:
            return event
    return None


def action_note(claims: ActionToken) -> str:
    """The history note an action taken through a link carries (marks the link used)."""
    return f"via one-click link ({claims.marker})"


# ---------------------------------------------------------------------------------- config


def default_link_secret(conf: Any = None) -> str:
    """The server secret links are signed with: ``[api_auth] jwt_secret``, else ``[api] secret_key``.

    Every API-server worker and replica must have the same value (Airflow needs that already for
    its own tokens); changing it invalidates every link sent before.
    """
    if conf is None:
        from airflow.configuration import conf as airflow_conf

        conf = airflow_conf
    for section, key in (("api_auth", "jwt_secret"), ("api", "secret_key")):
        try:
            value = conf.get(section, key, fallback="")
        except Exception:  # noqa: BLE001 - a missing section
            value = ""
        if value:
            return str(value)
    raise ActionLinkConfigError(
        "one-click links need a server secret: set [api_auth] jwt_secret (or [api] secret_key), "
        "the same on every API-server worker and replica"
    )


def signed_action_urls(
    record_id: str,
    *,
    base_url: str,
    secret: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: datetime | None = None,
) -> dict[str, str]:
    """``{"acknowledge": url, "resolve": url}`` for a notification about ``record_id``."""
    key = secret if secret is not None else default_link_secret()
    return {
        action: action_url(
            base_url,
            make_action_token(
                record_id,
                action,
                secret=key,  # type: ignore[arg-type]
                ttl_seconds=ttl_seconds,
                now=now,
            ),
        )
        for action in ACTIONS
    }
