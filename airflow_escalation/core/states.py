"""The escalation state machine: which event moves a record from which state to which.

PENDING → ACTIVE → ESCALATING → ACTIVE (next level); ACKNOWLEDGED and the terminal states
RESOLVED, CANCELLED, TIMED_OUT and FAILED. Nothing leaves a terminal state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_escalation.core.timeutil import UTC
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, OPEN_STATE_VALUES, TERMINAL_STATE_VALUES
from airflow_escalation.core.types import EscalationEvent as Ev
from airflow_escalation.core.types import EscalationState as St


class InvalidTransition(ValueError):
    """An event that the record's current state does not allow."""

    def __init__(self, state: St, event: Ev) -> None:
        super().__init__(f"cannot {event.value} an escalation in state {state.value}")
        self.state = state
        self.event = event


@dataclass
class StateTransition:
    from_state: St
    to_state: St
    event: Ev
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    actor: str = "system"
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "event": self.event.value,
            "timestamp": self.timestamp.isoformat(),
            "actor": self.actor,
            "details": self.details,
        }


class EscalationStateMachine:
    """Valid transitions as a table ``(state, event) -> state``."""

    TRANSITIONS: dict[tuple[St, Ev], St] = {
        (St.PENDING, Ev.START): St.ACTIVE,
        (St.PENDING, Ev.ACKNOWLEDGE): St.ACKNOWLEDGED,
        (St.ACTIVE, Ev.NOTIFY): St.ACTIVE,
        (St.ACTIVE, Ev.ESCALATE): St.ESCALATING,
        (St.ACTIVE, Ev.ACKNOWLEDGE): St.ACKNOWLEDGED,
        (St.ESCALATING, Ev.ESCALATE_SUCCESS): St.ACTIVE,
        (St.ESCALATING, Ev.ACKNOWLEDGE): St.ACKNOWLEDGED,
        # an acknowledged record climbs again only when forced, or when its policy escalates
        # until resolved (the UNRESOLVED trigger)
        (St.ACKNOWLEDGED, Ev.ESCALATE): St.ESCALATING,
        (St.ACKNOWLEDGED, Ev.NOTIFY): St.ACKNOWLEDGED,
    }
    for _state in (St.PENDING, St.ACTIVE, St.ESCALATING, St.ACKNOWLEDGED):
        TRANSITIONS[(_state, Ev.RESOLVE)] = St.RESOLVED
        TRANSITIONS[(_state, Ev.CANCEL)] = St.CANCELLED
        TRANSITIONS[(_state, Ev.TIMEOUT)] = St.TIMED_OUT
        TRANSITIONS[(_state, Ev.MAX_LEVEL_REACHED)] = St.TIMED_OUT
        TRANSITIONS[(_state, Ev.ERROR)] = St.FAILED
    del _state

    def can_transition(self, state: St | str, event: Ev | str) -> bool:
        return (St(state), Ev(event)) in self.TRANSITIONS

    def get_next_state(self, state: St | str, event: Ev | str) -> St | None:
        return self.TRANSITIONS.get((St(state), Ev(event)))

    def transition(
        self, state: St | str, event: Ev | str, actor: str = "system", at: datetime | None = None, **details: Any
    ) -> StateTransition:
        state, event = St(state), Ev(event)
        target = self.TRANSITIONS.get((state, event))
        if target is None:
            raise InvalidTransition(state, event)
        return StateTransition(state, target, event, at or datetime.now(UTC), actor, details)

    def get_valid_events(self, state: St | str) -> list[Ev]:
        state = St(state)
        return [ev for (st, ev) in self.TRANSITIONS if st == state]

    def get_reachable_states(self, state: St | str) -> set[St]:
        seen: set[St] = set()
        frontier = [St(state)]
        while frontier:
            current = frontier.pop()
            for (st, _ev), target in self.TRANSITIONS.items():
                if st == current and target not in seen:
                    seen.add(target)
                    frontier.append(target)
        return seen


DEFAULT_STATE_MACHINE = EscalationStateMachine()


def can(action: Ev | str, state: St | str) -> bool:
    """Whether ``action`` (an event: acknowledge, resolve, escalate, cancel, …) is allowed in
    ``state``. The one answer for the engine, the service, the UI script, sensors, triggers and the
    hand-off; an unknown action or state is simply not allowed."""
    try:
        return (St(state), Ev(action)) in EscalationStateMachine.TRANSITIONS
    except ValueError:
        return False


def allowed_actions(state: St | str) -> list[str]:
    """The actions ``state`` allows, by value (what the UI script is served)."""
    try:
        current = St(state)
    except ValueError:
        return []
    return sorted({ev.value for (st, ev) in EscalationStateMachine.TRANSITIONS if st == current})


def state_table() -> dict[str, Any]:
    """The state sets and the actions each state allows, as plain values: what the pages embed
    for the UI script (``escalation.js`` asks this table, it keeps no copy)."""
    return {
        "active": list(ACTIVE_STATE_VALUES),
        "open": list(OPEN_STATE_VALUES),
        "closed": list(TERMINAL_STATE_VALUES),
        "actions": {state.value: allowed_actions(state) for state in St},
    }
