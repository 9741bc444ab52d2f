"""The spec's enums: target types, trigger conditions, states and state-machine events."""

from __future__ import annotations

from enum import Enum


class TargetType(str, Enum):
    """Escalation target types."""

    USER = "user"
    TEAM = "team"
    CHANNEL = "channel"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    EMAIL = "email"
    PHONE = "phone"
    CUSTOM = "custom"


class EscalationTrigger(str, Enum):
    """Conditions a policy escalates on (``EscalationPolicy.triggers``)."""

    UNACKNOWLEDGED = "unacknowledged"
    UNRESOLVED = "unresolved"
    SEVERITY_UPGRADE = "severity_upgrade"
    REPEATED_FAILURE = "repeated_failure"
    THRESHOLD_BREACH = "threshold_breach"
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    CUSTOM = "custom"


class EscalationState(str, Enum):
    """States of an escalation record."""

    PENDING = "pending"
    ACTIVE = "active"
    ESCALATING = "escalating"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    FAILED = "failed"

    # printed and formatted as its value ("active"), as the plain strings records held before
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Still paging: waiting to start, notifying, or climbing."""
        return self.value in ACTIVE_STATE_VALUES

    @property
    def is_open(self) -> bool:
        """Not terminal: the incident still has a live record (acknowledged counts)."""
        return self not in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        EscalationState.RESOLVED,
        EscalationState.CANCELLED,
        EscalationState.TIMED_OUT,
        EscalationState.FAILED,
    }
)
# The state sets by value, in the enum's order (what the REST API, the hook, the sensor, the
# trigger and the UI script speak). The one definition: everything else imports these.
STATE_VALUES: tuple[str, ...] = tuple(s.value for s in EscalationState)
#: not terminal: the incident still has a live record (acknowledged counts)
OPEN_STATE_VALUES: tuple[str, ...] = tuple(s.value for s in EscalationState if s not in TERMINAL_STATES)
#: still paging: waiting to start, notifying, or climbing
ACTIVE_STATE_VALUES: tuple[str, ...] = (
    EscalationState.PENDING.value,
    EscalationState.ACTIVE.value,
    EscalationState.ESCALATING.value,
)
TERMINAL_STATE_VALUES: tuple[str, ...] = tuple(s.value for s in EscalationState if s in TERMINAL_STATES)


class EscalationEvent(str, Enum):
    """Events that move a record between states."""

    START = "start"
    NOTIFY = "notify"
    ESCALATE = "escalate"
    ESCALATE_SUCCESS = "escalate_success"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    MAX_LEVEL_REACHED = "max_level_reached"
    ERROR = "error"


class DeliveryState(str, Enum):
    """Outcome of one notification to one target (the outbox row's state)."""

    PENDING = "pending"  # written with the transition, waiting for a sender
    SENDING = "sending"  # claimed by a sender (leased)
    SENT = "sent"
    FAILED = "failed"  # gave up after the last attempt
    CANCELLED = "cancelled"  # the record was acknowledged/closed before it went out
    UNKNOWN = "unknown"  # the sender died mid-send: it may have gone out, so it is not re-sent


class BusinessHoursMode(str, Enum):
    """What happens to a notification that falls due outside business hours."""

    WAIT = "wait"  # hold it until the window next opens (default)
    SKIP = "skip"  # drop it; the escalation still advances
    NOTIFY = "notify"  # send it anyway


class DelayBasis(str, Enum):
    """What level N+1's ``delay_minutes`` counts from."""

    PREVIOUS_LEVEL = "previous_level"  # from when level N fired (default; seed: L2 +15, L3 +45)
    TRIGGER = "trigger"  # from the trigger time
