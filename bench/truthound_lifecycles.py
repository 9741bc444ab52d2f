"""truthound 3.2.0 escalation lifecycles per second (run with .bench-venv/bin/python).

One lifecycle = ``trigger`` (truthound awaits the level-1 notification handler inline, under the
engine's global lock), ``acknowledge``, ``resolve``. Lifecycles run in gathered batches of 100
(see ``_shape.py``), unique incident ids. Prints one JSON line.

    .bench-venv/bin/python bench/truthound_lifecycles.py --handler instant
    .bench-venv/bin/python bench/truthound_lifecycles.py --handler 50ms --store sqlite
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _shape

# ~2-5 s each on a 2-core machine; at 50 ms truthound's global lock serialises every trigger (~20/s)
DEFAULT_N = {
    "memory": {"instant": 20_000, "50ms": 100},
    "durable": {"instant": 1_000, "50ms": 100},
    "quick-memory": {"instant": 2_000, "50ms": 20},
    "quick-durable": {"instant": 200, "50ms": 20},
}


def _store_config(store: str, tmpdir: str, run_id: str) -> dict:
    if store == "memory":
        return {}
    if store == "sqlite":
        # truthound's SQLiteEscalationStore takes ``database`` (``db_path`` is a TypeError)
        return {"database": os.path.join(tmpdir, "truthound-bench.db")}
    if store == "redis":
        url = os.environ.get("ESCALATION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
        return {"redis_url": url, "key_prefix": f"truthound-bench:{run_id}:"}
    raise SystemExit(f"unknown store {store!r}")


async def main(args) -> dict:
    from importlib.metadata import version

    from truthound.checkpoint.escalation.engine import EscalationEngine, EscalationEngineConfig
    from truthound.checkpoint.escalation.protocols import (
        EscalationLevel,
        EscalationPolicy,
        EscalationTarget,
    )

    delay = _shape.HANDLER_DELAYS[args.handler]
    run_id = uuid.uuid4().hex[:8]
    tmpdir = tempfile.mkdtemp(prefix="truthound-bench-")
    engine = EscalationEngine(
        EscalationEngineConfig(store_type=args.store, store_config=_store_config(args.store, tmpdir, run_id))
    )
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

    notified = {"level1": 0, "other": 0}

    if delay:

        async def handler(record, level, targets):
            await asyncio.sleep(delay)
            notified["level1" if level.level == 1 else "other"] += 1
            return True
    else:

        async def handler(record, level, targets):
            notified["level1" if level.level == 1 else "other"] += 1
            return True

    engine.set_notification_handler(handler)
    failures: list[str] = []

    async def lifecycle(i: int) -> None:
        t = await engine.trigger(f"tt-{run_id}-{i}", context=dict(_shape.CONTEXT), policy_name=_shape.POLICY_NAME)
        if not t.success or t.record is None:
            failures.append(f"trigger: {t.error or t.message}")
            return
        rid = t.record.id
        a = await engine.acknowledge(record_id=rid, acknowledged_by="bench")
        if not a.success:
            failures.append(f"acknowledge: {a.error or a.message}")
            return
        r = await engine.resolve(record_id=rid, resolved_by="bench")
        if not r.success:
            failures.append(f"resolve: {r.error or r.message}")
        elif r.record is None or r.record.state != "resolved":
            failures.append(f"resolve: state {getattr(r.record, 'state', None)!r}")

    await engine.start()
    scheduler = type(engine._scheduler).__name__
    try:
        await _shape.run_batches(lifecycle, 0, args.warmup)
        with _shape.Timer() as timer:
            await _shape.run_batches(lifecycle, args.warmup, args.n)
    finally:
        await engine.stop()
        if args.store == "redis":
            try:
                engine.store.clear()  # only this run's key prefix
            except Exception:
                pass

    total = args.warmup + args.n
    if not failures and notified["level1"] != total:
        failures.append(f"level-1 handler ran {notified['level1']} times for {total} lifecycles")
    result = {
        "engine": "truthound",
        "version": version("truthound"),
        "store": args.store,
        "handler": args.handler,
        "scheduler": scheduler,
        "warmup": args.warmup,
        "failures": len(failures),
        **_shape.figures(args.n, timer),
    }
    if failures:
        result["error"] = f"{len(failures)} lifecycle(s) failed, first: {failures[0]}"
    return result


if __name__ == "__main__":
    args = _shape.parse_args(__doc__.splitlines()[0], DEFAULT_N, ["memory", "sqlite", "redis"])
    try:
        out = asyncio.run(main(args))
    except Exception as exc:  # report, don't crash the caller's table
        traceback.print_exc()
        _shape.emit(
            {
                "engine": "truthound",
                "store": args.store,
                "handler": args.handler,
                "error": f"{type(exc).__name__}: {exc}",
            }
        )
        sys.exit(1)
    _shape.emit(out)
    sys.exit(1 if "error" in out else 0)
