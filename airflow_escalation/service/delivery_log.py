"""The service's default delivery (out, to people): log each notification and count it delivered.

The engine calls the handler for targets no channel resolver claims (channels that deliver
through Airflow connections are added with ``engine.add_channel_resolver``). Replace it with
``app.state.engine.set_notification_handler(handler)``.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger("airflow_escalation.delivery")


def make_log_handler(base_url: str = "") -> Callable[..., Awaitable[bool]]:
    """A handler that logs ``target``, ``level`` and ``incident`` at INFO and returns True."""
    api = f"{base_url.rstrip('/')}/escalation/api/v1/escalations" if base_url else ""

    async def log_notification(record: Any, level: Any, targets: list[Any]) -> bool:
        for target in targets:
            log.info(
                "ESCALATION NOTIFICATION target=%s level=%s incident=%s escalation=%s policy=%s state=%s%s",
                target.key,
                level.level,
                record.incident_id,
                record.id,
                record.policy_name,
                record.state,
                f" url={api}/{record.id}" if api else "",
            )
        return True

    return log_notification
