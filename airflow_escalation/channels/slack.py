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
one-click link).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

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
            blocks=message.to_slack_blocks(),
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
