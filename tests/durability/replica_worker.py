"""One escalation replica for test_replica_processes.py, run as ``sys.executable replica_worker.py``.

It opens the store (``--store postgresql|redis --url URL --prefix PREFIX``), starts an engine on
the real clock (asyncio scheduler, ``check_interval_seconds=0.5``, ``--lease-seconds``) with a
two-level policy (L1 delay 0 → ``user:l1``; L2 ``--l2-delay-minutes`` → ``user:l2``), triggers
every id of ``--ids``, then runs until SIGTERM, when it stops the engine cleanly and exits 0.

Each delivery appends one JSON line ``{pid, incident, record, level, target, at}`` to ``--out``
(opened with O_APPEND, one ``os.write`` per line), so several processes can share the file.

``--ready FILE --go FILE``: after the engine has started, create READY and wait for GO before
triggering (the test releases all replicas at once).
``--freeze-on-claim FILE``: the first time ``claim_due`` hands this process records, write their
ids and lease end to FILE and freeze that store call for good (the process holds the leases
until it is killed), as a replica dying in the middle of its work would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from airflow_escalation import (
    EscalationEngine,
    EscalationEngineConfig,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    SchedulerConfig,
)

POLICY = "replica-ladder"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=("postgresql", "mysql", "redis"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ids", default="")
    parser.add_argument("--l2-delay-minutes", type=float, default=0.05)
    parser.add_argument("--lease-seconds", type=float, default=2)
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--ready")
    parser.add_argument("--go")
    parser.add_argument("--freeze-on-claim")
    return parser.parse_args(argv)


def open_store(args: argparse.Namespace):
    if args.store == "redis":
        from airflow_escalation.stores.redis import RedisEscalationStore

        return RedisEscalationStore(redis_url=args.url, key_prefix=args.prefix)
    from airflow_escalation.stores.sql import SQLEscalationStore

    # the test created the tables before starting the replicas (as `airflow db migrate` would)
    return SQLEscalationStore(url=args.url, table_prefix=args.prefix, create_tables=False)


def freeze_on_first_claim(store, marker: str) -> None:
    """Wrap ``store.claim_due``: the first non-empty claim is reported and never returns."""
    claim_due = store.claim_due
    frozen = threading.Event()

    def claim(now, limit, owner, lease):
        records = claim_due(now, limit, owner, lease)
        if records and not frozen.is_set():
            frozen.set()
            report = {
                "pid": os.getpid(),
                "records": [r.id for r in records],
                "incidents": [r.incident_id for r in records],
                "lease_until": (now + lease).timestamp(),
            }
            Path(marker).write_text(json.dumps(report))
            threading.Event().wait()  # hold the leases until SIGKILL
        return records

    store.claim_due = claim


async def main(args: argparse.Namespace) -> int:
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    async def handler(record, level, targets):
        for target in targets:
            line = json.dumps(
                {
                    "pid": pid,
                    "incident": record.incident_id,
                    "record": record.id,
                    "level": level.level,
                    "target": target.key,
                    "at": time.time(),
                }
            )
            os.write(fd, (line + "\n").encode())
        return True

    store = open_store(args)
    if args.freeze_on_claim:
        freeze_on_first_claim(store, args.freeze_on_claim)
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=store,
            scheduler_config=SchedulerConfig(
                scheduler_type="asyncio",
                check_interval_seconds=args.check_interval,
                lease_seconds=args.lease_seconds,
            ),
            default_notification_handler=handler,
        )
    )
    engine.register_policy(
        EscalationPolicy(
            name=POLICY,
            levels=[
                EscalationLevel(level=1, delay_minutes=0, targets=[EscalationTarget.user("l1")]),
                EscalationLevel(level=2, delay_minutes=args.l2_delay_minutes, targets=[EscalationTarget.user("l2")]),
            ],
        )
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await engine.start()
    if args.ready:
        Path(args.ready).touch()
    if args.go:
        deadline = time.monotonic() + 120
        while not os.path.exists(args.go):
            if stop.is_set() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)

    failures = []
    for incident in filter(None, args.ids.split(",")):
        if stop.is_set():
            break
        result = await engine.trigger(incident, {"severity": "critical"}, POLICY)
        if not result.success:
            failures.append(f"{incident}: {result.message}")
    print(
        f"pid {pid}: triggered {len(args.ids.split(',')) if args.ids else 0} incidents, {len(failures)} failed",
        flush=True,
    )
    for failure in failures:
        print(f"trigger failed: {failure}", file=sys.stderr, flush=True)

    await stop.wait()
    await engine.stop(timeout=20)
    store.close()
    os.close(fd)
    print(f"pid {pid}: stopped cleanly", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
