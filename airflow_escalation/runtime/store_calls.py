"""Blocking store calls off the event loop: the one async facade every async caller uses.

A store that does no I/O (memory) is called directly; a blocking one runs in a worker thread,
or, when it ``prefers_batches`` (SQLite, Redis), on threads of its own that hand its calls to
``store.run_batch`` together (:class:`StoreBatches`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from airflow_escalation.stores.base import BaseEscalationStore


class StoreCalls:
    """``await calls(fn, *args)`` runs the store method ``fn`` without blocking the event loop.

    ``inline`` is True when the store does no I/O: hot paths test it and call the store
    themselves, saving a coroutine.
    """

    def __init__(self, store: BaseEscalationStore) -> None:
        self.store = store
        self.inline = not store.blocking
        # a store that prefers batches (SQLite, Redis) gets its calls on threads of its own
        self._batches = (
            StoreBatches(
                store.run_batch,  # type: ignore[attr-defined]  # stores that prefer batches have it
                getattr(store, "batch_threads", 1),
            )
            if store.blocking and getattr(store, "prefers_batches", False)
            else None
        )

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inline:
            return fn(*args, **kwargs)
        if self._batches is not None:
            return await self._batches.call(fn, *args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)


# a store call (fn, args, kwargs), and one waiting for its batch with the future that gets its outcome
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_Pending = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class StoreBatches:
    """Dedicated threads (``store.batch_threads``, default 1) for a blocking store that
    ``prefers_batches``.

    The calls made in one turn of the event loop are handed over together at its next turn (one
    lock and one wake-up, not one per call); they queue up while the threads work, and a free
    thread takes them all and hands them to ``store.run_batch`` (SQLite: one transaction; Redis:
    one pipeline), then hands their outcomes back to their event loop in one wake-up. Compared
    with ``asyncio.to_thread`` per call this saves a hand-off and a loop wake-up per call, the loop
    and the store stop trading the GIL call by call, and the store does one commit or round trip
    per batch. With two threads, one batch is sent while the previous one's results are read
    (Redis). A lone call runs as it would alone. If ``run_batch`` raises (SQLite: the commit
    failed), every call of the batch gets that error. Threads end after a few idle seconds; calls
    start them again.
    """

    _IDLE_SECONDS = 5.0
    _MAX_BATCH = 256  # calls per batch: bounds a batch's transaction and its callers' wait

    def __init__(self, run_batch: Callable[[list[_Call]], list[tuple[Any, Any]]], threads: int = 1) -> None:
        self._run_batch = run_batch
        self._size = max(1, int(threads))
        self._turn: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}  # calls of a loop's current turn
        self._calls: list[_Pending] = []
        self._ready = threading.Condition()
        self._threads = 0  # running
        self._idle = 0  # of those, waiting for calls

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        calls = self._turn.get(loop)
        if calls is None:  # the first call of this turn: hand them over at the next one
            calls = self._turn[loop] = []
            loop.call_soon(self._hand_over, loop)
        calls.append((future, fn, args, kwargs))
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        calls = self._turn.pop(loop)
        with self._ready:
            self._calls += calls
            if self._idle:
                self._ready.notify()
            elif self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._work, name="escalation-store", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._ready:
                idle_until = None
                while not self._calls:  # another thread may take the calls it was woken for
                    now = time.monotonic()
                    idle_until = idle_until or now + self._IDLE_SECONDS
                    if now >= idle_until:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._ready.wait(idle_until - now)
                    self._idle -= 1
                calls, self._calls = self._calls[: self._MAX_BATCH], self._calls[self._MAX_BATCH :]
            self._hand_back(calls, self._run(calls))

    def _run(self, calls: list[_Pending]) -> list[tuple[Any, Any]]:
        if len(calls) == 1:
            _, fn, args, kwargs = calls[0]
            try:
                return [(fn(*args, **kwargs), None)]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as to_thread does
                return [(None, exc)]
        try:
            return self._run_batch([(fn, args, kwargs) for _, fn, args, kwargs in calls])
        except BaseException as exc:  # noqa: BLE001 - the batch did not take effect: no result stands
            return [(None, exc)] * len(calls)

    @staticmethod
    def _hand_back(calls: list[_Pending], outcomes: list[tuple[Any, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        for (future, *_), (result, error) in zip(calls, outcomes):
            by_loop.setdefault(future.get_loop(), []).append((future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(StoreBatches._settle, settled)
            except RuntimeError:  # that loop has closed: nobody waits for these
                pass

    @staticmethod
    def _settle(outcomes: list[tuple[Any, ...]]) -> None:
        for future, result, error in outcomes:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
