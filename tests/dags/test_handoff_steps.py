"""One plan, two runners (handoff/steps.py): the sync and the async run of the same plan perform
the same steps, hand a failed step's exception to the plan, and return what the plan returns."""

from __future__ import annotations

import threading

import pytest

from airflow_escalation.handoff.steps import Blocking, arun, run


def _plan(log):
    first = yield Blocking(lambda: ("disk", threading.current_thread().name))
    log.append(first[0])
    try:
        yield "boom"
    except KeyError as exc:
        log.append(f"caught {exc.args[0]}")
    answer = yield "ask"
    return [*log, answer]


def _call(step):
    if step == "boom":
        raise KeyError("boom")
    return f"answer to {step}"


def test_the_sync_run():
    assert run(_plan([]), _call) == ["disk", "caught boom", "answer to ask"]


async def test_the_async_run_is_the_same_and_keeps_blocking_work_off_the_loop():
    seen = []

    async def call(step):
        return _call(step)

    def plan():
        where = yield Blocking(threading.current_thread)
        seen.append(where)
        return (yield from _plan([]))

    assert await arun(plan(), call) == ["disk", "caught boom", "answer to ask"]
    assert seen and seen[0] is not threading.main_thread()


def test_an_exception_the_plan_does_not_handle_propagates():
    def plan():
        yield "boom"

    with pytest.raises(KeyError, match="boom"):
        run(plan(), _call)
