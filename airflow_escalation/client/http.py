"""Pure-HTTP client of the escalation service (the contract is ``docs/api.md``).

It imports nothing from Airflow, so it works from any Python process: a script, a CI job, another
scheduler. Inside Airflow use :class:`airflow_escalation.hooks.escalation.EscalationHook`, which
builds this client from an Airflow connection.

Every route has a sync method and an ``a``-prefixed async twin. Answers are the JSON of the
contract as plain dicts (serialisable: fit for XCom and trigger events); ``as_result``,
``as_record``, ``as_policy`` and ``as_stats`` turn them into the core model objects.

Failures:

- connection errors, timeouts, HTTP 500/502/503/504 (and proxies' 52x) and 429 are retried ``retries`` times with exponential
  backoff (``backoff * 2**n``, jittered, capped at ``max_backoff``; ``Retry-After`` is honoured up
  to that cap); after the last one :class:`EscalationServiceUnavailable` names the URL;
- 404 raises :class:`EscalationNotFound`, 409 :class:`EscalationConflict`, 401/403
  :class:`EscalationAuthError`, any other 4xx :class:`EscalationAPIError`; 4xx is never retried;
- a 401 with refreshable credentials (username/password, or a ``token_provider``) drops the
  cached token, gets a new one and retries once.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from airflow_escalation.client.errors import (
    EscalationAPIError,
    EscalationAuthError,
    EscalationConflict,
    EscalationNotFound,
    EscalationServiceUnavailable,
)

if TYPE_CHECKING:
    from airflow_escalation.core.models import (
        EscalationPolicy,
        EscalationRecord,
        EscalationResult,
        EscalationStats,
    )

DEFAULT_API_PATH = "/escalation/api/v1"
TOKEN_PATH = "/auth/token"
USER_AGENT = "airflow-escalation-client/0.1"

TokenProvider = Callable[[], Any]  # returns a token string (or an awaitable of one, in async calls)


def split_base_url(base_url: str, api_path: str = DEFAULT_API_PATH) -> tuple[str, str]:
    """``(airflow_base, api_base)`` from what the user gave.

    Accepts the Airflow API server's base URL (``http://host:8080`` or with a sub-path), the
    service's mount (``.../escalation``) or the API itself (``.../escalation/api/v1``). A bare
    ``host:port`` gets ``http://``.
    """
    if not base_url or not base_url.strip():
        raise ValueError("base_url: must be the Airflow API server URL, got an empty value")
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url: expected an http(s) URL, got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url: must not carry a query or fragment, got {base_url!r}")
    api = "/" + api_path.strip("/")
    if url.endswith(api):
        return url[: -len(api)], url
    mount = api.rsplit("/api/", 1)[0] if "/api/" in api else ""
    if mount and url.endswith(mount):
        root = url[: -len(mount)]
        return root, root + api
    return url, url + api


def _detail(response: httpx.Response) -> tuple[str, Any]:
    """The service's explanation of an error answer, flattened to one line."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:300] or response.reason_phrase or f"HTTP {response.status_code}"), text
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                msg = item.get("msg", "")
                parts.append(f"{loc}: {msg}" if loc else str(msg))
            else:
                parts.append(str(item))
        return "; ".join(parts) or str(body), body
    if isinstance(detail, dict):
        return (detail.get("message") or detail.get("error") or str(detail)), body
    return str(detail), body


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


# transient: rate limited, server error, bad gateway, unavailable, gateway timeout, and the
# proxies' 52x; not 501 Not Implemented, 505, 511 and the like, which a retry will not change
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


def _is_retryable_status(status: int) -> bool:
    return status in _RETRYABLE or 520 <= status <= 529


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple, set)):
            value = [str(v) for v in value]
            if not value:
                continue
        out[key] = value
    return out


def _policy_dict(policy: Any) -> dict[str, Any]:
    if hasattr(policy, "to_dict"):
        return policy.to_dict()
    if not isinstance(policy, dict):
        raise TypeError(f"policy: expected a mapping or an EscalationPolicy, got {type(policy).__name__}")
    return policy


@dataclass(frozen=True)
class _Call:
    """One route call: what to send and how to unwrap the answer."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    unwrap: str | None = None  # key of the answer to return instead of the whole object


def _rid(record_id: str) -> str:
    if not isinstance(record_id, str) or not record_id:
        raise ValueError(f"record_id: must be a non-empty string, got {record_id!r}")
    return quote(record_id, safe="")


# --------------------------------------------------------------------------- route builders
# One builder per route: the sync and async methods share them.


def _trigger_call(
    incident_id: str,
    context: dict[str, Any] | None,
    policy_name: str | None,
    severity: str | None,
    trigger_type: str | None,
    policy: Any,
) -> _Call:
    if not isinstance(incident_id, str) or not incident_id:
        raise ValueError(f"incident_id: must be a non-empty string, got {incident_id!r}")
    ctx = dict(context or {})
    if severity is not None:
        ctx["severity"] = severity
    body: dict[str, Any] = {"incident_id": incident_id, "context": ctx}
    if policy_name is not None:
        body["policy_name"] = policy_name
    if trigger_type is not None:
        body["trigger_type"] = getattr(trigger_type, "value", trigger_type)
    if policy is not None:
        body["policy"] = _policy_dict(policy)
    return _Call("POST", "/escalations", json=body)


def _list_call(
    state: str | Sequence[str] | None,
    policy: str | None,
    incident: str | None,
    dag_id: str | None,
    active: bool | None,
    limit: int | None,
    offset: int | None,
    ids: Sequence[str] | None = None,
) -> _Call:
    if isinstance(state, str):
        state = [state]
    elif state is not None:
        state = [getattr(s, "value", s) for s in state]
    if isinstance(ids, str):
        ids = [ids]
    joined = ",".join(str(i) for i in ids) if ids else None
    params = _clean(
        {
            "state": state,
            "policy": policy,
            "incident": incident,
            "dag_id": dag_id,
            "active": active,
            "ids": joined,
            "limit": limit,
            "offset": offset,
        }
    )
    return _Call("GET", "/escalations", params=params)


def _action_call(record_id: str, action: str, body: dict[str, Any]) -> _Call:
    return _Call("POST", f"/escalations/{_rid(record_id)}/{action}", json=body)


def _validate_call(policy: Any, yaml: str | None) -> _Call:
    if (policy is None) == (yaml is None):
        raise ValueError("validate_policy: give exactly one of policy= or yaml=")
    body = {"policy": _policy_dict(policy)} if policy is not None else {"yaml": yaml}
    return _Call("POST", "/policies/validate", json=body)


# --------------------------------------------------------------------------- the client


class EscalationClient:
    """Client of the escalation service REST API (sync and async).

    :param base_url: the Airflow API server URL (``http://localhost:8080``); the API is at
        ``{base_url}/escalation/api/v1`` and tokens come from ``{base_url}/auth/token``. The
        service's mount or API URL is accepted too.
    :param token: a bearer token to send as is (not refreshable).
    :param token_provider: a callable returning a bearer token, called before every request
        (cache inside it). On a 401 its ``invalidate()`` method, if any, is called and the
        request is retried once with a new token.
    :param username: with ``password``, exchanged at ``POST /auth/token`` for a token, which is
        cached and renewed once when the service answers 401.
    :param timeout: seconds for each HTTP request (connect, read, write, pool).
    :param retries: how many times a transient failure (connection error, timeout, 5xx, 429) is
        retried; ``0`` tries once.
    :param backoff: first retry delay in seconds; doubled each retry, capped at ``max_backoff``.
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    :param api_path: where the API lives under the base URL.
    :param token_url: override the token endpoint (default ``{airflow_base}/auth/token``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        verify: bool | str = True,
        api_path: str = DEFAULT_API_PATH,
        token_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if sum(x is not None for x in (token, token_provider, username)) > 1:
            raise ValueError("give at most one of token=, token_provider= or username=/password=")
        if (username is None) != (password is None):
            raise ValueError("username= and password= go together")
        if timeout is None or timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries!r}")
        if backoff < 0:
            raise ValueError(f"backoff: must be >= 0, got {backoff!r}")
        self.airflow_url, self.api_url = split_base_url(base_url, api_path)
        self.token_url = token_url or self.airflow_url + TOKEN_PATH
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.verify = verify
        self.username = username
        self._password = password
        self._static_token = token
        self._token_provider = token_provider
        self._login_token: str | None = None
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        self._lock = threading.Lock()  # guards the lazy httpx.Client
        self._login_lock = threading.Lock()  # one login at a time
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        auth = (
            "password"
            if self.username
            else "token_provider"
            if self._token_provider
            else "token"
            if self._static_token
            else "none"
        )
        return f"EscalationClient({self.api_url!r}, auth={auth})"

    # ------------------------------------------------------------------ lifecycle

    def _http(self) -> httpx.Client:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = httpx.Client(timeout=self.timeout, verify=self.verify, headers=self._headers)
        return self._sync

    def _ahttp(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop or self._async.is_closed:
            # an AsyncClient is bound to the loop it first ran in: a new loop gets a new one
            self._async = httpx.AsyncClient(timeout=self.timeout, verify=self.verify, headers=self._headers)
            self._async_loop = loop
            self._async_lock = asyncio.Lock()
        return self._async

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._async is not None:
            client, self._async = self._async, None
            if self._async_loop is asyncio.get_running_loop():
                await client.aclose()
        self.close()

    def __enter__(self) -> EscalationClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> EscalationClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ retry policy

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        delay = base * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay

    @property
    def _refreshable(self) -> bool:
        return self.username is not None or self._token_provider is not None

    def _invalidate(self) -> None:
        self._login_token = None
        invalidate = getattr(self._token_provider, "invalidate", None)
        if callable(invalidate):
            invalidate()

    def _raise_for(self, response: httpx.Response, method: str, url: str, retried: bool) -> None:
        detail, body = _detail(response)
        status = response.status_code
        cls = {
            404: EscalationNotFound,
            409: EscalationConflict,
            401: EscalationAuthError,
            403: EscalationAuthError,
        }.get(status, EscalationAPIError)
        if status == 401 and self._static_token is None and not self._refreshable:
            detail += " (no credentials configured: give a token, token_provider or username/password)"
        raise cls(status, detail, method=method, url=url, body=body, after_retry=retried)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise EscalationAPIError(
                response.status_code,
                f"expected JSON, got {response.headers.get('content-type')!r}: {response.text[:200]!r}",
                method=response.request.method,
                url=str(response.request.url),
            ) from None

    # ------------------------------------------------------------------ sync transport

    def _auth_header(self) -> dict[str, str]:
        token: Any
        if self._static_token is not None:
            token = self._static_token
        elif self._token_provider is not None:
            token = self._token_provider()
        elif self.username is not None:
            token = self._login_token or self._login()
        else:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _next_step(
        self,
        method: str,
        url: str,
        attempt: int,
        refreshed: bool,
        auth: bool,
        response: httpx.Response | None,
        error: httpx.TransportError | None,
    ) -> str | float:
        """What the retry loops of ``_send``/``_asend`` do after one try.

        Returns ``"done"`` (``response`` is the answer), ``"refresh"`` (drop the token and try
        again, once) or the seconds to wait before the next attempt; raises when out of tries or
        on a client error.
        """
        if error is not None:
            if attempt >= self.retries:
                raise EscalationServiceUnavailable(url, attempts=attempt + 1, cause=error) from error
            return self._delay(attempt, None)
        status = response.status_code
        if status == 401 and auth and self._refreshable and not refreshed:
            self._invalidate()
            return "refresh"
        if _is_retryable_status(status):
            if attempt >= self.retries:
                raise EscalationServiceUnavailable(
                    url, attempts=attempt + 1, status_code=status, detail=_detail(response)[0]
                )
            return self._delay(attempt, _retry_after(response))
        if status >= 400:
            self._raise_for(response, method, url, retried=attempt > 0)
        return "done"

    def _send(
        self, method: str, url: str, *, params: Any = None, json: Any = None, auth: bool = True
    ) -> httpx.Response:
        attempt, refreshed = 0, False
        while True:
            headers = self._auth_header() if auth else {}
            response = error = None
            try:
                response = self._http().request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                error = exc
            step = self._next_step(method, url, attempt, refreshed, auth, response, error)
            if step == "done":
                return response
            if step == "refresh":
                refreshed = True
                continue
            time.sleep(step)
            attempt += 1

    def _login(self) -> str:
        with self._login_lock:
            if self._login_token:
                return self._login_token
            response = self._send(
                "POST", self.token_url, auth=False, json={"username": self.username, "password": self._password}
            )
            self._login_token = self._token_from(response)
            return self._login_token

    def _token_from(self, response: httpx.Response) -> str:
        body = self._decode(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise EscalationAuthError(
                response.status_code,
                f"no access_token in the answer of {self.token_url}",
                method="POST",
                url=self.token_url,
                body=body,
            )
        return token

    def _run(self, call: _Call) -> Any:
        url = self.api_url + call.path
        try:
            response = self._send(call.method, url, params=call.params, json=call.json)
        except EscalationAuthError as exc:
            raise self._login_failed(exc) from None
        data = self._decode(response)
        return data.get(call.unwrap) if call.unwrap and isinstance(data, dict) else data

    def _login_failed(self, exc: EscalationAuthError) -> EscalationAuthError:
        if exc.url == self.token_url:
            exc.args = (f"login as {self.username!r} failed at {self.token_url}: HTTP {exc.status_code}: {exc.detail}",)
        return exc

    # ------------------------------------------------------------------ async transport

    async def _aauth_header(self) -> dict[str, str]:
        token: Any
        if self._static_token is not None:
            token = self._static_token
        elif self._token_provider is not None:
            token = self._token_provider()
            if inspect.isawaitable(token):
                token = await token
        elif self.username is not None:
            token = self._login_token or await self._alogin()
        else:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _asend(
        self, method: str, url: str, *, params: Any = None, json: Any = None, auth: bool = True
    ) -> httpx.Response:
        attempt, refreshed = 0, False
        while True:
            headers = await self._aauth_header() if auth else {}
            response = error = None
            try:
                response = await self._ahttp().request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                error = exc
            step = self._next_step(method, url, attempt, refreshed, auth, response, error)
            if step == "done":
                return response
            if step == "refresh":
                refreshed = True
                continue
            await asyncio.sleep(step)
            attempt += 1

    async def _alogin(self) -> str:
        self._ahttp()  # makes sure the lock belongs to this loop
        assert self._async_lock is not None
        async with self._async_lock:
            if self._login_token:
                return self._login_token
            response = await self._asend(
                "POST", self.token_url, auth=False, json={"username": self.username, "password": self._password}
            )
            self._login_token = self._token_from(response)
            return self._login_token

    async def _arun(self, call: _Call) -> Any:
        url = self.api_url + call.path
        try:
            response = await self._asend(call.method, url, params=call.params, json=call.json)
        except EscalationAuthError as exc:
            raise self._login_failed(exc) from None
        data = self._decode(response)
        return data.get(call.unwrap) if call.unwrap and isinstance(data, dict) else data

    # ------------------------------------------------------------------ routes (sync)

    def trigger(
        self,
        incident_id: str,
        context: dict[str, Any] | None = None,
        *,
        policy_name: str | None = None,
        severity: str | None = None,
        trigger_type: str | None = None,
        policy: dict[str, Any] | EscalationPolicy | None = None,
    ) -> dict[str, Any]:
        """``POST /escalations``: start (or join) the escalation of ``incident_id``.

        ``severity`` is stored as ``context["severity"]`` (policies filter on it); ``policy`` is an
        inline policy definition snapshotted on the record. Returns the ``Result``: a policy gate
        that refuses (``code`` ``filtered``/``suppressed``) is ``success: false``, not an error.
        """
        return self._run(_trigger_call(incident_id, context, policy_name, severity, trigger_type, policy))

    def list_escalations(
        self,
        state: str | Sequence[str] | None = None,
        *,
        policy: str | None = None,
        incident: str | None = None,
        dag_id: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """``GET /escalations``: ``{"escalations": [Record], "total", "limit", "offset"}``, newest first.

        ``ids`` restricts the listing to those records (at most 200 per request).
        """
        return self._run(_list_call(state, policy, incident, dag_id, active, limit, offset, ids))

    def iter_escalations(
        self, state: str | Sequence[str] | None = None, *, page_size: int = 100, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every record matching the filters, fetched ``page_size`` at a time."""
        offset = 0
        while True:
            page = self.list_escalations(state, limit=page_size, offset=offset, **filters)
            records = page.get("escalations") or []
            yield from records
            offset += len(records)
            if not records or offset >= int(page.get("total", 0)):
                return

    def get_escalation(self, record_id: str) -> dict[str, Any]:
        """``GET /escalations/{id}``: the record with ``history`` and ``deliveries``."""
        return self._run(_Call("GET", f"/escalations/{_rid(record_id)}"))

    def acknowledge(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        """``POST /escalations/{id}/acknowledge``: stop the climb (409 when already closed)."""
        return self._run(_action_call(record_id, "acknowledge", {"note": note} if note else {}))

    def resolve(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        """``POST /escalations/{id}/resolve``: close the escalation as resolved."""
        return self._run(_action_call(record_id, "resolve", {"note": note} if note else {}))

    def cancel(self, record_id: str, reason: str | None = None) -> dict[str, Any]:
        """``POST /escalations/{id}/cancel``: close the escalation as cancelled."""
        return self._run(_action_call(record_id, "cancel", {"reason": reason} if reason else {}))

    def escalate(self, record_id: str, force: bool = False) -> dict[str, Any]:
        """``POST /escalations/{id}/escalate``: move to the next level now."""
        return self._run(_action_call(record_id, "escalate", {"force": bool(force)}))

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: ``EscalationStats.to_dict()``."""
        return self._run(_Call("GET", "/stats"))

    def policies(self) -> list[dict[str, Any]]:
        """``GET /policies``: the list of policies (unwrapped from ``{"policies": [...]}``)."""
        return self._run(_Call("GET", "/policies", unwrap="policies"))

    def policy(self, name: str) -> dict[str, Any]:
        """``GET /policies/{name}``."""
        return self._run(_Call("GET", f"/policies/{_rid(name)}"))

    def validate_policy(
        self, policy: dict[str, Any] | EscalationPolicy | None = None, *, yaml: str | None = None
    ) -> dict[str, Any]:
        """``POST /policies/validate``: ``{"valid", "errors", "policies"}`` for a policy or YAML text."""
        return self._run(_validate_call(policy, yaml))

    def routes(self) -> dict[str, Any]:
        """``GET /routes``: the failure routes in precedence order, warnings, the detector's state."""
        return self._run(_Call("GET", "/routes"))

    def explain_route(self, dag_id: str, kind: str = "task_failed", **params: Any) -> dict[str, Any]:
        """``GET /routes/explain``: which route would catch this failure and what would happen
        (``task_id``, ``run_type``, ``try_number``, ``tags``, ``owners`` as the route asks)."""
        query = {"dag_id": dag_id, "kind": kind, **{k: v for k, v in params.items() if v is not None}}
        return self._run(_Call("GET", "/routes/explain", params=query))

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``{"status", "engine_id", "store", "running"}``."""
        return self._run(_Call("GET", "/health"))

    def policy_document(self) -> dict[str, Any]:
        """``GET /policies/document``: the revision in force with its document and ``yaml``."""
        return self._run(_Call("GET", "/policies/document"))

    def policy_revisions(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """``GET /policies/revisions``: ``{"revisions", "total", "current", "source"}``, newest first."""
        return self._run(_Call("GET", "/policies/revisions", params={"limit": limit, "offset": offset}))

    def save_policies(self, yaml: str, expected_revision: int, comment: str = "") -> dict[str, Any]:
        """``PUT /policies/document``: save YAML text as the next revision (409 when
        ``expected_revision`` is no longer the latest; 422 naming every error)."""
        body = {"yaml": yaml, "expected_revision": expected_revision, "comment": comment}
        return self._run(_Call("PUT", "/policies/document", json=body))

    def rollback_policies(self, revision: int, expected_revision: int, comment: str = "") -> dict[str, Any]:
        """``POST /policies/revisions/{revision}/rollback``: revision's document as the next revision."""
        body = {"expected_revision": expected_revision, "comment": comment}
        return self._run(_Call("POST", f"/policies/revisions/{int(revision)}/rollback", json=body))

    # ------------------------------------------------------------------ routes (async)

    async def atrigger(
        self,
        incident_id: str,
        context: dict[str, Any] | None = None,
        *,
        policy_name: str | None = None,
        severity: str | None = None,
        trigger_type: str | None = None,
        policy: dict[str, Any] | EscalationPolicy | None = None,
    ) -> dict[str, Any]:
        return await self._arun(_trigger_call(incident_id, context, policy_name, severity, trigger_type, policy))

    async def alist_escalations(
        self,
        state: str | Sequence[str] | None = None,
        *,
        policy: str | None = None,
        incident: str | None = None,
        dag_id: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        return await self._arun(_list_call(state, policy, incident, dag_id, active, limit, offset, ids))

    async def aiter_escalations(
        self, state: str | Sequence[str] | None = None, *, page_size: int = 100, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        offset = 0
        while True:
            page = await self.alist_escalations(state, limit=page_size, offset=offset, **filters)
            records = page.get("escalations") or []
            for record in records:
                yield record
            offset += len(records)
            if not records or offset >= int(page.get("total", 0)):
                return

    async def aget_escalation(self, record_id: str) -> dict[str, Any]:
        return await self._arun(_Call("GET", f"/escalations/{_rid(record_id)}"))

    async def aacknowledge(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        return await self._arun(_action_call(record_id, "acknowledge", {"note": note} if note else {}))

    async def aresolve(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        return await self._arun(_action_call(record_id, "resolve", {"note": note} if note else {}))

    async def acancel(self, record_id: str, reason: str | None = None) -> dict[str, Any]:
        return await self._arun(_action_call(record_id, "cancel", {"reason": reason} if reason else {}))

    async def aescalate(self, record_id: str, force: bool = False) -> dict[str, Any]:
        return await self._arun(_action_call(record_id, "escalate", {"force": bool(force)}))

    async def astats(self) -> dict[str, Any]:
        return await self._arun(_Call("GET", "/stats"))

    async def apolicies(self) -> list[dict[str, Any]]:
        return await self._arun(_Call("GET", "/policies", unwrap="policies"))

    async def apolicy(self, name: str) -> dict[str, Any]:
        return await self._arun(_Call("GET", f"/policies/{_rid(name)}"))

    async def avalidate_policy(
        self, policy: dict[str, Any] | EscalationPolicy | None = None, *, yaml: str | None = None
    ) -> dict[str, Any]:
        return await self._arun(_validate_call(policy, yaml))

    async def ahealth(self) -> dict[str, Any]:
        return await self._arun(_Call("GET", "/health"))

    # ------------------------------------------------------------------ on call (docs/oncall.md)

    def schedules(self) -> list[dict[str, Any]]:
        """``GET /schedules``: each schedule with who is on call now and the next handoffs."""
        return self._run(_Call("GET", "/schedules", unwrap="schedules"))

    def on_call(self, schedule: str, at: str | None = None) -> dict[str, Any]:
        """``GET /schedules/{name}/oncall``: who is on call now (or ``at``, an ISO time with zone)."""
        return self._run(_Call("GET", f"/schedules/{_rid(schedule)}/oncall", params=_clean({"at": at})))

    def handoffs(self, schedule: str, days: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """``GET /schedules/{name}/handoffs``."""
        params = _clean({"days": days, "limit": limit})
        return self._run(_Call("GET", f"/schedules/{_rid(schedule)}/handoffs", params=params, unwrap="handoffs"))

    def silences(self, include_expired: bool = False) -> list[dict[str, Any]]:
        """``GET /silences``."""
        params = {"include_expired": "true"} if include_expired else None
        return self._run(_Call("GET", "/silences", params=params, unwrap="silences"))

    def create_silence(
        self,
        matchers: dict[str, Any],
        *,
        ends_at: str | None = None,
        duration_minutes: float | None = None,
        starts_at: str | None = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """``POST /silences``."""
        body = _clean(
            {"matchers": matchers, "starts_at": starts_at, "ends_at": ends_at, "duration_minutes": duration_minutes}
        )
        body["comment"] = comment
        return self._run(_Call("POST", "/silences", json=body))

    def expire_silence(self, silence_id: str) -> dict[str, Any]:
        """``POST /silences/{id}/expire``."""
        return self._run(_Call("POST", f"/silences/{_rid(silence_id)}/expire"))

    def overrides(self, schedule: str | None = None) -> list[dict[str, Any]]:
        """``GET /overrides``."""
        return self._run(_Call("GET", "/overrides", params=_clean({"schedule": schedule}), unwrap="overrides"))

    def create_override(self, schedule: str, user: str, start: str, end: str, comment: str = "") -> dict[str, Any]:
        """``POST /overrides``."""
        body = {"schedule": schedule, "user": user, "start": start, "end": end, "comment": comment}
        return self._run(_Call("POST", "/overrides", json=body))

    def delete_override(self, override_id: str) -> dict[str, Any]:
        """``DELETE /overrides/{id}``."""
        return self._run(_Call("DELETE", f"/overrides/{_rid(override_id)}"))


# --------------------------------------------------------------------------- typed views


def as_record(data: dict[str, Any]) -> EscalationRecord:
    """A ``Record`` answer as an ``EscalationRecord`` (``deliveries`` is left out: see ``as_deliveries``)."""
    from airflow_escalation.core.models import EscalationRecord

    return EscalationRecord.from_dict(data)


def as_deliveries(data: dict[str, Any]) -> list:
    """The ``deliveries`` of a single-record answer as ``Delivery`` objects."""
    from airflow_escalation.core.models import Delivery

    return [Delivery.from_dict(d) for d in data.get("deliveries") or []]


def as_result(data: dict[str, Any]) -> EscalationResult:
    """A ``Result`` answer as an ``EscalationResult`` (its ``code`` property keeps the service's code)."""
    from airflow_escalation.core.models import EscalationResult, EscalationTarget

    record = as_record(data["record"]) if data.get("record") else None
    metadata = dict(data.get("metadata") or {})
    metadata["code"] = data.get("code") or ("ok" if data.get("success") else metadata.get("code", "invalid"))
    return EscalationResult(
        success=bool(data.get("success")),
        record=record,
        action=data.get("action", ""),
        level=int(data.get("level") or (record.current_level if record else 0)),
        targets_notified=[EscalationTarget.from_dict(t) for t in data.get("targets_notified") or []],
        targets_queued=[EscalationTarget.from_dict(t) for t in data.get("targets_queued") or []],
        message=data.get("message", ""),
        error=data.get("error"),
        metadata=metadata,
    )


def as_policy(data: dict[str, Any]) -> EscalationPolicy:
    from airflow_escalation.core.models import EscalationPolicy

    return EscalationPolicy.from_dict(data)


def as_stats(data: dict[str, Any]) -> EscalationStats:
    from airflow_escalation.core.models import EscalationStats

    fields = set(EscalationStats.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in fields}
    if "escalations_by_level" in values:  # JSON turned the int keys into strings
        values["escalations_by_level"] = {int(k): v for k, v in values["escalations_by_level"].items()}
    return EscalationStats(**values)


__all__ = [
    "DEFAULT_API_PATH",
    "TOKEN_PATH",
    "EscalationClient",
    "as_deliveries",
    "as_policy",
    "as_record",
    "as_result",
    "as_stats",
    "split_base_url",
]
