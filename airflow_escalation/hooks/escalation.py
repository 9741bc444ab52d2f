"""``EscalationHook``: the escalation service, reached over HTTP through an Airflow connection.

Everything but the API server is a client of the service (failure callbacks, the operator, the
deferrable sensor's trigger, Deadline Alert callbacks). The hook reads the connection (default
``escalation_default``) and wraps :class:`airflow_escalation.client.EscalationClient`.

Connection fields:

- ``host``: the API server URL (``http://airflow-api:8080``, a sub-path is kept) or a host name;
- ``port``; ``schema``: ``http`` (default) or ``https`` when ``host`` has no scheme;
- ``login``/``password``: the default and recommended authentication: a service account with
  the least role that works (SimpleAuthManager ``USER``; FAB ``User``), exchanged for a token at
  ``POST /auth/token``. A connection with neither a login nor an ``auth_type`` is refused with an
  error saying what to set;
- ``extra``: ``{"timeout": 5, "retries": 3, "verify": true}`` and, rarely, ``backoff``,
  ``api_path``, ``token_url``, ``auth_type`` (``password`` | ``jwt`` | ``token`` | ``none``; with
  ``token`` the password field holds a bearer token).
- ``auth_type: jwt`` (opt-in): the hook signs a short-lived JWT with ``[api_auth] jwt_secret``
  (or ``jwt_private_key_path``) itself, like the API server signs its own tokens. It needs that
  secret in every task process, triggerer and dag-processor, and whoever can read it there can
  sign a token for any user: prefer a login. The token's role (``jwt_role``, default ``USER``)
  may not exceed ``[escalation] component_jwt_max_role`` (default ``OP``; ``ADMIN`` only when
  set there), its lifetime (``jwt_valid_for``, default 120 s) is at most 3600 s, its subject
  (``jwt_subject``) starts with ``airflow-escalation`` (it never names a real user), and
  ``jwt_claims`` may not set identity or time claims. docs/security.md.

Only ``airflow.sdk.BaseHook`` is imported at module level; the client (httpx) and Airflow's JWT
code load when first needed.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

import asyncio
import copy
import json
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_escalation.client.errors import EscalationClientError
from airflow_escalation.hooks import connection_info as _info

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Connection

    from airflow_escalation.client.http import EscalationClient

AUTH_TYPES = ("password", "jwt", "token", "none")
DEFAULT_JWT_SUBJECT = "airflow-escalation"
DEFAULT_JWT_ROLE = "USER"
DEFAULT_JWT_VALID_FOR = 120.0
MAX_JWT_VALID_FOR = 3600.0
#: roles of Airflow's built-in auth managers, least first; a component JWT claims one of them
JWT_ROLES = ("VIEWER", "USER", "OP", "ADMIN")
DEFAULT_JWT_MAX_ROLE = "OP"
#: claims ``jwt_claims`` may not set: identity (who, which role or team) and validity
RESERVED_JWT_CLAIMS = frozenset(
    {"sub", "role", "roles", "teams", "groups", "exp", "iat", "nbf", "aud", "iss", "jti", "escalation_component"}
)


class EscalationConnectionError(EscalationClientError, ValueError):
    """The escalation connection (or the JWT settings it relies on) is not usable as configured."""


# --------------------------------------------------------------------------- component JWT


def max_jwt_role() -> str:
    """``[escalation] component_jwt_max_role``: the highest role a component JWT may claim."""
    try:
        from airflow.configuration import conf

        value = conf.get("escalation", "component_jwt_max_role", fallback=DEFAULT_JWT_MAX_ROLE)
    except Exception:  # noqa: BLE001 - outside Airflow: the default
        value = DEFAULT_JWT_MAX_ROLE
    value = str(value or DEFAULT_JWT_MAX_ROLE).strip().upper()
    if value not in JWT_ROLES:
        raise EscalationConnectionError(
            f"[escalation] component_jwt_max_role: unknown role {value!r} (allowed: {', '.join(JWT_ROLES)})"
        )
    return value


def check_jwt_role(role: Any) -> str:
    """``role`` (upper-cased) if it is a known role no higher than :func:`max_jwt_role`."""
    value = str(role or DEFAULT_JWT_ROLE).strip().upper()
    if value not in JWT_ROLES:
        raise EscalationConnectionError(f"jwt_role: unknown role {value!r} (allowed: {', '.join(JWT_ROLES)})")
    cap = max_jwt_role()
    if JWT_ROLES.index(value) > JWT_ROLES.index(cap):
        raise EscalationConnectionError(
            f"jwt_role: {value} is above [escalation] component_jwt_max_role ({cap}); a DAG's token "
            f"carries the least role that works (USER acts on escalations)"
        )
    return value


def airflow_api_jwt_audience() -> str:
    """The audience Airflow's public API validates tokens against.

    Mirrors ``BaseAuthManager._get_jwt_audience()`` (Airflow 3.3): ``[api_auth] jwt_audience``,
    else the deprecated ``[api] jwt_audience``, else ``"apache-airflow"``. Reimplemented rather
    than imported because importing the auth manager module costs most of a second.
    """
    from airflow.configuration import conf

    if conf.has_option("api_auth", "jwt_audience"):
        return conf.get("api_auth", "jwt_audience")
    if conf.has_option("api", "jwt_audience"):
        return conf.get("api", "jwt_audience")
    return "apache-airflow"


class AirflowJWTTokenProvider:
    """Short-lived JWTs for components, signed like the API server's own tokens.

    ``airflow.api_fastapi.auth.tokens.JWTGenerator`` with Airflow's signing settings
    (``[api_auth] jwt_secret``, or ``jwt_private_key_path`` with ``jwt_algorithm``/``jwt_kid``),
    audience :func:`airflow_api_jwt_audience` and issuer ``[api_auth] jwt_issuer`` (its first
    value), i.e. exactly what the API server's ``JWTValidator`` accepts. The claims carry what
    the auth manager needs to build a user: ``sub`` (the identity recorded as who acted) and
    ``role`` (SimpleAuthManager's role; ``OP`` may trigger and act), plus
    ``"escalation_component": true`` so the service can tell component tokens apart.

    A token is reused until half its lifetime has passed; ``invalidate()`` forces a new one
    (the client calls it on a 401).
    """

    def __init__(
        self,
        *,
        subject: str = DEFAULT_JWT_SUBJECT,
        role: str | None = DEFAULT_JWT_ROLE,
        valid_for: float = DEFAULT_JWT_VALID_FOR,
        audience: str | None = None,
        claims: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < valid_for <= MAX_JWT_VALID_FOR:
            raise EscalationConnectionError(
                f"jwt_valid_for: must be > 0 and at most {MAX_JWT_VALID_FOR:.0f} seconds, got {valid_for!r}"
            )
        if not isinstance(subject, str) or not subject.startswith(DEFAULT_JWT_SUBJECT) or len(subject) > 255:
            raise EscalationConnectionError(
                f"jwt_subject: must start with {DEFAULT_JWT_SUBJECT!r} (a signed token never names a "
                f"real user), got {str(subject)[:80]!r}"
            )
        role = check_jwt_role(role)
        reserved = sorted(RESERVED_JWT_CLAIMS & set(claims or {}))
        if reserved:
            raise EscalationConnectionError(f"jwt_claims: may not set {', '.join(reserved)}")
        self.subject = subject
        self.role = role
        self.valid_for = float(valid_for)
        self._audience = audience
        self.claims = dict(claims or {})
        self._generator: Any = None
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    @property
    def audience(self) -> str:
        return self._audience or airflow_api_jwt_audience()

    def _get_generator(self) -> Any:
        if self._generator is None:
            try:
                from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args
            except ImportError as exc:  # a task-sdk-only worker has no airflow-core
                raise EscalationConnectionError(
                    "cannot sign an escalation JWT here (airflow-core is not installed: "
                    f"{exc}); set login/password on the escalation connection"
                ) from exc
            try:
                signing = get_signing_args(make_secret_key_if_needed=False)
            except ValueError as exc:
                raise EscalationConnectionError(
                    "cannot sign an escalation JWT: [api_auth] jwt_secret is not set "
                    "(AIRFLOW__API_AUTH__JWT_SECRET, the same value as the API server's), "
                    "or set login/password on the escalation connection"
                ) from exc
            self._generator = JWTGenerator(**signing, valid_for=self.valid_for, audience=self.audience)
        return self._generator

    def __call__(self) -> str:
        with self._lock:
            now = time.monotonic()
            if self._token is None or now >= self._renew_at:
                extras = {**self.claims, "sub": self.subject, "escalation_component": True}
                if self.role:
                    extras["role"] = self.role
                self._token = self._get_generator().generate(extras)
                self._renew_at = now + self.valid_for / 2
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


# --------------------------------------------------------------------------- connection parsing


def _extra_value(extra: dict[str, Any], key: str) -> Any:
    value = extra.get(key)
    if value in (None, ""):
        value = extra.get(f"extra__{_info.CONN_TYPE}__{key}")
    return None if value == "" else value


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise EscalationConnectionError(f"extra.{name}: expected true or false, got {value!r}")


def _as_number(value: Any, name: str, cast: type) -> Any:
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise EscalationConnectionError(f"extra.{name}: expected a number, got {value!r}") from None
    if number < 0:
        raise EscalationConnectionError(f"extra.{name}: must be >= 0, got {value!r}")
    return number


def base_url_from_connection(conn: Connection) -> str:
    """The Airflow API server URL described by the connection."""
    host = (conn.host or "").strip()
    if not host:
        raise EscalationConnectionError(
            f"connection {conn.conn_id!r}: host is empty; set it to the API server URL, e.g. http://localhost:8080"
        )
    scheme = (conn.schema or "").strip().lower()
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EscalationConnectionError(f"connection {conn.conn_id!r}: host {host!r} is not an http(s) URL")
        netloc = parts.netloc
        if conn.port and parts.port is None:
            netloc = f"{netloc}:{conn.port}"
        return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    if not scheme:
        scheme = "https" if conn.port == 443 else "http"
    if scheme not in ("http", "https"):
        raise EscalationConnectionError(
            f"connection {conn.conn_id!r}: schema must be http or https, got {conn.schema!r}"
        )
    hostname, _, path = host.partition("/")
    netloc = f"{hostname}:{conn.port}" if conn.port else hostname
    return f"{scheme}://{netloc}" + (f"/{path.strip('/')}" if path.strip("/") else "")


def client_kwargs_from_connection(conn: Connection) -> dict[str, Any]:
    """``EscalationClient`` keyword arguments (``base_url`` included) from a connection."""
    extra = conn.extra_dejson or {}
    if not isinstance(extra, dict):
        raise EscalationConnectionError(f"connection {conn.conn_id!r}: extra must be a JSON object")
    kwargs: dict[str, Any] = {"base_url": base_url_from_connection(conn)}
    if (value := _extra_value(extra, "timeout")) is not None:
        kwargs["timeout"] = _as_number(value, "timeout", float)
        if kwargs["timeout"] <= 0:
            raise EscalationConnectionError(f"extra.timeout: must be > 0 seconds, got {value!r}")
    if (value := _extra_value(extra, "retries")) is not None:
        kwargs["retries"] = _as_number(value, "retries", int)
    if (value := _extra_value(extra, "backoff")) is not None:
        kwargs["backoff"] = _as_number(value, "backoff", float)
    if (value := _extra_value(extra, "verify")) is not None:
        # a CA bundle path, or a boolean
        is_path = isinstance(value, str) and ("/" in value or value.endswith((".pem", ".crt")))
        kwargs["verify"] = value if is_path else _as_bool(value, "verify")
    for key in ("api_path", "token_url"):
        if (value := _extra_value(extra, key)) is not None:
            kwargs[key] = str(value)

    auth_type = _extra_value(extra, "auth_type")
    if not auth_type and not conn.login:
        raise EscalationConnectionError(
            f"connection {conn.conn_id!r}: no credentials. Set login/password of a service account "
            f"(role USER is enough; exchanged at POST /auth/token), or opt in to signing tokens with "
            f'[api_auth] jwt_secret in this process with extra {{"auth_type": "jwt"}} (the secret '
            f"must then be readable by every task: see docs/security.md)"
        )
    auth_type = str(auth_type).strip().lower() if auth_type else "password"
    if auth_type not in AUTH_TYPES:
        raise EscalationConnectionError(
            f"extra.auth_type: unknown value {auth_type!r} (allowed: {', '.join(AUTH_TYPES)})"
        )
    if auth_type == "password":
        if not conn.login or conn.password is None:
            raise EscalationConnectionError(
                f"connection {conn.conn_id!r}: auth_type password needs both login and password"
            )
        kwargs["username"], kwargs["password"] = conn.login, conn.password
    elif auth_type == "token":
        if not conn.password:
            raise EscalationConnectionError(
                f"connection {conn.conn_id!r}: auth_type token needs the token in the password field"
            )
        kwargs["token"] = conn.password
    elif auth_type == "jwt":
        claims = _extra_value(extra, "jwt_claims")
        if isinstance(claims, str):
            try:
                claims = json.loads(claims)
            except ValueError:
                raise EscalationConnectionError(f"extra.jwt_claims: not JSON: {claims!r}") from None
        if claims is not None and not isinstance(claims, dict):
            raise EscalationConnectionError(f"extra.jwt_claims: expected an object, got {claims!r}")
        valid_for = _extra_value(extra, "jwt_valid_for")
        kwargs["token_provider"] = AirflowJWTTokenProvider(
            subject=str(_extra_value(extra, "jwt_subject") or DEFAULT_JWT_SUBJECT),
            role=_extra_value(extra, "jwt_role") or DEFAULT_JWT_ROLE,  # capped in the provider
            valid_for=_as_number(valid_for, "jwt_valid_for", float) if valid_for is not None else DEFAULT_JWT_VALID_FOR,
            audience=_extra_value(extra, "jwt_audience"),
            claims=claims,
        )
    return kwargs


# --------------------------------------------------------------------------- the hook


class EscalationHook(BaseHook):
    """Talks to the escalation service in the Airflow API server.

    :param escalation_conn_id: the connection (type ``escalation``), default ``escalation_default``.
    :param timeout: overrides the connection's ``extra.timeout`` (seconds per request).
    :param retries: overrides ``extra.retries``.
    :param backoff: overrides ``extra.backoff`` (first retry delay, doubled each retry).

    Sync methods resolve the connection with ``get_connection``; the ``a``-prefixed ones with
    ``aget_connection`` (never a sync lookup inside the event loop). The client is built once per
    hook and reused; ``close()``/``aclose()`` release its HTTP connections.
    """

    conn_name_attr = "escalation_conn_id"
    default_conn_name = _info.DEFAULT_CONN_NAME
    conn_type = _info.CONN_TYPE
    hook_name = _info.HOOK_NAME

    def __init__(
        self,
        escalation_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.escalation_conn_id = escalation_conn_id
        self._overrides = {
            k: v for k, v in (("timeout", timeout), ("retries", retries), ("backoff", backoff)) if v is not None
        }
        self._client: EscalationClient | None = None

    # ------------------------------------------------------------------ connection form

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Custom field behaviour (Airflow < 3.2; later versions read provider info)."""
        return copy.deepcopy(_info.UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra form fields (Airflow < 3.2; later versions read ``conn-fields`` from provider info)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField

        fields = _info.CONN_FIELDS
        return {
            "timeout": IntegerField(
                lazy_gettext(fields["timeout"]["label"]),
                widget=BS3TextFieldWidget(),
                default=fields["timeout"]["schema"]["default"],
                description=fields["timeout"]["description"],
            ),
            "retries": IntegerField(
                lazy_gettext(fields["retries"]["label"]),
                widget=BS3TextFieldWidget(),
                default=fields["retries"]["schema"]["default"],
                description=fields["retries"]["description"],
            ),
            "verify": BooleanField(lazy_gettext(fields["verify"]["label"]), default=True),
        }

    # ------------------------------------------------------------------ client

    def _build_client(self, conn: Connection) -> EscalationClient:
        from airflow_escalation.client.http import EscalationClient

        kwargs = client_kwargs_from_connection(conn)
        kwargs.update(self._overrides)
        return EscalationClient(**kwargs)

    @classmethod
    def from_connection(cls, conn: Connection, **kwargs: Any) -> EscalationHook:
        """A hook on an already resolved ``Connection`` (no lookup at all)."""
        hook = cls(conn.conn_id or cls.default_conn_name, **kwargs)
        hook._client = hook._build_client(conn)
        return hook

    def get_conn(self) -> EscalationClient:
        """The client, resolving the connection synchronously on first use."""
        if self._client is None:
            self._client = self._build_client(self.get_connection(self.escalation_conn_id))
        return self._client

    get_client = get_conn

    async def aget_conn(self) -> EscalationClient:
        """The client, resolving the connection asynchronously on first use.

        Uses ``aget_connection``; where that cannot work (``dag.test()`` runs triggers inline,
        without the supervisor's async channel) it falls back to the sync lookup in a worker
        thread, so the event loop is never blocked.
        """
        if self._client is None:
            conn_id = self.escalation_conn_id
            try:
                conn = await self.aget_connection(conn_id)
            except Exception as exc:
                if type(exc).__name__ == "AirflowNotFoundException":
                    raise
                self.log.debug("async lookup of connection %r failed (%s); retrying in a thread", conn_id, exc)
                conn = await asyncio.to_thread(self.get_connection, conn_id)
            if self._client is None:
                self._client = self._build_client(conn)
        return self._client

    aget_client = aget_conn

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def __enter__(self) -> EscalationHook:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> EscalationHook:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def test_connection(self) -> tuple[bool, str]:
        """Call ``GET /health`` (the connection form's Test button)."""
        try:
            client = self.get_conn()
            health = client.health()
        except Exception as exc:  # noqa: BLE001 - the form shows the message
            return False, str(exc)
        status = health.get("status") if isinstance(health, dict) else None
        if status != "ok":
            return False, f"escalation service at {client.api_url} answered status {status!r}"
        running = "running" if health.get("running") else "NOT running"
        return True, (
            f"escalation service at {client.api_url} is healthy: engine {health.get('engine_id')}, "
            f"store {health.get('store')}, clock {running}"
        )

    # ------------------------------------------------------------------ routes (sync)

    def trigger(
        self,
        incident_id: str,
        context: dict[str, Any] | None = None,
        *,
        policy_name: str | None = None,
        severity: str | None = None,
        trigger_type: str | None = None,
        policy: Any = None,
    ) -> dict[str, Any]:
        """Start (or join) the escalation of ``incident_id``; see ``EscalationClient.trigger``."""
        return self.get_conn().trigger(
            incident_id, context, policy_name=policy_name, severity=severity, trigger_type=trigger_type, policy=policy
        )

    def list_escalations(self, state: str | Sequence[str] | None = None, **filters: Any) -> dict[str, Any]:
        """Filters: ``policy``, ``incident``, ``dag_id``, ``active``, ``limit``, ``offset``."""
        return self.get_conn().list_escalations(state, **filters)

    def get_escalation(self, record_id: str) -> dict[str, Any]:
        return self.get_conn().get_escalation(record_id)

    def acknowledge(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        return self.get_conn().acknowledge(record_id, note)

    def resolve(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        return self.get_conn().resolve(record_id, note)

    def cancel(self, record_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.get_conn().cancel(record_id, reason)

    def escalate(self, record_id: str, force: bool = False) -> dict[str, Any]:
        return self.get_conn().escalate(record_id, force)

    def stats(self) -> dict[str, Any]:
        return self.get_conn().stats()

    def policies(self) -> list[dict[str, Any]]:
        return self.get_conn().policies()

    def policy(self, name: str) -> dict[str, Any]:
        return self.get_conn().policy(name)

    def validate_policy(self, policy: Any = None, *, yaml: str | None = None) -> dict[str, Any]:
        return self.get_conn().validate_policy(policy, yaml=yaml)

    def health(self) -> dict[str, Any]:
        return self.get_conn().health()

    # ------------------------------------------------------------------ routes (async)

    async def atrigger(
        self,
        incident_id: str,
        context: dict[str, Any] | None = None,
        *,
        policy_name: str | None = None,
        severity: str | None = None,
        trigger_type: str | None = None,
        policy: Any = None,
    ) -> dict[str, Any]:
        client = await self.aget_conn()
        return await client.atrigger(
            incident_id, context, policy_name=policy_name, severity=severity, trigger_type=trigger_type, policy=policy
        )

    async def alist_escalations(self, state: str | Sequence[str] | None = None, **filters: Any) -> dict[str, Any]:
        return await (await self.aget_conn()).alist_escalations(state, **filters)

    async def aget_escalation(self, record_id: str) -> dict[str, Any]:
        return await (await self.aget_conn()).aget_escalation(record_id)

    async def aacknowledge(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        return await (await self.aget_conn()).aacknowledge(record_id, note)

    async def aresolve(self, record_id: str, note: str | None = None) -> dict[str, Any]:
        return await (await self.aget_conn()).aresolve(record_id, note)

    async def acancel(self, record_id: str, reason: str | None = None) -> dict[str, Any]:
        return await (await self.aget_conn()).acancel(record_id, reason)

    async def aescalate(self, record_id: str, force: bool = False) -> dict[str, Any]:
        return await (await self.aget_conn()).aescalate(record_id, force)

    async def astats(self) -> dict[str, Any]:
        return await (await self.aget_conn()).astats()

    async def apolicies(self) -> list[dict[str, Any]]:
        return await (await self.aget_conn()).apolicies()

    async def apolicy(self, name: str) -> dict[str, Any]:
        return await (await self.aget_conn()).apolicy(name)

    async def avalidate_policy(self, policy: Any = None, *, yaml: str | None = None) -> dict[str, Any]:
        return await (await self.aget_conn()).avalidate_policy(policy, yaml=yaml)

    async def ahealth(self) -> dict[str, Any]:
        return await (await self.aget_conn()).ahealth()


__all__ = [
    "AirflowJWTTokenProvider",
    "EscalationConnectionError",
    "EscalationHook",
    "airflow_api_jwt_audience",
    "base_url_from_connection",
    "client_kwargs_from_connection",
]
