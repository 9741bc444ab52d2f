"""A bounded pool of asyncio workers that wakes as few of them as the work needs.

``asyncio.Queue`` wakes one waiting worker per item. When items are cheap (an instant
notification handler), one awake worker could have done them all in a row, and every extra
wake-up is a trip through the event loop. Here at most one idle worker is being woken at any
time: a worker that takes an item and sees more behind it wakes the next one. Slow items (a
handler that waits on the network) therefore still fan out to ``size`` workers, while fast
ones are drained by a single worker without a wake-up per item.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int, run: Callable[..., Awaitable[Any]]) -> None:
        self._size = size
        self._run = run
        self._loop = asyncio.get_running_loop()
        self._items: deque[tuple[Any, ...]] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._workers: list[asyncio.Task[None]] = []
        self._waking = 0  # workers told to run that have not run yet
        self._running = 0  # items being run (by workers, or by callers that took a slot)
        self._unfinished = 0
        self._all_done: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def put(self, *item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        self._wake_one()

    def take_slot(self) -> bool:
        """Take a free slot for an item the caller runs itself (then :meth:`give_back`): saves
        the hop through a worker when nothing waits and fewer than ``size`` items run."""
        if self._items or self._running + self._waking >= self._size:
            return False
        self._running += 1
        self._unfinished += 1
        return True

    def give_back(self) -> None:
        self._running -= 1
        self._done_one()
        if self._items:
            self._wake_one()

    def _done_one(self) -> None:
        self._unfinished -= 1
        if not self._unfinished and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)

    async def join(self) -> None:
        """Wait until every item put so far has been run."""
        while self._unfinished:
            if self._all_done is None or self._all_done.done():
                self._all_done = self._loop.create_future()
            await asyncio.shield(self._all_done)

    def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        self._workers.clear()

    def _wake_one(self) -> None:
        if self._waking:
            return  # that worker takes the next item and wakes another if more are left
        if self._running >= self._size:
            return  # every slot is taken: a worker that finishes takes the next item
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return
        if len(self._workers) < self._size:
            self._waking += 1
            self._workers.append(self._loop.create_task(self._work()))

    async def _work(self) -> None:
        self._waking -= 1
        while True:
            if not self._items:
                waiter = self._loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._waking -= 1
                continue
            item = self._items.popleft()
            self._running += 1
            if self._items:
                self._wake_one()
            try:
                await self._run(*item)
            except Exception:  # a worker must outlive any one item
                log.exception("a queued delivery crashed")
            finally:
                self._running -= 1
                self._done_one()
