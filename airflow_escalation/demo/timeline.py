"""The demo's live timeline: an escalation's history and what the local receivers got."""

from __future__ import annotations

import threading
from datetime import datetime
from email.message import EmailMessage
from typing import Any


def say(text: str = "") -> None:
    print(text, flush=True)


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


class Timeline:
    """Prints the record's history and what the local receivers got, each once, as they come."""

    # the intermediate steps of a transition, told by the event that follows them
    QUIET_EVENTS = {"start", "notify", "escalate"}

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start: datetime | None = None
        self.seen_events = 0
        self.receipts: list[tuple[datetime, str, str]] = []  # (received at, text, record id or mail)
        self.seen_receipts = 0
        self.one_click: dict[str, str] = {}
        self._lock = threading.Lock()

    # receiver callbacks (their threads)
    def on_webhook(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            if body.get("links"):
                self.one_click.update({k: v for k, v in body["links"].items() if v})
            self.receipts.append(
                (
                    datetime.now().astimezone(),
                    f"webhook  POST {path:<22} {body.get('title', '')}",
                    str(body.get("record_id")),
                )
            )

    def on_mail(self, recipients: list[str], mail: EmailMessage) -> None:
        with self._lock:
            self.receipts.append(
                (
                    datetime.now().astimezone(),
                    f"e-mail   to {', '.join(recipients):<24} {mail['Subject']}",
                    mail.as_string(),
                )
            )

    def received(self) -> int:
        with self._lock:
            return len(self.receipts)

    def print_new(self, record: dict[str, Any], received: int) -> None:
        """New history events and the receipts among the first ``received``, in time order. Take
        ``received`` before reading the record: every receipt printed then follows its event."""
        history = record["history"]
        if self.start is None and history:
            self.start = _at(history[0]["at"])
        lines = [
            (_at(event["at"]), 0, self._event_text(event))
            for event in history[self.seen_events :]
            if event["event"] not in self.QUIET_EVENTS
        ]
        self.seen_events = len(history)
        with self._lock:
            receipts, self.seen_receipts = self.receipts[self.seen_receipts : received], received
        lines += [(at, 1, f"    {text}") for at, text, about in receipts if record["id"] in about]
        for at, _, text in sorted(lines, key=lambda line: line[:2]):
            say(f"  {self._when(at)}  {text}")

    def _when(self, at: datetime) -> str:
        seconds = (at - self.start).total_seconds() if self.start else 0.0
        return f"+{seconds:5.1f}s ({seconds * self.speed / 60:4.1f} policy min)"

    @staticmethod
    def _event_text(event: dict[str, Any]) -> str:
        details = event.get("details") or {}
        name, level, actor = event["event"], event["level"], event["actor"]
        note = f" ({details['note']})" if details.get("note") else ""
        targets = ", ".join(details.get("targets", []))
        if name == "triggered":
            return f"escalation opened at level {level} (by {actor})"
        if name == "notified":
            round_ = details.get("round", 0)
            return f"level {level}: " + (f"notify {targets}" if not round_ else f"reminder {round_} to {targets}")
        if name == "escalate_success":  # the system climbs on time; a person with the Escalate button
            if actor != "system":
                return f"escalated to level {level} by {actor}"
            return f"nobody acknowledged: escalated to level {level}"
        if name == "retriggered":
            return f"the task failed again and joined this escalation (by {actor})"
        if name == "acknowledge":
            return f"acknowledged by {actor}{note}: the paging stops"
        if name in ("resolve", "cancel"):
            return f"{event['state']} by {actor}{note}: closed"
        return f"{name} by {actor}: {event['state']} at level {level}{note}"
