"""Delivery through Airflow connections, by connection type (docs/channels.md).

=================== ============================ ==================== ==============================
connection type     channel                      target identifier    extra
=================== ============================ ==================== ==============================
``http``            POST the webhook JSON        path or URL          ``[http]``
``smtp``            text + HTML e-mail           e-mail address(es)   ``[smtp]``
``slackwebhook``    Incoming Webhook, blocks     (a label)            ``[slack]``
``slack``           ``chat.postMessage``         channel or user id   ``[slack]``
``pagerduty_events`` Events API v2, dedup by id  (a label)            ``[pagerduty]``
=================== ============================ ==================== ==============================

The service installs a :class:`ChannelResolver` on its engine
(:mod:`airflow_escalation.service.delivery`); targets without a ``conn_id`` go to the engine's
notification handler. Importing this package imports no provider.
"""

from airflow_escalation.channels.base import (
    DEFAULT_REGISTRY,
    Channel,
    ChannelError,
    ChannelNotInstalledError,
    ChannelRegistry,
    ChannelResolver,
    ConnectionInfo,
    PermanentChannelError,
    UnknownConnectionError,
    UnsupportedConnectionTypeError,
    get_channel,
    register_channel,
)
from airflow_escalation.channels.message import EscalationMessage

__all__ = [
    "DEFAULT_REGISTRY",
    "Channel",
    "ChannelError",
    "ChannelNotInstalledError",
    "ChannelRegistry",
    "ChannelResolver",
    "ConnectionInfo",
    "EscalationMessage",
    "PermanentChannelError",
    "UnknownConnectionError",
    "UnsupportedConnectionTypeError",
    "get_channel",
    "register_channel",
]
