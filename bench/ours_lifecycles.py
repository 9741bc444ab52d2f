"""airflow_escalation escalation lifecycles per second (run with .venv/bin/python).

One lifecycle = ``trigger``; wait until the notification handler has delivered that record's
level-1 notification (our engine writes it to the outbox with the trigger and delivers it
asynchronously after ``trigger`` returns; the handler resolves a per-record future, the store is
not polled); ``acknowledge``; ``resolve``. Lifecycles run in gathered batches of 100 (see
``_shape.py``), unique incident ids; the timed region ends after ``engine.drain()`` so every
delivery's outcome is written. Prints one JSON line.

    .venv/bin/python bench/ours_lifecycles.py --handler instant
    .venv/bin/python bench/ours_lifecycles.py --handler 50ms --store redis

Durable stores (the bench databases must be dedicated to the bench: they are cleared before and
after the run):
    --store sqlite    a file in a temporary directory
    --store redis     $ESCALATION_BENCH_REDIS_URL     (default redis://127.0.0.1:6379/14)
    --store postgres  $ESCALATION_BENCH_POSTGRES_URL  (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
                      tables ``ours_bench_*``
    --store mysql     $ESCALATION_BENCH_MYSQL_URL     (default mysql+pymysql://root@127.0.0.1:3306/test),
                      tables ``ours_bench_*``

``--replicas R`` (durable stores) runs R engine processes on the one store at once, each running
N/R of the lifecycles (and the warm-up) with its own incident ids; the clock runs from when all
have warmed up until the last has drained, and the CPU time is the sum of theirs. Every engine
has started before any triggers, and their safety sweep is set to an hour: an engine's sweep
takes any engine's pending notifications (as it should), but a replica only sees its own handler.

    .venv/bin/python bench/ours_lifecycles.py --handler instant --store postgres --replicas 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _shape

# ~2-5 s each on a 2-core machine (durable stores: a few seconds to tens of seconds)
DEFAULT_N = {
    "memory": {"instant": 20_000, "50ms": 5_000},
    "durable": {"instant": 1_000, "50ms": 500},
    "quick-memory": {"instant": 2_000, "50ms": 500},
    "quick-durable": {"instant": 200, "50ms": 200},
}


class StoreUnavailable(RuntimeError):
    pass


def _store(store: str, tmpdir: str) -> tuple[str, dict]:
    if store == "memory":
        return "memory", {}
    if store == "sqlite":
        return "sqlite", {"db_path": os.path.join(tmpdir, "ours-bench.db")}
    if store == "redis":
        return "redis", {"redis_url": os.environ.get("ESCALATION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")}
    if store == "postgres":
        return "sql", {
            "url": os.environ.get("ESCALATION_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
            "table_prefix": "ours_bench_",
        }
    if store == "mysql":
        return "sql", {
            "url": os.environ.get("ESCALATION_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
            "table_prefix": "ours_bench_",
        }
    raise SystemExit(f"unknown store {store!r}")


def _make_engine(args, tmpdir: str, cfg_kwargs: dict):
    from airflow_escalation import EscalationEngine, EscalationEngineConfig

    store_type, store_config = _store(args.store, tmpdir)
    store_config = getattr(args, "store_config", None) or store_config  # a replica: the shared store
    module = {"sqlite": "sql", "sql": "sql", "redis": "redis"}.get(store_type)
    if module:
        try:
            __import__(f"airflow_escalation.stores.{module}")
        except ImportError as exc:
            raise StoreUnavailable(
                f"store {args.store!r} is not available yet: airflow_escalation.stores.{module} "
                f"does not import ({type(exc).__name__}: {exc})"
            ) from None
    try:
        return EscalationEngine(EscalationEngineConfig(store_type=store_type, store_config=store_config, **cfg_kwargs))
    except ImportError as exc:
        raise StoreUnavailable(f"store {args.store!r} is not available yet: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise StoreUnavailable(
            f"store {args.store!r} could not be created with {store_config}: {type(exc).__name__}: {exc}"
        ) from None


async def main(args, replica: "Replica | None" = None) -> dict:
    """One engine's run; a replica (``--replicas``) leaves the store alone and times its part
    between the start all replicas wait for and its own drain."""
    from importlib.metadata import version

    from airflow_escalation import EscalationLevel, EscalationPolicy, EscalationTarget, SchedulerConfig

    delay = _shape.HANDLER_DELAYS[args.handler]
    run_id = uuid.uuid4().hex[:8]
    tmpdir = tempfile.mkdtemp(prefix="ours-bench-")
    sched = SchedulerConfig(scheduler_type="asyncio")  # default max_concurrent_jobs, reported below
    if replica is not None:
        sched = SchedulerConfig(scheduler_type="asyncio", check_interval_seconds=3600)
    engine = _make_engine(args, tmpdir, {"scheduler_config": sched})
    durable = args.store != "memory" and replica is None  # replicas: the parent clears the store
    if durable:
        engine.store.clear()
    engine.register_policy(
        EscalationPolicy(
            name=_shape.POLICY_NAME,
            levels=[
                EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.user(_shape.L1_USER)]),
                EscalationLevel(
                    level=2, delay_minutes=_shape.L2_DELAY_MINUTES, targets=[EscalationTarget.user(_shape.L2_USER)]
                ),
            ],
            severity_filter=list(_shape.SEVERITY_FILTER),
        )
    )

    loop = asyncio.get_running_loop()
    waiters: dict[str, asyncio.Future] = {}  # record id -> future resolved by the handler
    delivered_early: set[str] = set()  # handler ran before the lifecycle registered its future
    notified = {"level1": 0, "other": 0}

    def delivered(record_id: str) -> None:
        fut = waiters.pop(record_id, None)
        if fut is None:
            delivered_early.add(record_id)
        elif not fut.done():
            fut.set_result(None)

    if delay:

        async def handler(record, level, targets):
            await asyncio.sleep(delay)
            if level.level == 1:
                notified["level1"] += 1
                delivered(record.id)
            else:
                notified["other"] += 1
            return True
    else:

        async def handler(record, level, targets):
            if level.level == 1:
                notified["level1"] += 1
                delivered(record.id)
            else:
                notified["other"] += 1
            return True

    engine.set_notification_handler(handler)
    failures: list[str] = []

    async def lifecycle(i: int) -> None:
        t = await engine.trigger(f"ours-{run_id}-{i}", context=dict(_shape.CONTEXT), policy_name=_shape.POLICY_NAME)
        if not t.success or t.record is None:
            failures.append(f"trigger: {t.error or t.message}")
            return
        rid = t.record.id
        if rid in delivered_early:
            delivered_early.discard(rid)
        else:
            fut = loop.create_future()
            waiters[rid] = fut
            await fut
        a = await engine.acknowledge(rid, acknowledged_by="bench")
        if not a.success:
            failures.append(f"acknowledge: {a.error or a.message}")
            return
        r = await engine.resolve(rid, resolved_by="bench")
        if not r.success:
            failures.append(f"resolve: {r.error or r.message}")
        elif r.record is None or r.record.state != "resolved":
            failures.append(f"resolve: state {getattr(r.record, 'state', None)!r}")

    await engine.start()
    scheduler = type(engine.scheduler).__name__
    try:
        if replica is not None:
            replica.started.wait()  # no engine's start-up sweep may take another's deliveries
        await _shape.run_batches(lifecycle, 0, args.warmup)
        await engine.drain()
        if replica is not None:
            gc.collect()
            replica.start.wait()  # every replica has warmed up: go together
            cpu0 = time.process_time()
        with _shape.Timer() as timer:
            await _shape.run_batches(lifecycle, args.warmup, args.n)
            await engine.drain()  # every delivery's outcome is written before the clock stops
        if replica is not None:
            timer.cpu = time.process_time() - cpu0
    finally:
        await engine.stop()

    total = args.warmup + args.n
    if not failures and notified["level1"] != total:
        failures.append(f"level-1 handler ran {notified['level1']} times for {total} lifecycles")
    if not failures and replica is None:  # replicas: the parent counts the shared store
        stats = engine.get_stats()
        resolved = getattr(stats, "resolved_count", None)
        if resolved is not None and resolved != total:
            failures.append(f"store counts {resolved} resolved escalations for {total} lifecycles")
    if durable:
        try:
            engine.store.clear()
        except Exception:
            pass
    if replica is not None:
        return {
            "n": args.n,
            "warmup": args.warmup,
            "cpu": timer.cpu,
            "failures": failures,
            "scheduler": scheduler,
            "max_concurrent_jobs": sched.max_concurrent_jobs,
        }
    result = {
        "engine": "airflow_escalation",
        "version": version("airflow-provider-escalation"),
        "store": args.store,
        "handler": args.handler,
        "scheduler": scheduler,
        "max_concurrent_jobs": sched.max_concurrent_jobs,
        "warmup": args.warmup,
        "failures": len(failures),
        **_shape.figures(args.n, timer),
    }
    if failures:
        result["error"] = f"{len(failures)} lifecycle(s) failed, first: {failures[0]}"
    return result


class Replica:
    """What replica processes share with the parent: two start lines (engines started, warmed
    up; the parent waits at both too) and the results queue."""

    def __init__(self, context: multiprocessing.context.BaseContext, replicas: int) -> None:
        self.started = context.Barrier(replicas + 1)
        self.start = context.Barrier(replicas + 1)
        self.results = context.Queue()


def _replica(args, index: int, replica: Replica) -> None:
    try:
        result = asyncio.run(main(args, replica))
    except BaseException as exc:
        replica.started.abort()  # do not leave the others waiting at a start line
        replica.start.abort()
        result = {"error": f"replica {index}: {type(exc).__name__}: {exc}"}
    replica.results.put(result)


def run_replicas(args, replicas: int) -> dict:
    """``replicas`` engine processes on one store, each with N/replicas lifecycles (see --replicas)."""
    from importlib.metadata import version

    from airflow_escalation.stores.factory import create_store

    store_type, store_config = _store(args.store, tempfile.mkdtemp(prefix="ours-bench-"))
    if args.store == "sqlite":  # one file for all of them
        store_config["db_path"] = os.path.join(tempfile.mkdtemp(prefix="ours-bench-"), "ours-bench.db")
    store = create_store(store_type, **store_config)
    store.clear()
    context = multiprocessing.get_context("spawn")
    replica = Replica(context, replicas)
    processes = []
    for index in range(replicas):
        part = argparse.Namespace(**vars(args))
        part.n = args.n // replicas + (index < args.n % replicas)
        part.warmup = args.warmup // replicas + (index < args.warmup % replicas)
        part.store_config = store_config
        processes.append(context.Process(target=_replica, args=(part, index, replica)))
    for process in processes:
        process.start()
    try:
        replica.started.wait()
        replica.start.wait()
        wall0 = time.perf_counter()
        results = [replica.results.get() for _ in processes]
        wall = time.perf_counter() - wall0
    except Exception:  # a replica failed before the start line: its result says why
        results = [replica.results.get(timeout=60) for _ in processes]
        wall = 0.0
    for process in processes:
        process.join()
    failures = [f for r in results for f in r.get("failures", [])]
    errors = [r["error"] for r in results if "error" in r]
    total = args.n + args.warmup
    if not errors and not failures:
        resolved = store.get_stats().resolved_count
        if resolved != total:
            failures.append(f"store counts {resolved} resolved escalations for {total} lifecycles")
    try:
        store.clear()
    finally:
        store.close()
    ok = [r for r in results if "error" not in r]
    timer = _shape.Timer()
    timer.wall, timer.cpu = wall, sum(r["cpu"] for r in ok)
    result = {
        "engine": "airflow_escalation",
        "version": version("airflow-provider-escalation"),
        "store": args.store,
        "handler": args.handler,
        "replicas": replicas,
        "scheduler": ok[0]["scheduler"] if ok else None,
        "max_concurrent_jobs": ok[0]["max_concurrent_jobs"] if ok else None,
        "warmup": args.warmup,
        "failures": len(failures),
        **_shape.figures(args.n, timer),
    }
    if errors:
        result["error"] = errors[0]
    elif failures:
        result["error"] = f"{len(failures)} lifecycle(s) failed, first: {failures[0]}"
    return result


def _own_args() -> argparse.Namespace:
    """Options of this script beyond _shape's (taken off sys.argv before _shape parses it)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--replicas", type=int, default=1)
    own, rest = p.parse_known_args()
    sys.argv[1:] = rest
    return own


if __name__ == "__main__":
    own = _own_args()
    args = _shape.parse_args(__doc__.splitlines()[0], DEFAULT_N, ["memory", "sqlite", "redis", "postgres", "mysql"])
    if own.replicas > 1 and args.store == "memory":
        raise SystemExit("--replicas needs a durable store (engines share their store)")
    try:
        out = run_replicas(args, own.replicas) if own.replicas > 1 else asyncio.run(main(args))
    except StoreUnavailable as exc:
        _shape.emit({"engine": "airflow_escalation", "store": args.store, "handler": args.handler, "error": str(exc)})
        sys.exit(1)
    except Exception as exc:  # report, don't crash the caller's table
        traceback.print_exc()
        _shape.emit(
            {
                "engine": "airflow_escalation",
                "store": args.store,
                "handler": args.handler,
                "error": f"{type(exc).__name__}: {exc}",
            }
        )
        sys.exit(1)
    _shape.emit(out)
    sys.exit(1 if "error" in out else 0)
