"""The demo's live timeline: an escalation's steps and what the local receivers got."""

from __future__ import annotations

import threading
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from airflow_escalation.core.timeline import TimelineStep, steps


def say(text: str = "") -> None:
    print(text, flush=True)


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


class Timeline:
    """Prints the record's history and what the local receivers got, each once, as they come."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start: datetime | None = None
        self.seen_steps = 0
        self.seen_targets = 0  # of the last step printed
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
        """New steps of the record (core/timeline.steps, as the pages show them) and the receipts
        among the first ``received``, in time order. Take ``received`` before reading the record:
        every receipt printed then follows its step."""
        history = record["history"]
        if self.start is None and history:
            self.start = _at(history[0]["at"])
        found = steps(history)
        lines = []
        if self.seen_steps and len(found[self.seen_steps - 1].targets) > self.seen_targets:
            # the last step printed has paged since (a trigger's level 1 is paged in a later write)
            step = found[self.seen_steps - 1]
            more = ", ".join(step.targets[self.seen_targets :])
            lines.append((_at(step.events[-1]["at"]), 0, f"level {step.level} paged \u2192 {more}"))
        lines += [(_at(step.at), 0, self._step_text(step)) for step in found[self.seen_steps :]]
        self.seen_steps = len(found)
        self.seen_targets = len(found[-1].targets) if found else 0
        with self._lock:
            receipts, self.seen_receipts = self.receipts[self.seen_receipts : received], received
        lines += [(at, 1, f"    {text}") for at, text, about in receipts if record["id"] in about]
        for at, _, text in sorted(lines, key=lambda line: line[:2]):
            say(f"  {self._when(at)}  {text}")

    @staticmethod
    def _step_text(step: TimelineStep) -> str:
        text = step.title
        if step.targets:
            text += " \u2192 " + ", ".join(step.targets)
        return text + (f" ({step.detail})" if step.detail else "")

    def _when(self, at: datetime) -> str:
        seconds = (at - self.start).total_seconds() if self.start else 0.0
        return f"+{seconds:5.1f}s ({seconds * self.speed / 60:4.1f} policy min)"
