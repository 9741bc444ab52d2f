"""``OnCall``: the on-call configuration joined to the store -- what the engine asks.

The engine asks two things, through this object only:

- :meth:`OnCall.snapshot` → :meth:`Suppressions.match`: is an escalation silenced, or in a
  maintenance window, right now? At a trigger the answer suppresses it (the engine records it
  closed, naming the silence); at a due step it mutes that step's notifications.
- :meth:`OnCall.send`: a ``schedule:`` or ``user:`` target, resolved at delivery time to the
  person on call then and to that person's contact methods, each sent by the engine's usual
  sender (an Airflow connection, else the notification handler). Whom it reached is kept as a
  ``resolution`` item beside the delivery (``schedule:oncall-primary → alice``).

Silences and overrides live in the store (``put_oncall_item``), so every replica sees the same
ones. Everything here that touches the store is blocking; the ``async`` methods move it to a
thread when the store does I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

from airflow_escalation.core import bounds
from airflow_escalation.core.models import EscalationTarget
from airflow_escalation.core.timeutil import UTC
from airflow_escalation.core.types import TargetType
from airflow_escalation.oncall.config import OnCallConfig
from airflow_escalation.oncall.directory import Directory, User
from airflow_escalation.oncall.schedule import OnCallAt, Override, Schedule, Shift
from airflow_escalation.oncall.silence import Matchers, Silence, Subject, Suppression

log = logging.getLogger("airflow_escalation.oncall")

SILENCE, OVERRIDE, RESOLUTION = "silence", "override", "resolution"
#: ``OnCall.send``'s answer for a target it does not resolve (the engine sends it as before)
NOT_MINE: Any = object()
#: resolutions are kept this long after the delivery (then pruned)
RESOLUTION_RETENTION = timedelta(days=30)
PRUNE_EVERY = timedelta(hours=1)  # how often (engine clock) old items are pruned, at most


class OnCallError(ValueError):
    """A request the on-call model refuses (the message names the field)."""


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class Suppressions:
    """The silences and open maintenance windows at one moment: match escalations against them."""

    at: datetime
    silences: tuple[Silence, ...]
    windows: tuple[Suppression, ...]  # open windows, with their scope below
    window_scopes: tuple[tuple[frozenset[str], frozenset[str]], ...]  # (dag_ids, policies)

    def match(self, context: dict[str, Any] | None, policy: str, incident_id: str) -> Suppression | None:
        """The first silence (oldest start first), else window, that matches; None when none."""
        if not self.silences and not self.windows:
            return None
        subject = Subject.of(context, policy, incident_id)
        for silence in self.silences:
            if silence.matchers.matches(subject):
                return silence.suppression()
        for window, (dag_ids, policies) in zip(self.windows, self.window_scopes):
            if subject.dag_id in dag_ids or subject.policy in policies:
                return window
        return None


@dataclass(frozen=True)
class Route:
    """Where a ``schedule:``/``user:`` target leads at one moment."""

    target: str  # "schedule:oncall-primary"
    user: User
    source: str  # as OnCallAt.source
    targets: tuple[EscalationTarget, ...]

    @property
    def label(self) -> str:
        return f"{self.target} → {self.user.id}"


class OnCall:
    """See the module docstring. ``store`` is the escalation store, ``clock`` gives ``now``."""

    NOT_MINE = NOT_MINE

    def __init__(
        self,
        config: OnCallConfig | None,
        store: Any,
        clock: Any = None,
        *,
        cache_seconds: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or OnCallConfig()
        # silences read for triggers and due steps are kept this long (real seconds) before the
        # store is asked again: a stored silence's own times still apply to the second; one
        # created or expired on another replica takes effect here within this delay. Default:
        # 1 s on stores that do I/O, none on the in-memory store.
        self.cache_seconds = (
            (1.0 if getattr(store, "blocking", False) else 0.0) if cache_seconds is None else cache_seconds
        )
        self._monotonic = monotonic
        self._cached: tuple[float, datetime, list[Silence]] | None = None
        self._reading: asyncio.Future[Any] | None = None
        self.directory: Directory = self.config.directory
        self.schedules: dict[str, Schedule] = {s.name: s for s in self.config.schedules}
        self.store = store
        self.clock = clock
        self._pruned_at: datetime | None = None

    def now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    async def _io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(self.store, "blocking", False):
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    # ------------------------------------------------------------------ engine: suppression
    def _fresh(self, at: datetime) -> list[Silence] | None:
        cached = self._cached
        if cached is None or self.cache_seconds <= 0:
            return None
        read_at_mono, read_at, silences = cached
        # every silence that ends after the time it was read for is in the list
        return silences if self._monotonic() - read_at_mono < self.cache_seconds and read_at <= at else None

    def suppressions_at(self, at: datetime) -> Suppressions:
        found = self._fresh(at)
        if found is None:
            self._maybe_prune(at)
            found = self._silences(ends_after=at)
            self._cached = (self._monotonic(), at, found)
        return self._suppressions(at, found)

    def _suppressions(self, at: datetime, found: list[Silence]) -> Suppressions:
        silences = tuple(s for s in found if s.active(at))
        windows, scopes = [], []
        for window in self.config.maintenance_windows:
            opened = window.open_window(at)
            if opened is not None:
                windows.append(window.suppression(opened[1]))
                scopes.append((frozenset(window.dag_ids), frozenset(window.policies)))
        return Suppressions(at, silences, tuple(windows), tuple(scopes))

    async def snapshot(self, at: datetime) -> Suppressions:
        found = self._fresh(at)
        if found is not None:  # no store call, no thread
            return self._suppressions(at, found)
        if self.cache_seconds <= 0:
            return await self._io(self.suppressions_at, at)  # type: ignore[no-any-return]
        # concurrent triggers share one read of the store
        reading = self._reading
        if reading is None or reading.get_loop() is not asyncio.get_running_loop():
            reading = self._reading = asyncio.ensure_future(self._io(self.suppressions_at, at))
            reading.add_done_callback(lambda _: setattr(self, "_reading", None))
            return await asyncio.shield(reading)
        await asyncio.shield(reading)
        return await self.snapshot(at)

    # ------------------------------------------------------------------ engine: delivery
    def route(self, target: EscalationTarget, at: datetime) -> Route | None:
        """Where ``target`` leads at ``at``; None for targets this directory does not know
        (other types, a schedule or user it has no entry for: sent as written)."""
        if target.type is TargetType.SCHEDULE:
            schedule = self.schedules.get(target.identifier)
            if schedule is None:
                return None
            who = schedule.on_call(at, self._overrides(schedule.name, at))
            if who.user is None:
                raise LookupError(f"schedule {schedule.name!r} has nobody on call at {at.isoformat()}")
            user = self.directory.get(who.user)
            if user is None:  # an override named a user since removed from the file
                raise LookupError(f"schedule {schedule.name!r}: user {who.user!r} is not in the directory")
            source = who.source
        elif target.type is TargetType.USER:
            found = self.directory.get(target.identifier)
            if found is None:
                return None
            user, source = found, "directory"
        else:
            return None
        targets = tuple(user.targets())
        if not targets:
            raise LookupError(f"user {user.id!r} has no contact method that can be delivered (email, slack, webhook)")
        return Route(target.key, user, source, targets)

    async def send(
        self,
        delivery: Any,
        at: datetime,
        send_one: Callable[[EscalationTarget], Awaitable[Any]],
    ) -> Any:
        """Deliver ``delivery`` (a ``schedule:``/``user:`` target) to whoever it leads to now.

        Returns :data:`NOT_MINE` for targets :meth:`route` does not resolve. Every contact
        method is sent to; the delivery fails (and is retried, resolved again) only when none
        succeeded.
        """
        if delivery.target.type not in (TargetType.SCHEDULE, TargetType.USER):
            return NOT_MINE
        route = await self._io(self.route, delivery.target, at)
        if route is None:
            return NOT_MINE
        await self._io(self._remember, delivery, route, at)
        log.info("escalation %s: %s (%s)", delivery.record_id, route.label, route.source)
        errors: list[BaseException] = []
        refused = 0
        for target in route.targets:
            try:
                if await send_one(target) is False:
                    refused += 1
            except Exception as exc:  # noqa: BLE001 - the other contact methods are still tried
                errors.append(exc)
                log.warning("escalation %s: %s via %s failed: %s", delivery.record_id, route.label, target.key, exc)
        if len(errors) + refused < len(route.targets):
            return True
        if errors:
            raise errors[0]
        return False

    def _remember(self, delivery: Any, route: Route, at: datetime) -> None:
        self.store.put_oncall_item(
            RESOLUTION,
            delivery.id,
            delivery.record_id,
            at,
            at + RESOLUTION_RETENTION,
            {
                "delivery_id": delivery.id,
                "record_id": delivery.record_id,
                "target": route.target,
                "user": route.user.id,
                "name": route.user.display_name,
                "source": route.source,
                "via": [t.key for t in route.targets],
                "at": at.isoformat(),
                "label": route.label,
            },
        )

    def resolutions(self, record_id: str) -> list[dict[str, Any]]:
        """Whom the record's ``schedule:``/``user:`` deliveries reached (latest attempt each)."""
        return self.store.list_oncall_items(RESOLUTION, scope=record_id, limit=bounds.MAX_LIST_LIMIT)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ silences
    def _silences(self, ends_after: datetime | None = None) -> list[Silence]:
        out = []
        for data in self.store.list_oncall_items(SILENCE, ends_after=ends_after, limit=bounds.MAX_SILENCES * 2):
            try:
                out.append(Silence.model_validate(data))
            except ValueError:  # written by a newer version, or damaged: never breaks a read
                log.warning("ignoring an unreadable stored silence %r", str(data.get("id"))[:64])
        return out

    def list_silences(self, *, include_expired: bool = False, at: datetime | None = None) -> list[Silence]:
        at = at or self.now()
        return self._silences(ends_after=None if include_expired else at)

    def get_silence(self, silence_id: str) -> Silence:
        data = self.store.get_oncall_item(SILENCE, silence_id)
        if data is None:
            raise NotFound(f"silence {silence_id!r} not found")
        return Silence.model_validate(data)

    def create_silence(
        self,
        matchers: Matchers | dict[str, Any],
        *,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
        duration: timedelta | None = None,
        comment: str = "",
        created_by: str = "",
    ) -> Silence:
        """A new silence from ``starts_at`` (default: now) to ``ends_at`` (or for ``duration``)."""
        now = self.now()
        start = starts_at or now
        if ends_at is None:
            if duration is None:
                raise OnCallError("ends_at: give ends_at or a duration")
            ends_at = start + duration
        active = self._silences(ends_after=now)
        if len(active) >= bounds.MAX_SILENCES:
            raise OnCallError(f"silences: at most {bounds.MAX_SILENCES} silences may be pending or active at once")
        try:
            silence = Silence(
                id=uuid.uuid4().hex,
                matchers=matchers if isinstance(matchers, Matchers) else Matchers.model_validate(matchers),
                starts_at=start,
                ends_at=ends_at,
                comment=comment,
                created_by=created_by,
                created_at=now,
            )
        except ValueError as exc:
            raise OnCallError(_explain(exc)) from None
        if silence.ends_at <= now:
            raise OnCallError("ends_at: must be in the future")
        self._put_silence(silence)
        return silence

    def _put_silence(self, silence: Silence) -> None:
        self._cached = None
        self.store.put_oncall_item(
            SILENCE, silence.id, "", silence.starts_at, silence.ends_at, silence.model_dump(mode="json")
        )

    def expire_silence(self, silence_id: str, expired_by: str = "") -> Silence:
        """End the silence now (a pending one ends before it began). Expiring twice is a no-op."""
        silence = self.get_silence(silence_id)
        now = self.now()
        if silence.ends_at <= now:
            return silence
        update: dict[str, Any] = {"ends_at": now}
        if silence.starts_at >= now:  # never started: keep starts_at < ends_at
            update["starts_at"] = now - timedelta(microseconds=1)
        expired = silence.model_copy(update=update)
        self._put_silence(expired)
        log.info("silence %s expired by %s", silence_id, expired_by or "someone")
        return expired

    # ------------------------------------------------------------------ overrides
    def _overrides(self, schedule: str | None, at: datetime | None = None) -> list[Override]:
        out = []
        for data in self.store.list_oncall_items(
            OVERRIDE, scope=schedule, ends_after=at, limit=bounds.MAX_OVERRIDES * 2
        ):
            try:
                out.append(Override.model_validate(data))
            except ValueError:
                log.warning("ignoring an unreadable stored override %r", str(data.get("id"))[:64])
        return out

    def list_overrides(self, schedule: str | None = None, *, include_past: bool = False) -> list[Override]:
        return self._overrides(schedule, None if include_past else self.now())

    def create_override(
        self, schedule: str, user: str, start: datetime, end: datetime, *, created_by: str = "", comment: str = ""
    ) -> Override:
        if schedule not in self.schedules:
            raise OnCallError(f"schedule: unknown schedule {schedule!r}")
        if user not in self.directory:
            raise OnCallError(f"user: unknown user {user!r}")
        now = self.now()
        if len(self._overrides(None, now)) >= bounds.MAX_OVERRIDES:
            raise OnCallError(f"overrides: at most {bounds.MAX_OVERRIDES} overrides may be current at once")
        try:
            override = Override(
                id=uuid.uuid4().hex,
                schedule=schedule,
                user=user,
                start=start,
                end=end,
                created_by=created_by,
                created_at=now,
                comment=comment,
            )
        except ValueError as exc:
            raise OnCallError(_explain(exc)) from None
        if override.end <= now:
            raise OnCallError("end: must be in the future")
        self.store.put_oncall_item(
            OVERRIDE, override.id, schedule, override.start, override.end, override.model_dump(mode="json")
        )
        return override

    def get_override(self, override_id: str) -> Override:
        data = self.store.get_oncall_item(OVERRIDE, override_id)
        if data is None:
            raise NotFound(f"override {override_id!r} not found")
        return Override.model_validate(data)

    def delete_override(self, override_id: str) -> Override:
        override = self.get_override(override_id)
        self.store.delete_oncall_items(OVERRIDE, item_id=override_id)
        return override

    # ------------------------------------------------------------------ schedules
    def schedule(self, name: str) -> Schedule:
        found = self.schedules.get(name)
        if found is None:
            raise NotFound(f"schedule {name!r} not found")
        return found

    def on_call(self, name: str, at: datetime | None = None) -> OnCallAt:
        at = at or self.now()
        return self.schedule(name).on_call(at, self._overrides(name, at))

    def shifts(self, name: str, start: datetime, end: datetime) -> list[Shift]:
        return self.schedule(name).shifts(start, end, self._overrides(name, start))

    def handoffs(self, name: str, start: datetime, end: datetime, limit: int = bounds.MAX_HANDOFFS) -> list[Shift]:
        return self.schedule(name).handoffs(start, end, self._overrides(name, start))[:limit]

    def prune(self, now: datetime) -> int:
        """Forget what is past keeping: resolutions older than ``RESOLUTION_RETENTION`` (their
        span ends then), silences and overrides that ended more than that long ago."""
        removed = int(self.store.delete_oncall_items(RESOLUTION, ends_before=now))
        for kind in (SILENCE, OVERRIDE):
            removed += int(self.store.delete_oncall_items(kind, ends_before=now - RESOLUTION_RETENTION))
        return removed

    def _maybe_prune(self, now: datetime) -> None:
        last = self._pruned_at
        if last is not None and timedelta(0) <= now - last < PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            removed = self.prune(now)
        except Exception:  # tidying never breaks a trigger
            log.exception("could not prune old on-call items")
            return
        if removed:
            log.info("pruned %d old on-call items (resolutions, silences, overrides)", removed)


def _explain(exc: Exception) -> str:
    from pydantic import ValidationError

    from airflow_escalation.oncall._base import explain

    return explain(exc) if isinstance(exc, ValidationError) else bounds.truncate(str(exc))


def user_names(users: Sequence[User]) -> dict[str, str]:
    return {user.id: user.display_name for user in users}
