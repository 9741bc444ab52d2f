"""What the engine reports for metrics, without knowing where they go (docs/metrics.md).

The engine calls an :class:`EngineMetrics` (``EscalationEngine.set_metrics``); this base class
records nothing. The service installs one that emits through Airflow's ``Stats``
(``service/metrics.py``); ``EscalationEngineConfig.metrics_enabled = False`` keeps the engine on
this base class whatever is installed. A metrics call never fails an engine call: the engine
logs and drops what a sink raises.

Which escalation events a committed change makes is decided here, once
(:func:`escalation_events`): the engine passes the record as written and the state it had before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_escalation.core.models import Delivery, EscalationRecord

#: escalation events, each counted per policy
TRIGGERED = "triggered"
SUPPRESSED = "suppressed"  # refused within the policy's cooldown, or silenced (docs/oncall.md)
JOINED = "joined"  # a trigger that joined the incident's open escalation (nobody paged again)
ESCALATED = "escalated"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"
CANCELLED = "cancelled"
TIMED_OUT = "timed_out"
FAILED = "failed"

#: delivery outcomes, each counted per channel
SENT = "sent"
RETRIED = "retried"  # failed, another attempt is booked
DELIVERY_FAILED = "failed"  # failed for good

_CLOSING = {"resolved": RESOLVED, "cancelled": CANCELLED, "timed_out": TIMED_OUT, "failed": FAILED}


def escalation_events(
    record: EscalationRecord, from_state: str | None, action: str, escalations_before: int
) -> list[str]:
    """The events a committed change of ``record`` makes (``from_state`` None: it was created)."""
    if from_state is None:
        if record.suppressed_by is not None:  # silenced at trigger: recorded, closed, nothing sent
            return [SUPPRESSED]
        return [TRIGGERED] + [ESCALATED] * max(0, record.escalation_count)
    if action == "trigger_existing":
        return [JOINED]
    events = [ESCALATED] * max(0, record.escalation_count - escalations_before)
    if record.state == from_state:
        return events
    if record.state == "acknowledged":
        events.append(ACKNOWLEDGED)
    elif record.state in _CLOSING:
        events.append(_CLOSING[record.state])
    return events


class EngineMetrics:
    """Receives the engine's measurements; every method does nothing here."""

    def escalation(self, event: str, policy_name: str) -> None:
        """One escalation event (see the constants above) under ``policy_name``."""

    def time_to(self, what: str, policy_name: str, seconds: float) -> None:
        """``what`` is ``acknowledge`` or ``resolve``: seconds from the trigger to it."""

    def delivery(self, outcome: str, delivery: Delivery) -> None:
        """One attempt of ``delivery`` ended ``outcome`` (sent, retried, failed)."""

    def lateness(self, seconds: float) -> None:
        """A due step ran ``seconds`` after its due time."""

    def changed(self, record: EscalationRecord) -> None:
        """A record was written (a sink keeping an "active" gauge may refresh it)."""


NULL_METRICS = EngineMetrics()


def report_change(
    metrics: EngineMetrics, record: EscalationRecord, from_state: str | None, action: str, escalations_before: int
) -> None:
    """Tell ``metrics`` about one committed change of ``record``."""
    if metrics is NULL_METRICS:
        return
    for event in escalation_events(record, from_state, action, escalations_before):
        metrics.escalation(event, record.policy_name)
        if event == ACKNOWLEDGED and record.acknowledged_at is not None:
            metrics.time_to(
                "acknowledge", record.policy_name, (record.acknowledged_at - record.created_at).total_seconds()
            )
        elif event == RESOLVED and record.resolved_at is not None:
            metrics.time_to("resolve", record.policy_name, (record.resolved_at - record.created_at).total_seconds())
    metrics.changed(record)
