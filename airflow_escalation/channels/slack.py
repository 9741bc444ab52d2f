"""Slack, through the Slack provider's hooks.

* ``slackwebhook`` connections (Incoming Webhooks, ``SlackWebhookHook``): the webhook decides the
  channel, so the target identifier only names the target in messages. The webhook URL is the
  connection's password when it is a full URL, else ``{schema}://{host}/{password}`` (host
  defaulting to ``hooks.slack.com/services``) exactly as the hook builds it.
* ``slack`` connections (the Web API with a bot token, ``SlackHook``): ``chat.postMessage`` to
  the channel named by the target identifier (``#alerts``, a channel id, or a user id for a direct
  message). The connection's ``base_url`` extra points the client elsewhere (a proxy, a test
  server).

Both post Block Kit blocks (header, facts, error excerpt, links, acknowledge/resolve buttons)
with the title as fallback text, and turn link unfurling off (a preview fetch must never open a
one-click link). The buttons are the signed one-click links, except on a ``slack`` connection
with a ``signing_secret`` extra: there they post back to the service's Slack interactivity
endpoint (``service/routes/slack.py``), which acts as the clicking member's escalation user and
updates the message in place (:func:`acted_blocks`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_escalation.channels.base import Channel, ChannelError, ConnectionInfo, failure_reason

if TYPE_CHECKING:
    from airflow_escalation.channels.message import EscalationMessage
    from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget


class SlackWebhookChannel(Channel):
    """Post blocks through ``SlackWebhookHook`` (async client)."""

    conn_types = ("slackwebhook",)
    provider_package = "apache-airflow-providers-slack"
    provider_module = "airflow.providers.slack.hooks.slack_webhook"
    extra = "slack"

    async def send(
        self,
        message: EscalationMessage,
        target: EscalationTarget,
        record: EscalationRecord,
        level: EscalationLevel,
        connection: ConnectionInfo,
    ) -> None:
        module = self.import_provider()
        hook = module.SlackWebhookHook(slack_webhook_conn_id=target.conn_id or connection.conn_id)
        kwargs = dict(text=message.slack_text, blocks=message.to_slack_blocks(), unfurl_links=False, unfurl_media=False)
        try:
            if hasattr(hook, "async_send"):
                await hook.async_send(**kwargs)
            else:  # pragma: no cover - Slack providers without the async client
                await asyncio.to_thread(lambda: hook.send(**kwargs))
        except Exception as exc:  # noqa: BLE001 - any provider error becomes a ChannelError
            raise ChannelError(f"Slack webhook: {failure_reason(exc)}") from None


class SlackApiChannel(Channel):
    """``chat.postMessage`` to the target's channel through ``SlackHook`` (async client)."""

    conn_types = ("slack",)
    provider_package = "apache-airflow-providers-slack"
    provider_module = "airflow.providers.slack.hooks.slack"
    extra = "slack"

    async def send(
        self,
        message: EscalationMessage,
        target: EscalationTarget,
        record: EscalationRecord,
        level: EscalationLevel,
        connection: ConnectionInfo,
    ) -> None:
        module = self.import_provider()
        hook = module.SlackHook(slack_conn_id=target.conn_id or connection.conn_id)
        kwargs = dict(
            channel=target.identifier,
            text=message.slack_text,
            blocks=message.to_slack_blocks(interactive=connection.interactive),
            unfurl_links=False,
            unfurl_media=False,
        )
        try:
            if hasattr(hook, "get_async_client"):
                client = await hook.get_async_client()
                await client.chat_postMessage(**kwargs)
            else:  # pragma: no cover - Slack providers without the async client
                await asyncio.to_thread(lambda: hook.client.chat_postMessage(**kwargs))
        except Exception as exc:  # noqa: BLE001 - any provider error becomes a ChannelError
            raise ChannelError(
                f"Slack chat.postMessage to {target.identifier[:100]!r}: {failure_reason(exc)}"
            ) from None


_DONE = {"acknowledge": "Acknowledged", "resolve": "Resolved"}


def acted_blocks(
    blocks: Any, action: str, actor: str, at: datetime, state: str, record_id: str
) -> list[dict[str, Any]]:
    """The message's ``blocks`` (as Slack reported them in the interaction's ``message``; none
    when Slack left the message out) once ``actor`` took ``action`` at ``at``: the buttons block
    (``escalation_actions``) gives way to "Acknowledged by alice at 09:12" (Slack shows the time
    in each reader's own zone), followed by the buttons of ``record_id`` still allowed in
    ``state``."""
    from airflow_escalation.channels.message import LINK_LABELS, SLACK_ACTIONS_BLOCK, slack_escape
    from airflow_escalation.core.states import can

    kept: list[dict[str, Any]] = []
    buttons: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict) or str(block.get("block_id")) in (SLACK_ACTIONS_BLOCK, "escalation_outcome"):
            continue  # the buttons are rebuilt below; an earlier outcome line gives way to the newest
        kept.append(block)
    epoch = int(at.timestamp())
    fallback = at.strftime("%H:%M UTC")
    line = f"{_DONE.get(action, action)} by *{slack_escape(actor)}* at <!date^{epoch}^{{time}}|{fallback}>"
    kept.append({"type": "context", "block_id": "escalation_outcome", "elements": [{"type": "mrkdwn", "text": line}]})
    for name in ("acknowledge", "resolve"):
        if can(name, state):
            button: dict[str, Any] = {
                "type": "button",
                "action_id": f"escalation_{name}",
                "text": {"type": "plain_text", "text": LINK_LABELS[name]},
                "value": record_id,
            }
            if name == "acknowledge":
                button["style"] = "primary"
            buttons.append(button)
    if buttons:
        kept.append({"type": "actions", "block_id": SLACK_ACTIONS_BLOCK, "elements": buttons})
    return kept
