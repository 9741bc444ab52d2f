"""What the spec leaves to its reader: names its blocks use but never define or import.

A reader following the spec page defines these before running its blocks; the runner
(``spec_runner.py``) puts them in the namespace first, so the blocks themselves stay verbatim.
Two of them stand for truthound names that are not escalation (``truthound.checkpoint.actions.
SlackNotification``, ``truthound.checkpoint.Checkpoint``): in Airflow the existing action is any
notifier (e.g. the Slack provider's ``SlackWebhookNotifier``) and the checkpoint is a Dag's task,
so this provider ships neither; the blocks import these stand-ins from here instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace
from typing import Any

from airflow_escalation import EscalationLevel, EscalationPolicy, EscalationTarget
from airflow_escalation.routing import ActionRouter, SeverityRule

# The reader's own Slack senders (block "EscalationEngine"): what they were asked to send.
SENT: list[tuple[str, str, str]] = []


async def send_slack_dm(user_id: str, record: Any) -> None:
    SENT.append(("dm", user_id, record.incident_id))


async def send_slack_channel(channel: str, record: Any) -> None:
    SENT.append(("channel", channel, record.incident_id))


# "record = engine.get_record(record_id)": an id the reader has at hand (here, none known).
record_id = "a-record-id-the-reader-has"

# The scheduler factory's wake-up callback (block "Scheduler Types").
WAKE_UPS: list[tuple[Any, ...]] = []


async def callback(*args: Any) -> None:
    WAKE_UPS.append(args)


# Block "Routing Integration" uses a router and SeverityRule without creating/importing them.
router = ActionRouter()


class RecordingAction:
    """An existing action: a notifier (``notify(context)``) that remembers each call."""

    def __init__(self, name: str, **settings: Any) -> None:
        self.name = name
        self.settings = settings
        self.calls: list[dict[str, Any]] = []

    def notify(self, context: dict[str, Any]) -> None:
        self.calls.append(dict(context))


class SlackNotification(RecordingAction):
    """Stands for ``truthound.checkpoint.actions.SlackNotification(webhook_url=...)``."""

    def __init__(self, webhook_url: str) -> None:
        super().__init__("slack", webhook_url=webhook_url)


pagerduty_action = RecordingAction("pagerduty")
email_action = RecordingAction("email")

# Block "EscalationPolicyManager" adds two policies it never defines.
critical_policy = EscalationPolicy(
    name="critical_alerts",
    levels=[
        EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.user("lead", "Team Lead")]),
        EscalationLevel(level=2, delay_minutes=15, targets=[EscalationTarget.user("manager", "Manager")]),
    ],
    severity_filter=["critical", "high"],
)
warning_policy = EscalationPolicy(
    name="warning_alerts",
    levels=[EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.channel("#warnings", "Warnings")])],
    severity_filter=["medium", "low"],
)


class _Status(Enum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass
class Checkpoint:
    """Stands for ``truthound.checkpoint.Checkpoint``: a data check that finds issues and fails."""

    name: str
    data_source: str
    validators: list[str] = field(default_factory=list)

    def run(self) -> Any:
        return SimpleNamespace(
            status=_Status.FAILURE,
            run_id="run-1",
            checkpoint_name=self.name,
            validation_result=SimpleNamespace(statistics=SimpleNamespace(total_issues=3)),
        )


def names() -> dict[str, Any]:
    """The names a block may use without defining them."""
    return {
        "send_slack_dm": send_slack_dm,
        "send_slack_channel": send_slack_channel,
        "record_id": record_id,
        "callback": callback,
        "router": router,
        "SeverityRule": SeverityRule,
        "pagerduty_action": pagerduty_action,
        "email_action": email_action,
        "critical_policy": critical_policy,
        "warning_policy": warning_policy,
    }
