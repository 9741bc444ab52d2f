"""A local spool for escalation hand-offs that could not reach the service.

A failure callback has a fraction of a second to hand its trigger to the escalation service and
must never raise into Airflow's finalisation. When the service cannot be reached (or answers
with an error a later attempt may not repeat), the callback writes the request here and returns;
whoever drains the spool sends it later.

**Layout.** One JSON file per entry in the spool directory (default
``$AIRFLOW_HOME/escalation_spool``; ``[escalation] spool_dir`` or the notifier's ``spool_dir=``
override it). Names start with a nanosecond timestamp, so a directory listing is the FIFO order.
An entry is written to a temporary file, fsynced and renamed into place: readers never see half
an entry, and concurrent writers (many task processes on one worker) need no lock.

**Claims.** A drainer claims an entry by renaming ``X.json`` to ``X.<pid>-<rand>.claim``; a
rename is atomic, so two drainers (two callbacks, the triggerer and a task, a cron job) never
send the same entry twice at the same time. A claim older than ``stale_claim_seconds`` (its
drainer was killed, e.g. by ``[core] task_success_overtime``) is renamed back and retried.

**Outcomes.** Sent: the file is deleted. Transient failure (service unreachable, timeout, 5xx,
429, auth refused): the entry goes back with ``attempts`` + 1 and draining stops (the next
entries would fail the same way). Permanent failure (unknown policy, invalid request) or older
than ``max_age``: the entry moves to ``dead/`` with the reason, and is logged; nothing is
silently dropped.

**Who drains.** The spool is a directory on one machine: the escalation service (in the API
server) cannot see it unless it runs on the same machine. It is drained by, on that machine:

- the next ``EscalationNotifier`` callback (task or DAG level, or a Deadline Alert), before it
  sends its own trigger, within a small time budget;
- ``EscalationOperator`` and ``EscalationSensor`` when they start, and the triggerer's shared
  escalation poller on every poll (Deadline Alert callbacks spool in the triggerer);
- ``airflow escalation spool drain`` (or ``python -m airflow_escalation.spool drain``; cron, a
  systemd timer, a container's preStop), and ``airflow escalation spool list`` to inspect it
  (the command line: :mod:`airflow_escalation.cli.spool`).

This module imports nothing from Airflow at import time.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_escalation.handoff.steps import Blocking, Plan, arun, run

log = logging.getLogger("airflow_escalation.spool")

SPOOL_VERSION = 1
DEFAULT_DIR_NAME = "escalation_spool"
DEFAULT_MAX_AGE = timedelta(hours=24)
DEFAULT_STALE_CLAIM_SECONDS = 120.0
DEAD_DIR = "dead"

KIND_TRIGGER = "trigger"
KIND_RESOLVE = "resolve"
KINDS = (KIND_TRIGGER, KIND_RESOLVE)

# what a sender reports for one entry
SENT = "sent"
RETRY = "retry"  # transient: keep it, stop draining
DEAD = "dead"  # permanent: move it to dead/


def default_spool_dir() -> Path:
    """``[escalation] spool_dir``, else ``$AIRFLOW_HOME/escalation_spool``."""
    configured = ""
    try:
        from airflow.configuration import conf

        configured = (conf.get("escalation", "spool_dir", fallback="") or "").strip()
    except Exception:  # noqa: BLE001 - outside Airflow, or a broken config: use the default
        configured = os.environ.get("AIRFLOW__ESCALATION__SPOOL_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    home = os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return Path(home).expanduser() / DEFAULT_DIR_NAME


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class SpoolEntry:
    """One spooled request (the file's JSON) and where it is on disk."""

    path: Path
    kind: str
    conn_id: str
    request: dict[str, Any]
    created_at: datetime
    attempts: int = 1
    last_error: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def incident_id(self) -> str:
        return str(self.request.get("incident_id", ""))

    @property
    def age(self) -> timedelta:
        return _utcnow() - self.created_at

    @classmethod
    def load(cls, path: Path) -> SpoolEntry:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("kind") not in KINDS or not isinstance(data.get("request"), dict):
            raise ValueError(f"not a spool entry: {path.name}")
        created = datetime.fromisoformat(data["created_at"])
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        return cls(
            path=path,
            kind=data["kind"],
            conn_id=str(data.get("conn_id") or ""),
            request=data["request"],
            created_at=created,
            attempts=int(data.get("attempts", 1)),
            last_error=str(data.get("last_error") or ""),
            data=data,
        )


@dataclass
class DrainReport:
    """What one drain did."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    left: int = 0  # entries still waiting when the drain stopped
    stopped: str = ""  # why it stopped early: "unavailable", "budget", "" (spool empty)
    blocked_incidents: set[str] = field(default_factory=set)  # incidents with entries still waiting
    last_error: str = ""
    failed_conn_id: str | None = None  # the connection of the entry that stopped the drain

    @property
    def clean(self) -> bool:
        return self.left == 0


class EscalationSpool:
    """The spool directory. Safe for many processes at once; see the module docstring."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        stale_claim_seconds: float = DEFAULT_STALE_CLAIM_SECONDS,
    ) -> None:
        self.directory = Path(directory).expanduser() if directory else default_spool_dir()
        self.max_age = max_age
        self.stale_claim_seconds = float(stale_claim_seconds)

    def __repr__(self) -> str:
        return f"EscalationSpool({str(self.directory)!r})"

    @property
    def dead_directory(self) -> Path:
        return self.directory / DEAD_DIR

    # ------------------------------------------------------------------ writing

    def put(
        self,
        kind: str,
        request: dict[str, Any],
        *,
        conn_id: str,
        error: str = "",
        attempts: int = 1,
        created_at: datetime | None = None,
    ) -> Path:
        """Write one entry atomically; returns its path."""
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        data = {
            "version": SPOOL_VERSION,
            "kind": kind,
            "conn_id": conn_id,
            "created_at": (created_at or _utcnow()).isoformat(),
            "attempts": attempts,
            "last_error": error[:2000],
            "pid": os.getpid(),
            "request": request,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
        return self._write(self.directory / name, data)

    def _write(self, path: Path, data: dict[str, Any]) -> Path:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        payload = json.dumps(data, default=str, separators=(",", ":")).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    def put_dead(self, kind: str, request: dict[str, Any], *, conn_id: str, reason: str) -> Path:
        """Keep a request the service refused for good (``dead/``), for a human to look at."""
        self.dead_directory.mkdir(parents=True, exist_ok=True)
        data = {
            "version": SPOOL_VERSION,
            "kind": kind,
            "conn_id": conn_id,
            "created_at": _utcnow().isoformat(),
            "attempts": 1,
            "last_error": reason[:2000],
            "pid": os.getpid(),
            "request": request,
            "dead_reason": reason[:2000],
            "dead_at": _utcnow().isoformat(),
        }
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
        return self._write(self.dead_directory / name, data)

    # ------------------------------------------------------------------ reading

    def pending(self) -> list[Path]:
        """Entries waiting to be sent, oldest first (stale claims are released first)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        now = time.time()
        waiting: list[str] = []
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                waiting.append(name)
            elif name.endswith(".claim"):
                path = self.directory / name
                try:
                    if now - path.stat().st_mtime > self.stale_claim_seconds:
                        original = name.split(".", 1)[0] + ".json"
                        os.rename(path, self.directory / original)  # atomic: one reclaimer wins
                        log.warning("escalation spool: released the stale claim %s", name)
                        waiting.append(original)
                except FileNotFoundError:
                    pass
        return [self.directory / n for n in sorted(set(waiting))]

    def __len__(self) -> int:
        return len(self.pending())

    def entries(self) -> list[SpoolEntry]:
        """Every readable waiting entry (for inspection; draining claims them one by one)."""
        out = []
        for path in self.pending():
            try:
                out.append(SpoolEntry.load(path))
            except (OSError, ValueError):
                continue
        return out

    def dead_entries(self) -> list[Path]:
        try:
            return sorted(self.dead_directory.glob("*.json"))
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ claims

    def claim(self, path: Path) -> Path | None:
        """Take ``path`` for sending; ``None`` when another drainer took it first."""
        claimed = path.with_name(f"{path.stem}.{os.getpid()}-{secrets.token_hex(3)}.claim")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        try:
            os.utime(claimed)  # the claim's age counts from now
        except OSError:
            pass
        return claimed

    def _original(self, claimed: Path) -> Path:
        return claimed.with_name(claimed.name.split(".", 1)[0] + ".json")

    def release(self, claimed: Path, entry: SpoolEntry | None, error: str) -> None:
        """Put a claimed entry back, one attempt older."""
        original = self._original(claimed)
        if entry is not None:
            data = dict(entry.data)
            data["attempts"] = entry.attempts + 1
            data["last_error"] = error[:2000]
            self._write(original, data)
            _unlink(claimed)
        else:
            os.rename(claimed, original)

    def done(self, claimed: Path) -> None:
        _unlink(claimed)

    def bury(self, claimed: Path, entry: SpoolEntry | None, reason: str) -> Path:
        """Move a claimed entry to ``dead/`` with the reason (kept for a human, never resent)."""
        self.dead_directory.mkdir(parents=True, exist_ok=True)
        target = self.dead_directory / self._original(claimed).name
        if entry is not None:
            data = dict(entry.data)
            data["dead_reason"] = reason[:2000]
            data["dead_at"] = _utcnow().isoformat()
            self._write(target, data)
            _unlink(claimed)
        else:
            os.rename(claimed, target)
        log.error("escalation spool: gave up on %s (%s); kept in %s", claimed.name, reason, target)
        return target

    # ------------------------------------------------------------------ draining

    def draining(
        self,
        send: Callable[[SpoolEntry], Plan[tuple[str, str]]],
        *,
        budget_seconds: float = 1.0,
        limit: int | None = None,
    ) -> Plan[DrainReport]:
        """The drain as a plan (:mod:`airflow_escalation.handoff.steps`): send waiting entries
        oldest first until the spool is empty, a transient failure, ``budget_seconds`` or
        ``limit``. ``send(entry)`` is the plan of one send, returning ``(SENT | RETRY | DEAD,
        message)``; an exception from it counts as RETRY. File work is yielded as
        :class:`~airflow_escalation.handoff.steps.Blocking` steps."""
        report = DrainReport()
        deadline = time.monotonic() + budget_seconds
        paths = yield Blocking(self.pending)
        for index, path in enumerate(paths):
            if (time.monotonic() >= deadline and index > 0) or (limit is not None and index >= limit):
                report.stopped = "budget"
                yield Blocking(self._count_left, (report, paths[index:]))
                return report
            claimed = yield Blocking(self.claim, (path,))
            if claimed is None:
                continue
            entry, problem = yield Blocking(self._load_claimed, (claimed,))
            if entry is None:
                yield Blocking(self.bury, (claimed, None, problem))
                report.dead += 1
                continue
            try:
                outcome, message = yield from send(entry)
            except Exception as exc:  # noqa: BLE001 - a sender must not raise; treat it as transient
                outcome, message = RETRY, f"{type(exc).__name__}: {exc}"
            outcome, message = self._expiry(entry, outcome, message)
            yield Blocking(self._settle, (claimed, entry, outcome, message))
            if outcome == SENT:
                report.sent += 1
            elif outcome == DEAD:
                report.dead += 1
            else:
                report.retried += 1
                report.stopped = "unavailable"
                report.last_error = message
                report.failed_conn_id = entry.conn_id
                yield Blocking(self._count_left, (report, paths[index:]))
                return report
        return report

    def drain(
        self, send: Callable[[SpoolEntry], tuple[str, str]], *, budget_seconds: float = 1.0, limit: int | None = None
    ) -> DrainReport:
        """:meth:`draining` with a plain ``send(entry) -> (outcome, message)``, in this thread."""
        plan = self.draining(_SendEntry.plan, budget_seconds=budget_seconds, limit=limit)
        return run(plan, lambda step: send(step.entry))

    async def adrain(
        self, send: Callable[[SpoolEntry], Any], *, budget_seconds: float = 1.0, limit: int | None = None
    ) -> DrainReport:
        """:meth:`draining` with an async ``send``; file operations run in a worker thread."""

        async def call(step: _SendEntry) -> Any:
            return await send(step.entry)

        return await arun(self.draining(_SendEntry.plan, budget_seconds=budget_seconds, limit=limit), call)

    def _load_claimed(self, claimed: Path) -> tuple[SpoolEntry | None, str]:
        try:
            entry = SpoolEntry.load(claimed)
        except (OSError, ValueError) as exc:
            return None, f"unreadable entry: {exc}"
        entry.path = self._original(claimed)
        return entry, ""

    def _expiry(self, entry: SpoolEntry, outcome: str, message: str) -> tuple[str, str]:
        if outcome == RETRY and entry.age > self.max_age:
            return (
                DEAD,
                f"still failing after {entry.attempts + 1} attempts over {entry.age} "
                f"(max age {self.max_age}): {message}",
            )
        return outcome, message

    def _settle(self, claimed: Path, entry: SpoolEntry, outcome: str, message: str) -> None:
        if outcome == SENT:
            self.done(claimed)
        elif outcome == DEAD:
            self.bury(claimed, entry, message)
        else:
            self.release(claimed, entry, message)

    def _count_left(self, report: DrainReport, paths: Iterable[Path]) -> None:
        for path in paths:
            if not path.exists():
                continue
            report.left += 1
            try:
                report.blocked_incidents.add(SpoolEntry.load(path).incident_id)
            except (OSError, ValueError):
                continue


@dataclass(frozen=True)
class _SendEntry:
    """The step of a plain ``send`` callback: send this entry."""

    entry: SpoolEntry

    @classmethod
    def plan(cls, entry: SpoolEntry) -> Plan[tuple[str, str]]:
        result: tuple[str, str] = yield cls(entry)
        return result


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


__all__ = [
    "DEAD",
    "KIND_RESOLVE",
    "KIND_TRIGGER",
    "RETRY",
    "SENT",
    "DrainReport",
    "EscalationSpool",
    "SpoolEntry",
    "default_spool_dir",
]
