"""The channel contract, the registry by connection type, and the engine's channel resolver.

A target that names an Airflow connection (``conn_id``) is delivered by the channel registered
for that connection's type (``http``, ``smtp``, ``slackwebhook``, ``slack``,
``pagerduty_events``); a target without one falls back to the engine's notification handler.

:class:`ChannelResolver` plugs into :meth:`EscalationEngine.add_channel_resolver
<airflow_escalation.runtime.engine.EscalationEngine.add_channel_resolver>`: called with a target, it
returns a sender for targets with a ``conn_id`` and ``None`` otherwise. The sender looks the
connection up (in a worker thread: the metadata database and secrets backends block; the result
is cached briefly), picks the channel, builds the message and sends it through the official
provider's hook. Failures raise, so the engine records the attempt as failed and retries it with
backoff. Some failures cannot heal by retrying (an unknown ``conn_id``, a connection type no
channel serves, a provider that is not installed): they raise :class:`PermanentChannelError`
subclasses with a message that says what to do, and are logged at ERROR.

Nothing here imports a provider at import time: each channel imports its hook when it first
sends, and reports a missing provider with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar

if TYPE_CHECKING:
    from airflow_escalation.channels.message import EscalationMessage
    from airflow_escalation.core.clock import Clock
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

log = logging.getLogger("airflow_escalation.channels")

DISTRIBUTION = "airflow-provider-escalation"


# --------------------------------------------------------------------------------- errors


class ChannelError(Exception):
    """A delivery through a channel failed (the engine retries it with backoff)."""


class PermanentChannelError(ChannelError):
    """A failure retrying cannot fix until someone changes the configuration."""


def failure_reason(exc: BaseException) -> str:
    """What a failed delivery records (``last_error``, which every viewer reads): the exception's
    type, the HTTP status with its standard phrase and a provider's short error code when there
    is one -- never the remote answer's body, which the remote end chooses."""
    from http import HTTPStatus

    from airflow_escalation.core.bounds import truncate

    response = getattr(exc, "response", None)
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        status = getattr(response, "status_code", None)
    text = str(exc)
    if not isinstance(status, int):
        # the Slack webhook hook puts the status after the body: "Response body: ..., Status Code: 404"
        found = re.search(r"Status Code: (\d{3})", text)
        status = int(found.group(1)) if found else None
    code = None
    try:
        code = response.get("error") if hasattr(response, "get") else None
    except Exception:  # noqa: BLE001 - a provider's response object we do not know
        code = None
    parts = [type(exc).__name__]
    if isinstance(status, int):
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        parts.append(f"HTTP {status} {phrase}".rstrip())
    if isinstance(code, str) and re.fullmatch(r"[a-z0-9_]{1,60}", code):
        parts.append(code)
    if len(parts) == 1:  # no answer came back: a local error (refused, timed out, misconfigured)
        parts.append(truncate(text, 200))
    return ": ".join(parts)


class UnknownConnectionError(PermanentChannelError):
    """The target's ``conn_id`` names no Airflow connection."""


class UnsupportedConnectionTypeError(PermanentChannelError):
    """No channel delivers through connections of this type."""


class ChannelNotInstalledError(PermanentChannelError):
    """The provider package the channel needs is not installed."""


# ------------------------------------------------------------------------- connections


@dataclass(frozen=True)
class ConnectionInfo:
    """What the resolver keeps of a connection: its type and address, never its secrets."""

    conn_id: str
    conn_type: str
    host: str = ""
    schema: str = ""
    port: int | None = None
    #: a Slack API connection with a signing secret: its buttons act from Slack (docs/channels.md)
    interactive: bool = False

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str) -> ConnectionInfo:
        port = getattr(conn, "port", None)
        conn_type = normalize_conn_type(getattr(conn, "conn_type", None) or "")
        return cls(
            conn_id=conn_id,
            conn_type=conn_type,
            host=str(getattr(conn, "host", None) or ""),
            schema=str(getattr(conn, "schema", None) or ""),
            port=int(port) if port not in (None, "") else None,
            interactive=conn_type == "slack" and bool(connection_extra_value(conn, SLACK_SIGNING_SECRET)),
        )


#: the extras that hold the secrets Slack and PagerDuty sign their requests with
SLACK_SIGNING_SECRET = "signing_secret"
PAGERDUTY_WEBHOOK_SECRET = "webhook_secret"


def connection_extra_value(conn: Any, key: str) -> Any:
    """An extra of an Airflow connection: ``key``, or the older ``extra__<type>__<key>`` form."""
    try:
        extra = conn.extra_dejson
    except Exception:  # noqa: BLE001 - an extra that is not JSON holds nothing we read
        return None
    if not isinstance(extra, dict):
        return None
    value = extra.get(key)
    if value in (None, ""):
        value = extra.get(f"extra__{normalize_conn_type(getattr(conn, 'conn_type', '') or '')}__{key}")
    return value


def normalize_conn_type(conn_type: str) -> str:
    """``Slack-Webhook`` and ``slack_webhook`` name the same type: lower case, ``-`` → ``_``."""
    return str(conn_type).strip().lower().replace("-", "_")


def airflow_connection(conn_id: str) -> Any:
    """Look a connection up the way hooks do (secrets backends, env vars, the metadata DB).

    Blocking: call it from a worker thread. Raises :class:`UnknownConnectionError` when no
    backend defines ``conn_id``.
    """
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # pragma: no cover - Airflow < 3
        from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ == "AirflowNotFoundException":
            raise UnknownConnectionError(_unknown_connection_message(conn_id)) from None
        raise


def _unknown_connection_message(conn_id: str) -> str:
    env = "AIRFLOW_CONN_" + conn_id.upper()
    return (
        f"Airflow connection {conn_id!r} is not defined: create it (Admin > Connections, "
        f"`airflow connections add {conn_id} ...`, a secrets backend, or the {env} "
        f"environment variable)"
    )


# ----------------------------------------------------------------------------- channels


class Channel(ABC):
    """Delivers one notification to one target through one kind of Airflow connection.

    ``send`` raises on failure (any exception fails the attempt; the engine retries it).
    Channels whose service keeps incidents of its own (PagerDuty) also implement ``resolve``,
    which the service calls when the escalation is acknowledged or resolved.
    """

    #: connection types this channel serves (``conn_type`` values)
    conn_types: ClassVar[tuple[str, ...]] = ()
    #: the provider distribution and the module the channel's hook lives in
    provider_package: ClassVar[str] = ""
    provider_module: ClassVar[str] = ""
    #: the ``airflow-provider-escalation`` extra that installs the provider
    extra: ClassVar[str] = ""
    #: True when ``resolve`` does something
    supports_resolve: ClassVar[bool] = False

    @abstractmethod
    async def send(
        self,
        message: EscalationMessage,
        target: EscalationTarget,
        record: EscalationRecord,
        level: EscalationLevel,
        connection: ConnectionInfo,
    ) -> None:
        """Deliver ``message`` to ``target`` through ``connection``; raise on failure."""

    async def resolve(
        self,
        record: EscalationRecord,
        target: EscalationTarget,
        connection: ConnectionInfo,
        action: str = "resolve",
        message: EscalationMessage | None = None,
    ) -> None:
        """Tell the remote service the escalation was acknowledged or resolved (optional)."""
        raise NotImplementedError(f"{type(self).__name__} has no remote incident to {action}")

    # -- helpers for subclasses
    @classmethod
    def install_hint(cls) -> str:
        return f"pip install '{DISTRIBUTION}[{cls.extra}]'" if cls.extra else f"pip install {cls.provider_package}"

    @classmethod
    def import_provider(cls, module: str | None = None) -> Any:
        """Import the provider module, or raise :class:`ChannelNotInstalledError` saying how to fix it."""
        name = module or cls.provider_module
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            kinds = "/".join(cls.conn_types)
            raise ChannelNotInstalledError(
                f"delivering through {kinds!r} connections needs {cls.provider_package}, which "
                f"cannot be imported ({exc}): {cls.install_hint()}"
            ) from None

    def check_installed(self) -> None:
        self.import_provider()


ChannelFactory = Callable[[], Channel]

# built-in channels, imported on first use: "conn_type" -> "module:Class"
_BUILTIN: dict[str, str] = {
    "http": "airflow_escalation.channels.http:HttpChannel",
    "https": "airflow_escalation.channels.http:HttpChannel",
    "smtp": "airflow_escalation.channels.smtp:SmtpChannel",
    "slackwebhook": "airflow_escalation.channels.slack:SlackWebhookChannel",
    "slack": "airflow_escalation.channels.slack:SlackApiChannel",
    "pagerduty_events": "airflow_escalation.channels.pagerduty:PagerDutyEventsChannel",
}


class ChannelRegistry:
    """Channels by connection type. Built-ins are registered by path and imported on first use."""

    def __init__(self, builtins: bool = True) -> None:
        self._specs: dict[str, str | Channel | ChannelFactory] = dict(_BUILTIN) if builtins else {}
        self._instances: dict[str, Channel] = {}
        self._lock = threading.Lock()

    def register(self, conn_type: str, channel: Channel | ChannelFactory | str) -> None:
        """Serve ``conn_type`` with ``channel`` (an instance, a factory, or ``"module:Class"``)."""
        key = normalize_conn_type(conn_type)
        with self._lock:
            self._specs[key] = channel
            self._instances.pop(key, None)

    @property
    def conn_types(self) -> list[str]:
        return sorted(self._specs)

    def get(self, conn_type: str) -> Channel:
        """The channel for ``conn_type``; :class:`UnsupportedConnectionTypeError` when none."""
        key = normalize_conn_type(conn_type)
        channel = self._instances.get(key)
        if channel is not None:
            return channel
        with self._lock:
            spec = self._specs.get(key)
            if spec is None:
                raise UnsupportedConnectionTypeError(
                    f"no escalation channel delivers through connections of type {conn_type!r} "
                    f"(supported: {', '.join(sorted(self._specs))}); give the target a connection "
                    f"of a supported type, or drop its conn_id to use the notification handler"
                )
            if isinstance(spec, Channel):
                channel = spec
            elif isinstance(spec, str):
                module, _, attr = spec.partition(":")
                channel = getattr(importlib.import_module(module), attr)()
            else:
                channel = spec()
            self._instances[key] = channel
            return channel


DEFAULT_REGISTRY = ChannelRegistry()


def register_channel(conn_type: str, channel: Channel | ChannelFactory | str) -> None:
    """Serve ``conn_type`` connections with ``channel`` in the default registry."""
    DEFAULT_REGISTRY.register(conn_type, channel)


def get_channel(conn_type: str) -> Channel:
    return DEFAULT_REGISTRY.get(conn_type)


# ---------------------------------------------------------------------------- resolver


@dataclass
class _Cached:
    info: ConnectionInfo
    expires: float


@dataclass
class MessageOptions:
    """What every message needs besides the record: where links point, how they are signed."""

    base_url: str = ""
    action_secret: str | None = None
    action_ttl_seconds: int = 86400


class ChannelResolver:
    """``engine.add_channel_resolver(ChannelResolver(...))``: deliver conn_id targets by channel.

    ``connection_getter(conn_id)`` (blocking, run in a worker thread) returns an Airflow
    connection; by default the hooks' own lookup. Connection types are cached for
    ``cache_seconds`` (a connection that is missing is looked up again on the next attempt).
    """

    def __init__(
        self,
        *,
        base_url: str = "",
        action_secret: str | None = None,
        action_ttl_seconds: int = 86400,
        registry: ChannelRegistry | None = None,
        connection_getter: Callable[[str], Any] | None = None,
        cache_seconds: float = 30.0,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = MessageOptions(base_url.rstrip("/"), action_secret, action_ttl_seconds)
        self.registry = registry or DEFAULT_REGISTRY
        self._getter = connection_getter or airflow_connection
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, _Cached] = {}
        # every connection type seen, kept (types rarely change): what change hooks may ask
        # synchronously (service/delivery.py's follow-ups, the metrics' channel names)
        self._types: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Future] = {}

    # -- engine contract: resolver(target) -> sender | None
    def __call__(self, target: EscalationTarget) -> Callable[..., Awaitable[bool]] | None:
        return self.deliver if target.conn_id else None

    async def deliver(self, record: EscalationRecord, level: EscalationLevel, target: EscalationTarget) -> bool:
        """The sender: send ``record``'s ``level`` notification to ``target`` via its connection."""
        try:
            info, channel = await self.channel_for(target.conn_id)
            message = self.build_message(record, level, target)
            await channel.send(message, target, record, level, info)
        except PermanentChannelError as exc:
            log.error(
                "escalation %s: cannot notify %s through connection %r: %s", record.id, target.key, target.conn_id, exc
            )
            raise
        return True

    # -- pieces the service reuses (PagerDuty follow-ups)
    async def channel_for(self, conn_id: str | None) -> tuple[ConnectionInfo, Channel]:
        if not conn_id:
            raise UnknownConnectionError("the target names no connection (conn_id is empty)")
        info = await self.connection(conn_id)
        return info, self.registry.get(info.conn_type)

    async def connection(self, conn_id: str) -> ConnectionInfo:
        """The connection's type and address, cached briefly; one lookup per conn_id at a time."""
        cached = self._cache.get(conn_id)
        if cached is not None and cached.expires > self._monotonic():
            return cached.info
        loop = asyncio.get_running_loop()
        pending = self._inflight.get(conn_id)
        if pending is not None and pending.get_loop() is loop:
            return await asyncio.shield(pending)
        future: asyncio.Future = loop.create_future()
        self._inflight[conn_id] = future
        try:
            conn = await asyncio.to_thread(self._getter, conn_id)
            if conn is None:
                raise UnknownConnectionError(_unknown_connection_message(conn_id))
            info = ConnectionInfo.from_connection(conn, conn_id)
            if not info.conn_type:
                raise UnsupportedConnectionTypeError(
                    f"Airflow connection {conn_id!r} has no connection type; set one of "
                    f"{', '.join(self.registry.conn_types)}"
                )
            self._cache[conn_id] = _Cached(info, self._monotonic() + self._cache_seconds)
            self._types[conn_id] = info.conn_type
            future.set_result(info)
            return info
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            if self._inflight.get(conn_id) is future:
                del self._inflight[conn_id]

    def known_conn_type(self, conn_id: str) -> str | None:
        """The type of ``conn_id`` if this resolver ever looked it up (no I/O), else None."""
        return self._types.get(conn_id)

    def forget(self, conn_id: str | None = None) -> None:
        """Drop cached connection types (all, or one)."""
        if conn_id is None:
            self._cache.clear()
        else:
            self._cache.pop(conn_id, None)

    def build_message(
        self,
        record: EscalationRecord,
        level: EscalationLevel | None,
        target: EscalationTarget | None = None,
        *,
        with_actions: bool = True,
    ) -> EscalationMessage:
        from airflow_escalation.channels.message import EscalationMessage

        opts = self.options
        return EscalationMessage.build(
            record,
            level,
            target,
            base_url=opts.base_url,
            action_secret=opts.action_secret,
            action_ttl_seconds=opts.action_ttl_seconds,
            with_actions=with_actions,
            now=self._clock.now() if self._clock is not None else None,
        )
