"""HTTP webhooks (``http`` connections): POST the message's JSON body.

The URL is the connection's base URL (schema, host, port and any base path, as ``HttpAsyncHook``
builds it) joined with the target's identifier as a path (``/hooks/escalation``; ``#``, spaces
and other characters that are not allowed in a path are percent-encoded). The path always stays
under the connection's base path: an identifier that is an absolute URL (``https://…``), a
scheme-relative one (``//host/…``), or holds a ``.`` or ``..`` segment (also percent-encoded,
``%2e%2e``) or a backslash or control character is refused, and the connection needs a host. So
a policy can only choose *where on the connection's endpoint* a message goes; the connection's
credentials and headers are never sent anywhere else. Redirects are not followed.

Headers come from the connection's extra (as for every ``HttpAsyncHook``: each extra key that is
not an HTTP option such as ``timeout`` or ``verify_ssl`` is a header); login/password are sent
as basic auth. Any 2xx answer is success; anything else fails the attempt with the status and
its standard phrase -- never the remote body, which would land in ``last_error`` where every
viewer reads it (the engine retries the attempt with backoff; a redirect fails for good).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from http import HTTPStatus
from urllib.parse import quote, unquote, urlsplit

from airflow_escalation.channels.base import (
    Channel,
    ChannelError,
    ConnectionInfo,
    PermanentChannelError,
    failure_reason,
)

if TYPE_CHECKING:
    from airflow_escalation.channels.message import EscalationMessage
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

USER_AGENT = "airflow-provider-escalation"


def redact(url: str) -> str:
    """``scheme://host[:port]/…``: enough to recognise the endpoint, no tokens in paths or queries."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return shown + ("/…" if (parts.path not in ("", "/") or parts.query) else "/")


def target_path(identifier: str) -> str:
    """The identifier as a path below the connection's base path, percent-encoded; or
    :class:`PermanentChannelError` saying why it may not be one (see the module's docstring)."""
    ident = identifier.strip()
    if "://" in ident or ident.startswith("//") or "\\" in ident:
        raise PermanentChannelError(
            f"target {_shown(ident)}: must be a path under the connection's URL, not an absolute "
            f"or scheme-relative URL (use a connection for another host)"
        )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in ident):
        raise PermanentChannelError(f"target {_shown(ident)}: control characters are not allowed")
    path = ident.split("?", 1)[0]
    decoded = path
    for _ in range(3):  # %252e%252e is ".." after two decodings: refuse what any server may see
        decoded, previous = unquote(decoded), decoded
        if "\\" in decoded or any(segment in (".", "..") for segment in decoded.split("/")):
            raise PermanentChannelError(
                f"target {_shown(ident)}: '.' and '..' path segments (also percent-encoded) are not "
                f"allowed: the path must stay under the connection's base path"
            )
        if decoded == previous:
            break
    # a path, never a fragment: "#alerts" is sent as /%23alerts (spaces and the like encoded too)
    return quote(ident.lstrip("/"), safe="/:@!$&'()*+,;=-._~%?")


def _shown(identifier: str) -> str:
    """The identifier as an error quotes it: a URL only up to its host (paths may hold tokens)."""
    if identifier.startswith("//"):
        return repr(redact("x:" + identifier)[2:])
    if "://" in identifier:
        return repr(redact(identifier))
    return repr(identifier[:80] + ("…" if len(identifier) > 80 else ""))


def webhook_url(base_url: str, identifier: str, has_host: bool) -> str:
    """Where to POST: the connection's ``base_url`` + the identifier as a path below it."""
    if not has_host:
        raise PermanentChannelError(
            "the connection has no host: give it the webhook's scheme, host and base path; the "
            "target identifier is a path below it"
        )
    return base_url.rstrip("/") + "/" + target_path(identifier)


class HttpChannel(Channel):
    """POST :meth:`EscalationMessage.to_webhook_json` through ``HttpAsyncHook``."""

    conn_types = ("http", "https")
    provider_package = "apache-airflow-providers-http"
    provider_module = "airflow.providers.http.hooks.http"
    extra = "http"

    async def send(
        self,
        message: EscalationMessage,
        target: EscalationTarget,
        record: EscalationRecord,
        level: EscalationLevel,
        connection: ConnectionInfo,
    ) -> None:
        await self.post(
            target.conn_id or connection.conn_id,
            target.identifier,
            message.to_webhook_json(),
            has_host=bool(connection.host),
        )

    async def post(self, conn_id: str, identifier: str, body: dict[str, Any], *, has_host: bool = True) -> int:
        """POST ``body`` as JSON; return the status (2xx) or raise :class:`ChannelError`."""
        module = self.import_provider()
        session_cls = getattr(module, "AsyncHttpSession", None)
        if session_cls is None:
            raise PermanentChannelError(
                f"the installed {self.provider_package} is too old (HttpAsyncHook sessions came in "
                f"6.0.1): {self.install_hint()}"
            )
        import aiohttp

        # one attempt per delivery: the engine retries with backoff and records each attempt
        hook = module.HttpAsyncHook(method="POST", http_conn_id=conn_id, retry_limit=1)
        config = await hook.config()
        url = webhook_url(config.base_url, identifier, has_host)
        async with aiohttp.ClientSession() as session:
            http = session_cls(
                hook=hook, request=session.post, method="POST", config=config.model_copy(update={"base_url": ""})
            )
            try:
                response = await http.run(
                    endpoint=url,
                    json=body,
                    headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                    # a redirect could lead the connection's headers and credentials elsewhere
                    extra_options={"check_response": False, "allow_redirects": False},
                )
            except aiohttp.ClientError as exc:
                raise ChannelError(f"POST {redact(url)} failed: {failure_reason(exc)}") from None
            async with response:
                status = response.status
                if 200 <= status < 300:
                    return status
                try:
                    answer = f"HTTP {status} {HTTPStatus(status).phrase}"
                except ValueError:
                    answer = f"HTTP {status}"
                if 300 <= status < 400:
                    raise PermanentChannelError(
                        f"POST {redact(url)} answered {answer}: redirects are not followed; point "
                        f"the connection and the target at the final URL"
                    )
                raise ChannelError(f"POST {redact(url)} answered {answer}")
