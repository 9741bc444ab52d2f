"""One shared poll of the escalation service for every waiting trigger in a process.

A triggerer runs all its triggers in one asyncio loop. If each waiting ``EscalationSensor`` polled
on its own, 1,000 waiting sensors would mean 1,000 requests per interval. Instead every
:class:`~airflow_escalation.triggers.escalation.EscalationStateTrigger` subscribes to the
:class:`SharedEscalationPoller` of its event loop and connection: one asyncio task that collects
the record ids everybody waits for and fetches them with ``GET /escalations?ids=...`` (at most
``max_ids_per_request`` ids per request, 200 by default, so 1,000 waiting sensors cost 5 requests
per interval). A trigger that subscribes is fetched right away (newcomers arriving within
``coalesce_seconds`` share one request); after that it rides the shared interval, the shortest
``poll_interval`` among the subscribers.

Why not ``BaseEventTrigger.shared_stream_key()`` (Airflow 3.3)? The triggerer opens a shared
stream with the keyword arguments of *one* trigger of the group, so the stream would still need a
process-level registry to know which records the others wait for; ``dag.test()`` runs triggers
through ``run()`` only; and the provider supports Airflow 3.2. A process-level poller
behind ``run()`` gives the same single poll everywhere.

Failures: while the service is unreachable (or answers 5xx/429) the poller keeps the
subscribers waiting and retries with a doubling interval (at most 60 s), logging the first
failure and every tenth. A refusal a retry will not fix (the connection does not exist, 403 three
times in a row, 4xx) is handed to the subscribers as a fatal update, so their tasks fail with
the message instead of waiting forever. A service too old for ``ids`` (it ignores the parameter)
is detected and polled one record at a time.

The poller also drains this machine's escalation spool (:mod:`airflow_escalation.spool`) after
each successful poll: requests a Deadline Alert callback in this triggerer could not hand off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("airflow_escalation.triggers")

DEFAULT_MAX_IDS = 200
MIN_INTERVAL = 0.2
MAX_BACKOFF = 60.0
COALESCE_SECONDS = 0.05
FATAL_AUTH_FAILURES = 3


@dataclass
class RecordUpdate:
    """One poll's answer about one record: the record (a ``Record`` dict), ``None`` when the
    service does not know the id, or an ``error`` (``fatal``: stop waiting)."""

    record_id: str
    record: dict[str, Any] | None = None
    error: str | None = None
    fatal: bool = False


class Subscription:
    """A trigger's view of the poller: the latest update about its record."""

    def __init__(self, poller: SharedEscalationPoller, record_id: str, interval: float) -> None:
        self.poller = poller
        self.record_id = record_id
        self.interval = interval
        self._event = asyncio.Event()
        self._latest: RecordUpdate | None = None

    def push(self, update: RecordUpdate) -> None:
        self._latest = update
        self._event.set()

    async def next(self, timeout: float | None = None) -> RecordUpdate | None:
        """The next update; ``None`` when ``timeout`` seconds pass first."""
        if timeout is not None and timeout <= 0 and not self._event.is_set():
            return None
        try:
            if timeout is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        self._event.clear()
        update, self._latest = self._latest, None
        return update


class SharedEscalationPoller:
    """Polls the escalation service for every subscribed record id, in shared batched requests.

    :param conn_id: the escalation connection.
    :param max_ids_per_request: ids per ``GET /escalations?ids=`` (the service accepts 200).
    :param hook_factory: builds the hook (tests); default ``EscalationHook(conn_id, retries=1)``.
    :param drain_spool: drain this machine's escalation spool after successful polls.
    """

    def __init__(
        self,
        conn_id: str,
        *,
        max_ids_per_request: int = DEFAULT_MAX_IDS,
        hook_factory: Callable[[str], Any] | None = None,
        drain_spool: bool = True,
        coalesce_seconds: float = COALESCE_SECONDS,
    ) -> None:
        if max_ids_per_request < 1:
            raise ValueError(f"max_ids_per_request: must be >= 1, got {max_ids_per_request}")
        self.conn_id = conn_id
        self.max_ids_per_request = int(max_ids_per_request)
        self.coalesce_seconds = coalesce_seconds
        self._hook_factory = hook_factory
        self._drain_spool = drain_spool
        self._hook: Any = None
        self._subs: dict[str, set[Subscription]] = {}
        self._new: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._supports_ids = True
        self._failures = 0
        self._auth_failures = 0
        self._last_drain = 0.0
        # observability (tests, benchmarks)
        self.requests = 0
        self.polls = 0

    def __repr__(self) -> str:
        return f"SharedEscalationPoller({self.conn_id!r}, waiting={len(self._subs)})"

    @property
    def waiting(self) -> int:
        """How many distinct records are waited for."""
        return len(self._subs)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # ------------------------------------------------------------------ subscriptions

    @contextlib.asynccontextmanager
    async def subscribe(self, record_id: str, interval: float) -> AsyncIterator[Subscription]:
        sub = Subscription(self, record_id, max(MIN_INTERVAL, float(interval)))
        self._subs.setdefault(record_id, set()).add(sub)
        self._new.add(record_id)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"escalation-poller-{self.conn_id}")
        try:
            yield sub
        finally:
            subs = self._subs.get(record_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[record_id]
                    self._new.discard(record_id)

    def _interval(self) -> float:
        intervals = [s.interval for subs in self._subs.values() for s in subs]
        return min(intervals) if intervals else 1.0

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        try:
            while self._subs:
                now = loop.time()
                if now >= next_full:
                    ids = list(self._subs)
                    self._new.clear()
                    ok = await self._poll(ids)
                    # fixed rate: the next poll is due an interval after this one started (at once
                    # if the poll took longer); after a failure, back off from when it ended
                    if ok:
                        next_full = now + self._interval()
                    else:
                        next_full = loop.time() + min(MAX_BACKOFF, self._interval() * 2**self._failures)
                    if ok:
                        await self._maybe_drain()
                elif self._new:
                    ids = [i for i in self._new if i in self._subs]
                    self._new.clear()
                    if ids:
                        await self._poll(ids)
                if not self._subs:
                    break
                self._wake.clear()
                if self._new:
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))
                    await asyncio.sleep(self.coalesce_seconds)  # let newcomers of the same burst join
                except asyncio.TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("escalation poller %s stopped", self.conn_id)
            self._broadcast(
                list(self._subs), error=f"the escalation poller failed: {type(exc).__name__}: {exc}", fatal=True
            )
        finally:
            self._task = None

    async def _get_hook(self) -> Any:
        if self._hook is None:
            if self._hook_factory is not None:
                self._hook = self._hook_factory(self.conn_id)
            else:
                from airflow_escalation.hooks.escalation import EscalationHook

                self._hook = EscalationHook(self.conn_id, retries=1)
            await self._hook.aget_conn()
        return self._hook

    async def _poll(self, ids: list[str]) -> bool:
        """Fetch ``ids`` and hand each subscriber its record; False on a transient failure."""
        from airflow_escalation.client.errors import (
            EscalationAPIError,
            EscalationAuthError,
            EscalationNotFound,
            EscalationServiceUnavailable,
        )

        self.polls += 1
        try:
            hook = await self._get_hook()
        except Exception as exc:  # noqa: BLE001 - connection missing or misconfigured
            self._hook = None
            self._broadcast(
                ids, error=f"escalation connection {self.conn_id!r}: {type(exc).__name__}: {exc}", fatal=True
            )
            return True
        ids = sorted(ids)
        try:
            for start in range(0, len(ids), self.max_ids_per_request):
                chunk = ids[start : start + self.max_ids_per_request]
                if self._supports_ids:
                    self.requests += 1
                    page = await hook.alist_escalations(ids=chunk, limit=len(chunk))
                    records = {r.get("id"): r for r in page.get("escalations") or []}
                    if any(rid not in set(chunk) for rid in records):
                        self._supports_ids = False
                        log.warning(
                            "escalation service at %s ignores GET /escalations?ids=: polling one "
                            "record per request (upgrade the provider in the API server)",
                            self.conn_id,
                        )
                    else:
                        for rid in chunk:
                            self._deliver(RecordUpdate(rid, records.get(rid)))
                        continue
                for rid in chunk:
                    self.requests += 1
                    try:
                        record = await hook.aget_escalation(rid)
                    except EscalationNotFound:
                        record = None
                    self._deliver(RecordUpdate(rid, record))
        except EscalationServiceUnavailable as exc:
            self._transient(exc)
            return False
        except EscalationAuthError as exc:
            self._auth_failures += 1
            if self._auth_failures >= FATAL_AUTH_FAILURES:
                self._broadcast(
                    ids,
                    error=f"the escalation service refused the triggerer's credentials "
                    f"{self._auth_failures} times: {exc}",
                    fatal=True,
                )
                return True
            self._transient(exc)
            return False
        except EscalationAPIError as exc:
            self._broadcast(ids, error=f"the escalation service refused the poll: {exc}", fatal=True)
            return True
        except Exception as exc:  # noqa: BLE001 - e.g. a bad answer; keep trying
            self._transient(exc)
            return False
        if self._failures:
            log.info(
                "escalation service reachable again through %s after %d failed polls", self.conn_id, self._failures
            )
        self._failures = 0
        self._auth_failures = 0
        return True

    def _transient(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures == 1 or self._failures % 10 == 0:
            log.warning(
                "escalation poll through %s failed (%d in a row, retrying): %s", self.conn_id, self._failures, exc
            )

    def _deliver(self, update: RecordUpdate) -> None:
        for sub in list(self._subs.get(update.record_id, ())):
            sub.push(update)

    def _broadcast(self, ids: list[str], *, error: str, fatal: bool) -> None:
        for rid in ids:
            self._deliver(RecordUpdate(rid, None, error=error, fatal=fatal))

    async def _maybe_drain(self) -> None:
        if not self._drain_spool or time.monotonic() - self._last_drain < 10.0:
            return
        self._last_drain = time.monotonic()
        try:
            from airflow_escalation.handoff.sender import HandoffSender, draining
            from airflow_escalation.spool import EscalationSpool

            async with HandoffSender() as sender:
                await sender.arun(draining(EscalationSpool(), sender, budget_seconds=2.0, logger=log))
        except Exception:
            log.debug("escalation spool drain failed", exc_info=True)


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedEscalationPoller]] = (
    weakref.WeakKeyDictionary()
)


def shared_poller(conn_id: str, **kwargs: Any) -> SharedEscalationPoller:
    """The poller of the running event loop for ``conn_id`` (created on first use)."""
    loop = asyncio.get_running_loop()
    pollers = _POLLERS.setdefault(loop, {})
    poller = pollers.get(conn_id)
    if poller is None:
        poller = pollers[conn_id] = SharedEscalationPoller(conn_id, **kwargs)
    return poller


__all__ = ["RecordUpdate", "SharedEscalationPoller", "Subscription", "shared_poller"]
