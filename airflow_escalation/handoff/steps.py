"""One hand-off, run sync or async: the sans-IO core of the task side.

A *plan* is a generator that yields steps and is sent each step's result (or has the step's
exception thrown in at the ``yield``); what it returns is the outcome. The plan holds the
decisions once; a runner only performs steps:

- :class:`Blocking` — local, blocking work (the spool's files): :func:`run` calls it in place,
  :func:`arun` in a worker thread so the event loop never waits on the disk;
- any other step is the caller's (a request to the service, a spool entry to send): it goes to
  the runner's ``call`` — a plain function for :func:`run`, a coroutine function for
  :func:`arun`.

So the spool's ``drain``/``adrain``, the sender's ``run``/``arun`` and the notifier's
``notify``/``async_notify`` share one plan each instead of a sync and an async copy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
#: a plan: yields steps, is sent their results, returns ``T``
Plan = Generator[Any, Any, T]


@dataclass(frozen=True)
class Blocking:
    """Blocking local work the plan needs done: ``fn(*args, **kwargs)``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class _Steps(Generic[T]):
    """Iterates over a plan's steps; the runner answers each with :meth:`answer` or :meth:`fail`
    before the next. :attr:`outcome` is what the plan returned."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self._value: Any = None
        self._error: Exception | None = None
        self.outcome: T

    def __iter__(self) -> Iterator[Any]:
        while True:
            value, error, self._value, self._error = self._value, self._error, None, None
            try:
                yield self._plan.send(value) if error is None else self._plan.throw(error)
            except StopIteration as stop:
                self.outcome = stop.value
                return

    def answer(self, value: Any) -> None:
        self._value = value

    def fail(self, error: Exception) -> None:
        self._error = error


def run(plan: Plan[T], call: Callable[[Any], Any]) -> T:
    """Run ``plan`` in this thread; ``call(step)`` performs every step that is not
    :class:`Blocking`."""
    steps = _Steps(plan)
    for step in steps:
        try:
            steps.answer(step.fn(*step.args, **step.kwargs) if isinstance(step, Blocking) else call(step))
        except Exception as exc:  # noqa: BLE001 - the plan decides what a failure means
            steps.fail(exc)
    return steps.outcome


async def arun(plan: Plan[T], call: Callable[[Any], Awaitable[Any]]) -> T:
    """Run ``plan`` on the event loop; :class:`Blocking` steps run in a worker thread and
    ``await call(step)`` performs the others."""
    import asyncio  # here, not at the top: a sync task never pays for it

    steps = _Steps(plan)
    for step in steps:
        try:
            if isinstance(step, Blocking):
                steps.answer(await asyncio.to_thread(step.fn, *step.args, **step.kwargs))
            else:
                steps.answer(await call(step))
        except Exception as exc:  # noqa: BLE001
            steps.fail(exc)
    return steps.outcome


__all__ = ["Blocking", "Plan", "arun", "run"]
