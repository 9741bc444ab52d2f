"""Sending what the outbox holds: the deliveries a change wrote, and retries when their time comes.

Deliveries run concurrently, bounded by ``SchedulerConfig.max_concurrent_jobs`` workers, outside
any record lock; each target's outcome is recorded and a failure retried with exponential
backoff until ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Awaitable, Callable

from airflow_escalation.core import bounds
from airflow_escalation.runtime import metrics as engine_metrics
from airflow_escalation.core.clock import Clock
from airflow_escalation.core.models import (
    Delivery,
    EscalationLevel,
    EscalationPolicy,
    EscalationRecord,
)
from airflow_escalation.runtime.store_calls import StoreCalls
from airflow_escalation.runtime.worker_pool import WorkerPool
from airflow_escalation.scheduling.base import SchedulerConfig

log = logging.getLogger("airflow_escalation.engine")

Send = Callable[[EscalationRecord, EscalationLevel, Delivery], Awaitable[Any]]


class Outbox:
    """This engine's side of the outbox: queue, claim, send, record the outcome, retry."""

    def __init__(
        self,
        calls: StoreCalls,
        clock: Clock,
        config: SchedulerConfig,
        owner: str,
        policy_for: Callable[[EscalationRecord], EscalationPolicy],
        send: Send,
        wake_at: Callable[[datetime], None],
    ) -> None:
        self._calls = calls
        self._store = calls.store
        self._clock = clock
        self._config = config
        self._owner = owner
        self._lease = timedelta(seconds=config.lease_seconds)
        self._policy_for = policy_for
        self._send = send
        self._wake_at = wake_at  # wakes the engine at a time (a no-op while it is stopped)
        # deliveries are run by up to max_concurrent_jobs workers (created in the running loop)
        self._pool: WorkerPool | None = None
        self.backlog = False  # pending deliveries were left for want of an idle worker
        # deliveries this engine wrote and queued, not started yet (id -> record): a sweep that
        # claims one sends it with the record at hand, and the queued item stands down
        self.queued: dict[str, EscalationRecord | None] = {}
        # each attempt's outcome (runtime/metrics.py: sent, retried, failed); the engine sets it
        self.measure: Callable[[str, Delivery], None] = lambda outcome, delivery: None

    @property
    def unfinished(self) -> int:
        return self._pool.unfinished if self._pool is not None else 0

    async def join(self) -> None:
        if self._pool is not None and self._pool.loop is asyncio.get_running_loop():
            await self._pool.join()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.queued.clear()

    def idle_workers(self) -> int:
        pool = self._pool
        busy = pool.unfinished if pool is not None and pool.loop is asyncio.get_running_loop() else 0
        return self._config.max_concurrent_jobs - busy

    def enqueue(
        self,
        delivery: Delivery,
        record: EscalationRecord | None,
        claimed: bool,
        done: asyncio.Future[bool] | None = None,
    ) -> None:
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop():
            pool = self._pool = WorkerPool(self._config.max_concurrent_jobs, self._deliver)
        if not claimed:
            self.queued[delivery.id] = record
        pool.put(delivery, record, claimed, done)

    async def send_now(self, deliveries: list[Delivery], record: EscalationRecord) -> list[bool]:
        """Queue these just-written deliveries and wait until each was attempted (by the same
        bounded workers); whether each went out."""
        loop = asyncio.get_running_loop()
        if self._calls.inline and len(deliveries) == 1:
            # a store in this process and a free worker slot: send on the caller's task, saving
            # the hop through a worker (the handler runs under the same bound and time limit)
            pool = self._pool
            if pool is None or pool.loop is not loop:
                pool = self._pool = WorkerPool(self._config.max_concurrent_jobs, self._deliver)
            if pool.take_slot():
                delivery = deliveries[0]
                self.queued[delivery.id] = record
                try:
                    return [await self.deliver(delivery, record, False)]
                finally:
                    pool.give_back()
        outcomes: list[asyncio.Future[bool]] = []
        for delivery in deliveries:
            outcomes.append(loop.create_future())
            self.enqueue(delivery, record, False, outcomes[-1])
        return list(await asyncio.gather(*outcomes))

    async def _deliver(
        self, delivery: Delivery, record: EscalationRecord | None, claimed: bool, done: asyncio.Future[bool] | None
    ) -> None:
        sent = False
        try:
            sent = await self.deliver(delivery, record, claimed)
        finally:
            if done is not None and not done.done():
                done.set_result(sent)

    async def deliver(self, delivery: Delivery, record: EscalationRecord | None, claimed: bool) -> bool:
        now = self._clock.now()
        if not claimed:
            if delivery.id not in self.queued:
                return False  # a sweep claimed it meanwhile and queued it to be sent
            args = (delivery.id, now, self._owner, self._lease)
            store = self._store
            started = (
                store.start_delivery(*args) if self._calls.inline else await self._calls(store.start_delivery, *args)
            )
            self.queued.pop(args[0], None)  # only now: a sweep that claims it first finds it here
            if started is None:
                return False  # cancelled by an acknowledgement, or another engine took it
            delivery = started
        error = None
        limit = self._config.job_timeout_seconds
        try:
            record = record or await self._calls(self._store.get, delivery.record_id)
            if record is None:
                raise LookupError(f"escalation {delivery.record_id} no longer exists")
            level = self._policy_for(record).get_level(delivery.level)
            async with _time_limit(limit):
                # the record's own policy snapshot has the delivery's level
                outcome = await self._send(record, level, delivery)  # type: ignore[arg-type]
            if outcome is False:
                error = "the notification handler returned False"
        except asyncio.TimeoutError:
            error = f"timed out after {limit}s"
        except Exception as exc:  # noqa: BLE001 - a handler failure is recorded on the delivery
            error = f"{type(exc).__name__}: {exc}"
        await self._finish(delivery, error)
        if self.backlog:
            self.backlog = False
            self._wake_at(self._clock.now())  # a worker is free: claim what waits
        return error is None

    async def _finish(self, delivery: Delivery, error: str | None) -> None:
        now = self._clock.now()
        if error is None:
            if self._calls.inline:
                self._store.finish_delivery(delivery.id, now, sent=True)
            else:
                await self._calls(self._store.finish_delivery, delivery.id, now, sent=True)
            self.measure(engine_metrics.SENT, delivery)
            return
        error = bounds.truncate(error)  # last_error is shown to every viewer: keep it short
        cfg = self._config
        retry_at = None
        if delivery.attempts < cfg.max_attempts:
            backoff = min(cfg.retry_delay_seconds * 2 ** (delivery.attempts - 1), cfg.max_retry_delay_seconds)
            retry_at = now + timedelta(seconds=backoff)
        log.warning(
            "notification of %s for escalation %s (level %d) failed on attempt %d/%d: %s%s",
            delivery.target.key,
            delivery.record_id,
            delivery.level,
            delivery.attempts,
            cfg.max_attempts,
            error,
            f"; retrying at {retry_at.isoformat()}" if retry_at else "; giving up",
        )
        await self._calls(self._store.finish_delivery, delivery.id, now, sent=False, error=error, retry_at=retry_at)
        self.measure(engine_metrics.RETRIED if retry_at is not None else engine_metrics.DELIVERY_FAILED, delivery)
        if retry_at is not None:
            self._wake_at(retry_at)

    async def send_due(self, now: datetime) -> None:
        """Queue the outbox's deliveries due by ``now`` (new, or retries whose time has come).

        No more are claimed than idle workers can start at once: a claimed delivery is marked
        sending, and one still waiting in this process's queue when the process dies would end
        ``unknown`` and never be sent. What is left stays pending for the next sweep (here, once
        a worker is free, or on another replica)."""
        await self._calls(self._store.expire_deliveries, now)
        while True:
            room = min(self._config.batch_size, self.idle_workers())
            self.backlog = room <= 0
            if room <= 0:
                return
            deliveries = await self._calls(self._store.claim_deliveries, now, room, self._owner, self._lease)
            for delivery in deliveries:
                self.enqueue(delivery, self.queued.pop(delivery.id, None), True)
            if len(deliveries) < room:
                return
            self.backlog = True


if sys.version_info >= (3, 11):
    _time_limit = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def _time_limit(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None  # called from a task
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()
