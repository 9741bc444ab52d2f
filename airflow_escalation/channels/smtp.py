"""E-mail (``smtp`` connections) through the SMTP provider's ``SmtpHook``.

The target identifier is the address (several may be separated by ``,`` or ``;``); a target
whose identifier is not an address (a ``user`` target named ``lead``) may carry it in
``metadata.email``. The sender is the connection's ``from_email`` extra (or
``metadata.from_email`` on the target). Host, port, login/password, ``disable_ssl``,
``disable_tls``, ``timeout`` and ``ssl_context`` are the SMTP connection's own settings.

Each e-mail is ``multipart/alternative`` with a plain-text and an HTML part (every value in the
HTML is escaped); ``References`` carries one id per escalation so mail clients thread all of an
escalation's notifications together. The hook's async client is used (``aget_conn``); providers
without it are driven in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from airflow_escalation.channels.base import Channel, ConnectionInfo, PermanentChannelError

if TYPE_CHECKING:
    from airflow_escalation.channels.message import EscalationMessage
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

_SPLIT = re.compile(r"\s*[,;]\s*")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def recipients(target: EscalationTarget) -> list[str]:
    """The target's e-mail addresses, or :class:`PermanentChannelError` saying what is wrong."""
    raw = target.identifier
    if "@" not in raw and target.metadata.get("email"):
        raw = str(target.metadata["email"])
    addresses = [a for a in _SPLIT.split(raw.strip()) if a]
    bad = [a for a in addresses if not _ADDRESS.match(a)]
    if not addresses or bad:
        raise PermanentChannelError(
            f"target {target.key}: {', '.join(map(repr, bad or [raw]))} is not an e-mail address "
            f"(set the identifier, or metadata.email, to an address)"
        )
    return addresses


def build_email(
    message: EscalationMessage, sender: str, to: list[str], domain: str = "airflow-escalation"
) -> EmailMessage:
    """The ``multipart/alternative`` e-mail: text first, HTML preferred."""
    mail = EmailMessage()
    mail["Subject"] = message.title  # one line: the message model strips control characters
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@{domain}>"
    thread = f"<escalation-{message.record_id}@{domain}>"
    mail["References"] = thread
    mail["In-Reply-To"] = thread
    mail["X-Escalation-Id"] = message.record_id
    mail["X-Escalation-Level"] = str(message.level)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.to_text())
    mail.add_alternative(message.to_html(), subtype="html")
    return mail


class SmtpChannel(Channel):
    """Send the text + HTML e-mail through ``SmtpHook``."""

    conn_types = ("smtp",)
    provider_package = "apache-airflow-providers-smtp"
    provider_module = "airflow.providers.smtp.hooks.smtp"
    extra = "smtp"

    async def send(
        self,
        message: EscalationMessage,
        target: EscalationTarget,
        record: EscalationRecord,
        level: EscalationLevel,
        connection: ConnectionInfo,
    ) -> None:
        module = self.import_provider()
        to = recipients(target)
        conn_id = target.conn_id or connection.conn_id
        hook = module.SmtpHook(smtp_conn_id=conn_id)
        override = target.metadata.get("from_email")
        if hasattr(hook, "aget_conn"):
            async with hook:  # connects (aget_conn), quits on the way out
                mail = build_email(message, self._sender(hook, conn_id, override), to)
                await self._send_async(hook, mail, to)
        else:  # pragma: no cover - SMTP providers without the async client
            await asyncio.to_thread(self._send_sync, hook, message, to, conn_id, override)

    @staticmethod
    def _sender(hook: Any, conn_id: str, override: Any) -> str:
        sender = str(override or hook.from_email or "")
        if not sender:
            raise PermanentChannelError(f'SMTP connection {conn_id!r} has no sender: set "from_email" in its extra')
        return sender

    @staticmethod
    async def _send_async(hook: Any, mail: EmailMessage, to: list[str]) -> None:
        client = getattr(hook, "_smtp_client", None)
        if client is not None and hasattr(client, "sendmail"):
            await client.sendmail(str(mail["From"]), to, mail.as_string())
            return
        # a provider that hides its client: the hook's own API (HTML part only)
        await hook.asend_email_smtp(
            to=to,
            subject=str(mail["Subject"]),
            from_email=str(mail["From"]),
            html_content=mail.get_body(("html",)).get_content(),
            mime_subtype="alternative",
        )

    def _send_sync(
        self, hook: Any, message: EscalationMessage, to: list[str], conn_id: str, override: Any
    ) -> None:  # pragma: no cover - see send
        with hook:
            mail = build_email(message, self._sender(hook, conn_id, override), to)
            hook._smtp_client.sendmail(str(mail["From"]), to, mail.as_string())
