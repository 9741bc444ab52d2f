"""HTTP webhooks (``http`` connections): POST the message's JSON body.

The URL is the connection's base URL (schema, host, port, as ``HttpAsyncHook`` builds it) joined
with the target's identifier as a path (``/hooks/escalation``; ``#``, spaces and other
characters that are not allowed in a path are percent-encoded), or the identifier itself when it
is an absolute URL. An absolute URL must lie on the connection's host (same scheme, host and
port): the connection's credentials and headers are never sent anywhere else. A connection
without a host accepts absolute URLs on any host (it then only carries headers/credentials you
chose to send everywhere).

Headers come from the connection's extra (as for every ``HttpAsyncHook``: each extra key that is
not an HTTP option such as ``timeout`` or ``verify_ssl`` is a header); login/password are sent
as basic auth. Any 2xx answer is success; anything else fails the attempt with the status and
the start of the body in the error (the engine retries it with backoff).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_escalation.channels.base import Channel, ChannelError, ConnectionInfo, PermanentChannelError

if TYPE_CHECKING:
    from airflow_escalation.channels.message import EscalationMessage
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

USER_AGENT = "airflow-provider-escalation"
_BODY_EXCERPT = 300


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def redact(url: str) -> str:
    """``scheme://host[:port]/…``: enough to recognise the endpoint, no tokens in paths or queries."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return shown + ("/…" if (parts.path not in ("", "/") or parts.query) else "/")


def webhook_url(base_url: str, identifier: str, has_host: bool) -> str:
    """Where to POST: ``base_url`` + identifier path, or the identifier URL if it is allowed."""
    ident = identifier.strip()
    if "://" in ident:
        if has_host and _origin(ident) != _origin(base_url):
            raise PermanentChannelError(
                f"target URL {redact(ident)} is not on the connection's host {redact(base_url)}: "
                f"the connection's credentials and headers are only sent to its own host; use a "
                f"path as the target identifier, or a connection for that host")
        if urlsplit(ident).scheme not in ("http", "https"):
            raise PermanentChannelError(f"target URL {redact(ident)}: only http and https are supported")
        return ident
    if not has_host:
        raise PermanentChannelError(
            f"the connection has no host, so the target identifier {ident!r} must be an absolute "
            f"http(s) URL (or give the connection a host and keep the identifier a path)")
    # a path, never a fragment: "#alerts" is sent as /%23alerts (spaces and the like encoded too)
    path = quote(ident.lstrip("/"), safe="/:@!$&'()*+,;=-._~%?")
    return base_url.rstrip("/") + "/" + path


class HttpChannel(Channel):
    """POST :meth:`EscalationMessage.to_webhook_json` through ``HttpAsyncHook``."""

    conn_types = ("http", "https")
    provider_package = "apache-airflow-providers-http"
    provider_module = "airflow.providers.http.hooks.http"
    extra = "http"

    async def send(self, message: EscalationMessage, target: EscalationTarget,
                   record: EscalationRecord, level: EscalationLevel,
                   connection: ConnectionInfo) -> None:
        await self.post(target.conn_id or connection.conn_id, target.identifier,
                        message.to_webhook_json(), has_host=bool(connection.host))

    async def post(self, conn_id: str, identifier: str, body: dict[str, Any], *,
                   has_host: bool = True) -> int:
        """POST ``body`` as JSON; return the status (2xx) or raise :class:`ChannelError`."""
        module = self.import_provider()
        session_cls = getattr(module, "AsyncHttpSession", None)
        if session_cls is None:
            raise PermanentChannelError(
                f"the installed {self.provider_package} is too old (HttpAsyncHook sessions came in "
                f"6.0.1): {self.install_hint()}")
        import aiohttp

        # one attempt per delivery: the engine retries with backoff and records each attempt
        hook = module.HttpAsyncHook(method="POST", http_conn_id=conn_id, retry_limit=1)
        config = await hook.config()
        url = webhook_url(config.base_url, identifier, has_host)
        async with aiohttp.ClientSession() as session:
            http = session_cls(hook=hook, request=session.post, method="POST",
                               config=config.model_copy(update={"base_url": ""}))
            try:
                response = await http.run(
                    endpoint=url, json=body,
                    headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                    extra_options={"check_response": False})
            except aiohttp.ClientError as exc:
                raise ChannelError(f"POST {redact(url)} failed: {type(exc).__name__}: {exc}") from None
            async with response:
                if 200 <= response.status < 300:
                    return response.status
                text = (await response.text(errors="replace"))[:_BODY_EXCERPT]
                raise ChannelError(f"POST {redact(url)} answered HTTP {response.status}"
                                   f"{' ' + response.reason if response.reason else ''}: {text}")
