"""Every bound on what a caller may send, in one place (docs/security.md).

The core (engine, policies, YAML loading) and the service (request schemas, routes) both ask
these functions, so a value refused over REST is refused from Python too, with the same words:
each ``ValueError`` starts with the field it is about. The read side uses :func:`scrub` so that
a value stored before a bound existed (or by another writer) never breaks a listing.
"""

from __future__ import annotations

import json
import math
from typing import Any

# ------------------------------------------------------------------------------ the limits

MAX_NAME = 255  # incident ids, policy names, actors, target names/identifiers, conn ids
MAX_IDENTIFIER = 2048  # a target's identifier (an address, a channel, a URL path)
MAX_RECORD_ID = 64  # record ids are 32 hex characters; longer ones are simply not found
MAX_NOTE = 4000  # acknowledge/resolve notes, cancel reasons
MAX_CONTEXT_BYTES = 64 * 1024  # a context (or metadata mapping), serialized as compact UTF-8 JSON
MAX_DEPTH = 32  # nesting of mappings and lists inside a context, metadata or conditions
MAX_POLICY_BYTES = 256 * 1024  # one policy definition, serialized as compact UTF-8 JSON
MAX_LEVELS = 100  # levels in one policy
MAX_TARGETS = 100  # targets in one level
MAX_REPEAT_COUNT = 1000  # reminders of one level
MAX_POLICIES = 1000  # policies in one policies file (or one validation request)
MAX_YAML_BYTES = 1024 * 1024  # a policies file, or YAML text sent to POST /policies/validate
MAX_YAML_DEPTH = 64  # nesting of YAML collections (the policy model needs fewer than 10)
MAX_BODY_BYTES = 2 * 1024 * 1024  # a request body to the service (413 beyond)
MAX_ERROR_CHARS = 500  # an error message in a response, a validation report or last_error
MAX_LIST_LIMIT = 500  # records per page of GET /escalations
MAX_LIST_OFFSET = 1_000_000  # records skipped by GET /escalations (use filters beyond that)
MAX_RETRIGGER_EVENTS = 20  # "retriggered" history events per record; later joins are counted
MAX_ROUTES = 1000  # failure routes in one policies file (docs/routes.md)
MAX_ROUTE_VALUES = 100  # tags or owners one route lists
MAX_ROUTE_TRY = 1000  # a route's min_try
MAX_ROUTE_OVER_MINUTES = 60 * 24 * 30  # a route's over_minutes (30 days)
MAX_ROUTE_SEVERITY = 64  # a route's severity
MAX_DETECT_BATCH = 500  # failures the detector reads from the metadata database per query
MAX_SIGNED_AGE_SECONDS = 5 * 60  # a signed Slack request's timestamp (either way); how far ahead occurred_at may be
# a PagerDuty event's occurred_at, back: PagerDuty retries a delivery for about 20 minutes
# (and holds later ones behind it), so a retried event is older than Slack's five minutes
MAX_PAGERDUTY_EVENT_AGE_SECONDS = 30 * 60
# a Slack interaction or PagerDuty webhook body (before any parsing): PagerDuty delivers up to
# 256 KB best-effort, and Slack echoes the whole message (url-encoded JSON) with each click
MAX_WEBHOOK_BYTES = 256 * 1024
MAX_SIGNATURE_HEADER = 2048  # X-Slack-Signature / X-PagerDuty-Signature (several v1= entries)

TRUNCATED = "…"


def truncate(message: Any, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` as text, cut to ``limit`` characters (with a marker saying how much was cut)."""
    text = message if isinstance(message, str) else str(message)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}{TRUNCATED} ({len(text) - limit} more characters)"


def _utf8_ok(text: str) -> bool:
    if text.isascii():  # the usual case, without encoding a copy
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, field: str, max_chars: int = MAX_NAME, *, allow_empty: bool = True) -> str:
    """``value`` if it is a string of at most ``max_chars`` characters and valid UTF-8."""
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{field}: must be a non-empty string")
    if len(value) > max_chars:
        raise ValueError(f"{field}: at most {max_chars} characters, got {len(value)}")
    if not _utf8_ok(value):
        raise ValueError(f"{field}: not valid UTF-8 (a lone surrogate such as '\\ud800')")
    return value


def _first_problem(value: Any, field: str, max_depth: int) -> str | None:
    """Where ``value`` is nested too deep or holds text that is not UTF-8 (None: nowhere)."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if not _utf8_ok(item):
                return f"{path}: not valid UTF-8 (a lone surrogate such as '\\ud800')"
        elif isinstance(item, dict):
            if depth >= max_depth:
                return f"{path}: nested deeper than {max_depth} levels"
            for key, child in item.items():
                if isinstance(key, str) and not _utf8_ok(key):
                    return f"{path}: a key is not valid UTF-8 (a lone surrogate such as '\\ud800')"
                stack.append((child, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]", depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth >= max_depth:
                return f"{path}: nested deeper than {max_depth} levels"
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{path}: must be a finite number, got {item!r}"
    return None


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (objects JSON cannot hold count as their str)."""
    return len(
        json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass")
    )


def check_json(value: Any, field: str, *, max_bytes: int = MAX_CONTEXT_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` if it is JSON of at most ``max_bytes`` bytes, ``max_depth`` levels, UTF-8 text.

    The depth is checked first, without recursion, so a 100,000-level value costs no stack.
    """
    problem = _first_problem(value, field, max_depth)
    if problem is not None:
        raise ValueError(problem)
    size = json_size(value)
    if size > max_bytes:
        raise ValueError(f"{field}: at most {max_bytes} bytes as JSON, got {size}")
    return value


def check_policy_json(value: Any, field: str) -> Any:
    """``value`` if it is bounded as one policy as data (EscalationPolicy.to_dict() form) is."""
    return check_json(value, field, max_bytes=MAX_POLICY_BYTES, max_depth=MAX_DEPTH + 4)


def check_document_json(value: Any, field: str) -> Any:
    """``value`` if it is bounded as a whole policy document is (as its YAML text would be)."""
    return check_json(value, field, max_bytes=MAX_YAML_BYTES, max_depth=MAX_DEPTH + 6)


def check_mapping(value: Any, field: str, **limits: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{field}: expected a mapping, got {type(value).__name__}")
    check_json(value, field, **limits)
    return value


def scrub(value: Any, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_CONTEXT_BYTES) -> Any:
    """A copy of stored ``value`` that any reader can serialize: text made valid UTF-8 (lone
    surrogates become '?'), nesting beyond ``max_depth`` and values beyond ``max_bytes``
    replaced by a note saying so. ``value`` itself when it needs nothing (the usual case)."""
    if _first_problem(value, "value", max_depth) is not None:
        value = _scrubbed(value, max_depth, 0)
    try:
        if json_size(value) <= max_bytes:
            return value
    except (TypeError, ValueError, RecursionError):
        pass
    return {"_truncated": f"stored value larger than {max_bytes} bytes as JSON"}


def _scrubbed(value: Any, max_depth: int, depth: int) -> Any:
    if isinstance(value, str):
        return value if _utf8_ok(value) else value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list, tuple)) and depth >= max_depth:
        return f"(nested deeper than {max_depth} levels)"
    if isinstance(value, dict):
        return {
            (_scrubbed(k, max_depth, depth) if isinstance(k, str) else k): _scrubbed(v, max_depth, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, max_depth, depth + 1) for v in value]
    return value


# ------------------------------------------------------------------------------ on call
# docs/oncall.md: the policies file's users/schedules/maintenance_windows sections,
# and the silences and overrides created at run time
MAX_USERS = 1000  # users in the directory
MAX_CONTACTS = 10  # contact methods of one user
MAX_SCHEDULES = 200  # schedules in the policies file
MAX_LAYERS = 10  # layers of one schedule
MAX_PARTICIPANTS = 200  # participants of one rotation
MAX_RESTRICTIONS = 20  # time-of-day/week restrictions of one layer
MAX_SHIFT_HOURS = 24 * 7 * 52  # one shift: at most a year
MAX_WINDOWS = 200  # maintenance windows in the policies file
MAX_WINDOW_SCOPE = 100  # dag_ids (or policies) one maintenance window names
MAX_WINDOW_MINUTES = 7 * 24 * 60  # one maintenance window lasts at most a week
MAX_SILENCES = 1000  # silences not yet expired at once (a new one beyond is refused)
MAX_OVERRIDES = 1000  # overrides not yet over at once, over all schedules
MAX_ONCALL_SPAN_DAYS = 400  # a silence's or an override's length, from its start
MAX_ONCALL_HORIZON_DAYS = 62  # how far ahead "next handoffs" and the on-call strip look
MAX_HANDOFFS = 200  # handoffs listed by one request
