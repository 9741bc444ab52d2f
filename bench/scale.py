"""Store query times at 100,000 records: the due sweep, the active lists and counts, per backend.

Fills each store with N records (default 100,000) in a realistic mix, then times, median of
``--runs`` runs after one untimed run:

- the due sweep the engine runs on every wake-up: ``claim_due(now, 200, ...)`` (200 is
  ``SchedulerConfig.batch_size``) and ``next_due_at()``;
- the active lists the service shows: ``get_active(policy)`` (every paging record of one policy,
  with its history) and ``list_records(states=<active states>, limit=50)`` (newest page + total);
- the counts: ``count_active()`` (what ``max_concurrent_escalations`` is checked against on every
  trigger) and ``get_stats()`` (the stats page: totals by state, level, policy and target, mean
  times to acknowledge and resolve).

The mix: 90% closed (resolved, some timed out or cancelled), 10% open; of the open ones, 1% of all
records are due now (``next_escalation_at`` in the past), the others due later; 20% of the open
ones are acknowledged (open but no longer paging). Four policies, three or four history events
and one or two deliveries per record. SQLite and Redis are filled with ``create`` through the
store's ``run_batch`` (a batch of creates per transaction or pipeline, as the engine writes queued
calls to them); PostgreSQL and MySQL, where that takes minutes, by bulk INSERTs (SQLAlchemy Core
executemany) of the rows ``create`` writes, checked afterwards against ``get``. The servers'
planner statistics are then refreshed (ANALYZE), as autovacuum / InnoDB do after a bulk load.

    .venv/bin/python bench/scale.py                         # memory, sqlite, postgres, mysql, redis
    .venv/bin/python bench/scale.py --backends sqlite redis --n 20000

Servers come from $ESCALATION_BENCH_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), $ESCALATION_BENCH_MYSQL_URL (default
mysql+pymysql://root@127.0.0.1:3306/test) and $ESCALATION_BENCH_REDIS_URL (default
redis://127.0.0.1:6379/14). The stores use their own table prefix (``bench_queries_``) and key
prefix (``escalation-bench-queries:``), dropped / deleted afterwards; a backend that cannot be
reached is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from airflow_escalation.core.models import Delivery, EscalationRecord, EscalationTarget
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, DeliveryState
from airflow_escalation.stores.sql_schema import NAME

UTC = timezone.utc
TABLE_PREFIX = "bench_queries_"
KEY_PREFIX = "escalation-bench-queries:"
URLS = {
    "postgres": ("ESCALATION_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": ("ESCALATION_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": ("ESCALATION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
}
BACKENDS = ["memory", "sqlite", "postgres", "mysql", "redis"]
POLICIES = ["db-critical", "etl-nightly", "api-latency", "ml-training"]
SCOPED_DAGS = ["dag_0", "dag_1"]  # the stats a user allowed two of the 50 Dags sees
CLAIM_LIMIT = 200  # SchedulerConfig.batch_size
FILL_BATCH = 1_000  # creates per run_batch call
LEASE = timedelta(seconds=120)
ACTIVE = sorted(ACTIVE_STATE_VALUES)
POLICY_SNAPSHOT = {  # about the size of a two-level policy's snapshot
    "name": "db-critical",
    "levels": [
        {"level": 1, "delay_minutes": 0, "targets": [{"type": "user", "identifier": "oncall-primary"}]},
        {"level": 2, "delay_minutes": 15, "targets": [{"type": "team", "identifier": "dba"}]},
    ],
    "severity_filter": ["critical"],
    "triggers": ["unacknowledged"],
}


# --------------------------------------------------------------------------- the records


def sent_delivery(record: EscalationRecord, level: int, target: EscalationTarget, at: datetime) -> Delivery:
    return Delivery(
        id=f"{record.id}-{level}-0",
        record_id=record.id,
        level=level,
        round=0,
        target=target,
        created_at=at,
        updated_at=at,
        state=DeliveryState.SENT,
        attempts=1,
        sent_at=at,
    )


def make_record(i: int, now: datetime, rng: random.Random) -> tuple[EscalationRecord, list[Delivery]]:
    """Record ``i`` of the mix (see the module docstring) with its deliveries."""
    policy = POLICIES[i % len(POLICIES)]
    created = now - timedelta(days=30) + timedelta(seconds=i * 25)  # spread over the last month
    kind = i % 100  # 0: due now; 1-7: active, due later; 8-9: acknowledged; others closed
    record = EscalationRecord(
        id=f"bq{i:07d}",
        incident_id=f"incident-{i}",
        policy_name=policy,
        current_level=1,
        state="active",
        created_at=created,
        updated_at=created,
        context={"severity": "critical", "dag_id": f"dag_{i % 50}", "task_id": "load"},
        metadata={"trigger_count": 1},
        policy_snapshot=dict(POLICY_SNAPSHOT, name=policy),
        level_fired_at=created,
        notify_rounds=1,
    )
    record.add_history_event("triggered", created, "system", trigger_type="unacknowledged", severity="critical")
    record.add_history_event("start", created, "system", from_state="pending")
    record.add_history_event("notified", created, "system", round=0, targets=["user:oncall-primary"])
    deliveries = [sent_delivery(record, 1, EscalationTarget.user("oncall-primary"), created)]
    if kind == 0:  # due now: level 2 is late
        record.next_escalation_at = now - timedelta(seconds=rng.randint(1, 3600))
        record.next_action = "escalate"
    elif kind <= 7:  # paging, level 2 due later
        record.next_escalation_at = now + timedelta(minutes=rng.randint(1, 15))
        record.next_action = "escalate"
    else:
        later = created + timedelta(minutes=rng.randint(1, 30))
        record.updated_at = later
        if kind in (8, 9):  # acknowledged: open, no longer paging
            record.state = "acknowledged"
            record.acknowledged_at, record.acknowledged_by = later, "oncall"
            record.add_history_event("acknowledge", later, "oncall", from_state="active")
        else:
            closed = "resolved" if kind < 95 else ("timed_out" if kind < 98 else "cancelled")
            record.state = closed
            record.closed_at = later
            if closed == "resolved":
                record.resolved_at, record.resolved_by = later, "oncall"
            record.add_history_event(
                closed if closed != "timed_out" else "timeout", later, "oncall", from_state="active"
            )
            if kind % 2:  # some reached level 2 first
                deliveries.append(sent_delivery(record, 2, EscalationTarget.team("dba"), later))
    return record, deliveries


# --------------------------------------------------------------------------- the stores


def open_store(backend: str, tmpdir: str) -> Any:
    if backend == "memory":
        from airflow_escalation.stores.memory import InMemoryEscalationStore

        return InMemoryEscalationStore()
    if backend == "sqlite":
        from airflow_escalation.stores.sql import SQLiteEscalationStore

        return SQLiteEscalationStore(os.path.join(tmpdir, "queries.db"))
    env, default = URLS[backend]
    url = os.environ.get(env, default)
    if backend == "redis":
        from airflow_escalation.stores.redis import RedisEscalationStore

        store = RedisEscalationStore(url, key_prefix=KEY_PREFIX)
        store.client.ping()
        return store
    from airflow_escalation.stores.sql import SQLEscalationStore

    return SQLEscalationStore(url, table_prefix=TABLE_PREFIX)


def drop_store(backend: str, store: Any) -> None:
    """Remove what the run left: the Redis keys, the SQL tables."""
    if backend == "redis":
        store.clear()
    elif backend not in ("sqlite", "memory"):  # sqlite: its temporary directory goes
        with store.engine.begin() as conn:
            for table in reversed(store.tables):
                table.drop(conn, checkfirst=True)
    store.close()


def sql_rows(record: EscalationRecord, deliveries: list[Delivery]) -> tuple[dict, list[dict], list[dict]]:
    """The record, event and delivery rows ``create`` writes, with model values (SQLAlchemy's
    column types convert them)."""
    from airflow_escalation.stores.sql import delivery_row, open_key

    row = {name: getattr(record, name) for name in EscalationRecord.__dataclass_fields__ if name != "history"}
    dag_id = record.context.get("dag_id")
    row.update(
        version=1,
        history_len=len(record.history),
        open_key=open_key(record.incident_id, record.policy_name, record.dag_id) if record.is_open else None,
        lease_owner=None,
        lease_until=None,
        dag_id=dag_id if isinstance(dag_id, str) and len(dag_id) <= NAME else None,
    )
    events = [
        {"record_id": record.id, "seq": seq, "at": datetime.fromisoformat(e["at"]), "event": e}
        for seq, e in enumerate(record.history)
    ]
    delivered = [delivery_row(d, seq) for seq, d in enumerate(deliveries)]
    return row, events, delivered


def fill(store: Any, backend: str, n: int, now: datetime) -> float:
    """Write the n records; seconds taken."""
    bulk = backend in ("postgres", "mysql")
    record, event, delivery = store.tables if bulk else (None, None, None)

    def write(start: int) -> None:
        rng = random.Random(start)
        made = [make_record(i, now, rng) for i in range(start, min(n, start + FILL_BATCH))]
        if bulk:
            rows = [sql_rows(r, d) for r, d in made]
            with store.engine.begin() as conn:
                conn.execute(record.insert(), [r for r, _, _ in rows])
                conn.execute(event.insert(), [e for _, events, _ in rows for e in events])
                conn.execute(delivery.insert(), [d for _, _, ds in rows for d in ds])
            return
        if backend == "memory":
            for args in made:
                if store.create(*args) is None:
                    raise RuntimeError("a record of the mix was refused")
            return
        for result, error in store.run_batch([(store.create, args, {}) for args in made]):
            if error is not None:
                raise error
            if result is None:
                raise RuntimeError("a record of the mix was refused")

    started = time.perf_counter()
    # SQLite has one writer at a time: more threads would only queue
    with ThreadPoolExecutor(1 if backend in ("sqlite", "memory") else 4) as pool:
        for _ in pool.map(write, range(0, n, FILL_BATCH)):
            pass
    took = time.perf_counter() - started
    if bulk:
        check(store, now)
        with store.engine.connect() as conn:  # the statistics autovacuum / InnoDB would gather
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in store.tables:
                conn.exec_driver_sql(("ANALYZE " if backend == "postgres" else "ANALYZE TABLE ") + table.name)
    return took


def check(store: Any, now: datetime) -> None:
    """The bulk rows read back as the records they were made from."""
    rng = random.Random(0)  # as write(0) made them
    made_first = [make_record(i, now, rng) for i in range(100)]
    for i in (0, 1, 4, 5, 95, 98):
        made, deliveries = made_first[i]
        stored = store.get(made.id)
        made.version = 1
        if stored is None or stored.to_dict() != made.to_dict():
            raise RuntimeError(f"bulk fill: record {made.id} reads back as {stored and stored.to_dict()}")
        if [d.to_dict() for d in store.get_deliveries(made.id)] != [d.to_dict() for d in deliveries]:
            raise RuntimeError(f"bulk fill: the deliveries of {made.id} do not read back")


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median seconds of ``runs`` calls after an untimed one, and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def measure(backend: str, n: int, runs: int) -> dict[str, Any]:
    tmpdir = tempfile.mkdtemp(prefix="scale-")
    try:
        store = open_store(backend, tmpdir)
    except Exception as exc:
        shutil.rmtree(tmpdir, ignore_errors=True)
        return {"backend": backend, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    try:
        store.clear()
        now = datetime.now(UTC)
        filled = fill(store, backend, n, now)
        policy = POLICIES[0]
        out: dict[str, Any] = {"backend": backend, "fill_s": filled}
        out["claim_due"], claimed = timed(lambda: store.claim_due(now, CLAIM_LIMIT, "bench", LEASE), runs)
        out["claimed"] = len(claimed)
        out["next_due_at"], _ = timed(store.next_due_at, runs)
        out["get_active"], active = timed(lambda: store.get_active(policy), runs)
        out["active_n"] = len(active)
        out["get_active_bare"], _ = timed(lambda: store.get_active(policy, with_history=False), runs)
        out["list_records"], (page, total) = timed(lambda: store.list_records(states=ACTIVE, limit=50), runs)
        out["page_n"], out["total"] = len(page), total
        out["count_active"], out["active_total"] = timed(store.count_active, runs)
        out["get_stats"], stats = timed(store.get_stats, runs)
        out["stats_total"] = stats.total_escalations
        out["get_stats_dags"], stats = timed(lambda: store.get_stats(dag_ids=SCOPED_DAGS), runs)
        out["stats_dags_total"] = stats.total_escalations
        return out
    finally:
        try:
            drop_store(backend, store)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    p.add_argument("--n", type=int, default=100_000, help="records per store (default 100,000)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per query; the median is shown")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = p.parse_args()

    rows, results = [], []
    for backend in args.backends:
        print(f"[scale] {backend}: filling {args.n:,} records ...", file=sys.stderr, flush=True)
        r = measure(backend, args.n, args.runs)
        results.append(r)
        if "error" in r:
            rows.append([backend, f"unavailable: {r['error']}"] + [""] * 9)
            continue
        rows.append(
            [
                backend,
                f"{r['fill_s']:.1f} s",
                f"{ms(r['claim_due'])} ({r['claimed']})",
                ms(r["next_due_at"]),
                f"{ms(r['claim_due'] + r['next_due_at'])}",
                f"{ms(r['get_active'])} ({r['active_n']:,})",
                ms(r["get_active_bare"]),
                f"{ms(r['list_records'])} ({r['page_n']} of {r['total']:,})",
                f"{ms(r['count_active'])} ({r['active_total']:,})",
                f"{ms(r['get_stats'])} ({r['stats_total']:,})",
                f"{ms(r['get_stats_dags'])} ({r['stats_dags_total']:,})",
            ]
        )
    header = [
        "backend",
        "fill",
        "claim_due(200) (claimed)",
        "next_due_at",
        "due sweep",
        "get_active(policy) (records)",
        "same, with_history=False",
        "list_records(active, 50) (page of total)",
        "count_active() (count)",
        "get_stats() (total)",
        "get_stats(2 of 50 Dags) (total)",
    ]
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(
        f"\n  {args.n:,} records per store: 90% closed, 10% open (1% due now, 2% acknowledged), "
        f"{len(POLICIES)} policies; median of {args.runs} runs after one untimed run; "
        f"python {sys.version.split()[0]}"
    )
    if args.json:
        print(json.dumps({"scale": results, "n": args.n, "runs": args.runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
