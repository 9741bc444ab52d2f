"""The demo's policies: a policies file with its clock sped up and its targets wired to connections.

Every duration in minutes (delays, repeat intervals, cooldown, auto-resolve) is divided by
``speed``, so ``speed=60`` turns the spec's "15 minutes" into 15 seconds. Targets that name no
connection get one: e-mail targets the SMTP connection, every other target the webhook
connection (its identifier becomes the webhook path: ``/team-lead``, ``/%23alerts``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from airflow_escalation.runtime.policy_config import load_yaml

MINUTE_KEYS = ("delay_minutes", "repeat_interval_minutes", "auto_resolve_minutes", "cooldown_minutes")


def _scaled(mapping: dict[str, Any], speed: float) -> None:
    for key in MINUTE_KEYS:
        if mapping.get(key):
            mapping[key] = mapping[key] / speed


def demo_policies(source: Path, *, speed: float, webhook_conn_id: str, smtp_conn_id: str) -> dict[str, Any]:
    """The ``escalation:`` block of ``source`` for the demo (``store`` dropped: the service
    keeps escalations in Airflow's metadata database)."""
    block = copy.deepcopy(load_yaml(source)["escalation"])
    block.pop("store", None)
    for policy in block.get("policies", []):
        _scaled(policy, speed)
        for level in policy.get("levels", []):
            _scaled(level, speed)
            for target in level.get("targets", []):
                if not target.get("conn_id"):
                    target["conn_id"] = smtp_conn_id if target.get("type") == "email" else webhook_conn_id
    return {"escalation": block}
