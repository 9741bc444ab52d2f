"""Failure-callback hand-off time, and the service requests made by 1,000 waiting sensors.

    .venv/bin/python bench/callback_handoff.py            # ~4 min
    .venv/bin/python bench/callback_handoff.py --quick    # ~1.5 min

The escalation service (the real app, memory store, JWT-checked) runs in a child process on
127.0.0.1 and counts the requests it receives. This process plays the Airflow components:

1. **Hand-off, warm**: ``EscalationNotifier`` called as a task's ``on_failure_callback`` is
   called, ``--calls`` times in one process (each a new incident: a new escalation), then the
   same number of repeated failures of one task (joining its open escalation). Reported: p50,
   p90, p99 and max of the whole callback (template rendering, connection lookup, JWT, one
   HTTP round trip, spool check), in milliseconds.
2. **Hand-off, cold**: ``--cold`` fresh processes, each the way a task process meets a failure:
   Airflow and the notifier module imported (not timed, Airflow's own start-up), then the first
   callback timed, lazy imports (httpx, the client, Airflow's JWT code) included.
3. **Waiting sensors**: ``--triggers`` ``EscalationStateTrigger``\\ s (what a deferred
   ``EscalationSensor`` runs) in one event loop, like one triggerer, ``--interval`` seconds
   apart: the requests per second the service receives while they wait, counted at the server
   over ``--window`` seconds; then every record is acknowledged and the time until each trigger
   fired is reported. The same is measured with one poller per trigger (what an unshared trigger
   would cost) for comparison.

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "dags"))
sys.path.insert(0, str(ROOT))

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="escalation-bench-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from escalation_service_thread import JWT_SECRET, ServiceThread, free_port  # noqa: E402
from _percentile import pct  # noqa: E402

os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = JWT_SECRET
os.environ.setdefault("AIRFLOW__ESCALATION__SPOOL_DIR", tempfile.mkdtemp(prefix="escalation-bench-spool-"))


# ------------------------------------------------------------------------------ the service


def serve(port: int) -> None:
    """Child process: the service, plus an unauthenticated counter route for the bench."""
    import copy

    from escalation_service_thread import FAST_POLICIES

    policies = copy.deepcopy(FAST_POLICIES)
    policies["escalation"]["max_concurrent_escalations"] = 1_000_000  # the default 1,000 is a gate
    svc = ServiceThread(policies, port=port)

    async def counts(reset: bool = False) -> dict:
        data = dict(svc.requests)
        if reset:
            svc.reset_counts()
        return {k: v for k, v in data.items() if "__bench" not in k}

    svc.app.add_api_route("/__bench/counts", counts, methods=["GET"])
    svc.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        svc.stop()


class Service:
    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkdtemp(prefix="escalation-bench-")) / "service.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.counts()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.1)
        os.environ["AIRFLOW_CONN_ESCALATION_DEFAULT"] = json.dumps(
            # signing in the component is opt-in since login became the default; the bench
            # service checks JWTs only
            {
                "conn_type": "escalation",
                "host": self.base,
                "extra": {"api_path": "/api/v1", "retries": 0, "auth_type": "jwt"},
            }
        )

    def counts(self, reset: bool = False) -> dict[str, int]:
        import httpx

        return httpx.get(f"{self.base}/__bench/counts", params={"reset": "1"} if reset else {}).json()

    def client(self):
        from airflow_escalation.client.http import EscalationClient
        from airflow_escalation.hooks.escalation import AirflowJWTTokenProvider

        return EscalationClient(
            self.base,
            api_path="/api/v1",
            retries=2,
            token_provider=AirflowJWTTokenProvider(subject="airflow-escalation-bench", role="OP"),
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ------------------------------------------------------------------------------ contexts


class FakeTI:
    def __init__(self, dag_id: str, task_id: str, try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, "manual__2024-06-01T00:00:00+00:00"
        self.try_number, self.map_index = try_number, -1

    @property
    def log_url(self) -> str:
        return f"http://localhost:8080/dags/{self.dag_id}/runs/{self.run_id}/tasks/{self.task_id}"


def context(dag, task_id: str, try_number: int = 1) -> dict[str, Any]:
    ti = FakeTI(dag.dag_id, task_id, try_number)
    return {
        "dag": dag,
        "ti": ti,
        "task_instance": ti,
        "run_id": ti.run_id,
        "exception": ValueError("orders feed is empty: 0 rows for the last hour"),
    }


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.5), 2),
        "p90_ms": round(pct(ms, 0.9), 2),
        "p99_ms": round(pct(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.mean(ms), 2),
    }


# ------------------------------------------------------------------------------ 1. warm


def warm_handoff(calls: int) -> dict[str, Any]:
    from airflow.sdk import DAG

    from airflow_escalation.notifications.escalation import EscalationNotifier

    dag = DAG("bench_etl", schedule=None)
    notifier = EscalationNotifier(
        policy_name="production_critical", severity="critical", message="{{ ti.task_id }} failed in {{ run_id }}"
    )
    notifier(context(dag, "warmup"))
    new, join = [], []
    for n in range(calls):
        started = time.perf_counter()
        notifier(context(dag, f"task_{n}"))
        new.append(time.perf_counter() - started)
        assert notifier.last_handoff.outcome == "sent", notifier.last_handoff
    for n in range(calls):
        started = time.perf_counter()
        notifier(context(dag, "flaky", try_number=n + 1))
        join.append(time.perf_counter() - started)
        assert notifier.last_handoff.outcome == "sent", notifier.last_handoff
    return {"new_incident": summary(new), "repeated_failure_joins": summary(join)}


# ------------------------------------------------------------------------------ 2. cold

COLD_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.sdk import DAG
t1 = time.perf_counter()
from airflow_escalation.notifications.escalation import EscalationNotifier
t2 = time.perf_counter()
class TI:
    dag_id, task_id, run_id, try_number, map_index = "bench_cold", f"cold_{sys.argv[2]}", "manual__1", 1, -1
    log_url = "http://localhost:8080/dags/bench_cold/runs/manual__1/tasks/cold"
dag = DAG("bench_cold", schedule=None)
ti = TI()
ctx = {"dag": dag, "ti": ti, "task_instance": ti, "run_id": ti.run_id, "exception": ValueError("boom")}
notifier = EscalationNotifier(policy_name="production_critical")
started = time.perf_counter()
notifier(ctx)
took = time.perf_counter() - started
print("COLD " + json.dumps({"handoff": took, "import_notifier": t2 - t1, "import_airflow_sdk": t1 - t0,
                            "outcome": notifier.last_handoff.outcome}))
"""


def cold_handoff(runs: int) -> dict[str, Any]:
    handoffs, imports = [], []
    for n in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", COLD_SCRIPT, "-", str(n)],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
            cwd=ROOT,
        )
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("COLD ")]
        if not line:
            raise RuntimeError(f"cold run failed: {done.stderr[-2000:]}")
        data = json.loads(line[-1][5:])
        assert data["outcome"] == "sent", data
        handoffs.append(data["handoff"])
        imports.append(data["import_notifier"])
    return {"first_callback": summary(handoffs), "import_notifier_module": summary(imports)}


# ------------------------------------------------------------------------------ 3. sensors


async def waiting_triggers(
    service: Service, record_ids: list[str], interval: float, window: float, shared: bool
) -> dict[str, Any]:
    from airflow_escalation.triggers import escalation as trigger_module
    from airflow_escalation.triggers import poller as poller_module
    from airflow_escalation.triggers.escalation import EscalationStateTrigger

    original = poller_module.shared_poller
    if not shared:  # every trigger its own poller: one request per trigger per interval

        def own_poller(conn_id: str, **kwargs: Any):
            return poller_module.SharedEscalationPoller(conn_id, drain_spool=False, **kwargs)

        poller_module.shared_poller = own_poller
    fired: dict[str, float] = {}

    async def wait(rid: str) -> None:
        event = await anext(EscalationStateTrigger(rid, "acknowledged", poll_interval=interval).run())
        assert event.payload["status"] == "success", event.payload
        fired[rid] = time.monotonic()

    try:
        tasks = [asyncio.create_task(wait(rid)) for rid in record_ids]
        await asyncio.sleep(interval + 2)  # every trigger subscribed and fetched once
        await asyncio.to_thread(service.counts, True)
        started = time.monotonic()
        await asyncio.sleep(window)
        counts = await asyncio.to_thread(service.counts, True)
        elapsed = time.monotonic() - started
        requests = sum(v for k, v in counts.items() if k.startswith("GET "))
        acked: dict[str, float] = {}

        def ack_all() -> None:
            from airflow_escalation.client.errors import EscalationConflict

            with service.client() as client:
                for rid in record_ids:
                    try:
                        client.acknowledge(rid)
                    except EscalationConflict as exc:  # a retried acknowledge that went through
                        if not exc.after_retry:
                            raise
                    acked[rid] = time.monotonic()

        await asyncio.to_thread(ack_all)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=interval * 3 + 60)
        latency = [fired[rid] - acked[rid] for rid in record_ids]
    finally:
        poller_module.shared_poller = original
        _ = trigger_module
    return {
        "triggers": len(record_ids),
        "interval_s": interval,
        "window_s": round(elapsed, 1),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 2),
        "unshared_equivalent_per_s": round(len(record_ids) / interval, 1),
        "ack_to_event": summary(latency),
    }


def make_records(service: Service, n: int, prefix: str) -> list[str]:
    ids = []
    with service.client() as client:
        for i in range(n):
            answer = client.trigger(f"{prefix}-{i}", {"severity": "high", "dag_id": "bench_sensors"})
            if not answer.get("record"):
                raise RuntimeError(f"trigger {prefix}-{i} refused: {answer}")
            ids.append(answer["record"]["id"])
    return ids


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--cold", type=int, default=12)
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument(
        "--unshared-triggers",
        type=int,
        default=200,
        help="triggers for the one-poller-per-trigger comparison (default 200)",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.quick:
        args.calls, args.cold, args.window = 50, 3, 6.0
    service = Service()
    result: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        t0 = time.monotonic()
        log = lambda msg: print(f"[bench] {time.monotonic() - t0:6.1f}s {msg}", file=sys.stderr, flush=True)  # noqa: E731
        log(f"warm hand-off: {args.calls} new incidents + {args.calls} repeated failures")
        result["warm"] = warm_handoff(args.calls)
        log(f"cold hand-off: {args.cold} fresh processes")
        result["cold"] = cold_handoff(args.cold)
        log(f"creating {args.triggers} escalations for the waiting sensors")
        ids = make_records(service, args.triggers, "shared")
        log(f"{args.triggers} waiting triggers, shared poller, {args.window:.0f}s window")
        result["sensors_shared"] = asyncio.run(waiting_triggers(service, ids, args.interval, args.window, True))
        n_unshared = args.unshared_triggers or args.triggers
        ids = make_records(service, n_unshared, "unshared")
        log(f"{n_unshared} waiting triggers, one poller each, {args.window:.0f}s window")
        result["sensors_unshared"] = asyncio.run(waiting_triggers(service, ids, args.interval, args.window, False))
    finally:
        service.stop()

    w, c = result["warm"], result["cold"]
    s, u = result["sensors_shared"], result["sensors_unshared"]
    rows = [
        ("hand-off, new incident (warm)", w["new_incident"]),
        ("hand-off, repeated failure joins (warm)", w["repeated_failure_joins"]),
        ("hand-off, first callback of a fresh process", c["first_callback"]),
        ("import of the notifier module", c["import_notifier_module"]),
    ]
    print("\n| callback hand-off | n | p50 ms | p90 ms | p99 ms | max ms |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for label, st in rows:
        print(
            f"| {label} | {st['n']} | {st['p50_ms']} | {st['p90_ms']} | {st['p99_ms']} | {st['max_ms']} |",
            file=sys.stderr,
        )
    print(
        "\n| waiting triggers (one event loop) | triggers | interval s | requests/s at the service "
        "| ack -> event p50 / p99 s |",
        file=sys.stderr,
    )
    print("|---|---|---|---|---|", file=sys.stderr)
    for label, st in (("shared poller (EscalationStateTrigger)", s), ("one poller per trigger", u)):
        print(
            f"| {label} | {st['triggers']} | {st['interval_s']} | {st['requests_per_s']} | "
            f"{st['ack_to_event']['p50_ms'] / 1000:.2f} / {st['ack_to_event']['p99_ms'] / 1000:.2f} |",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
