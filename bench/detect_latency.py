"""From a task's end to the first delivery, for a failure no callback reported (docs/routes.md).

    .venv/bin/python bench/detect_latency.py              # 30 failures, ~4 min
    .venv/bin/python bench/detect_latency.py --runs 10    # ~2 min

A real stack on 127.0.0.1 (tests/airflow_stack.py: api-server with two workers, plus scheduler
and dag-processor; SQLite; LocalExecutor): a Dag whose one task fails at once and has no
callback; a failure route pages a policy whose level 1 is a webhook to a local HTTP sink; each run
is its own incident (``incident_key: "{dag_id}.{run_id}"``). For each run: the task's
``end_date`` (from the REST API, as the metadata database holds it) and the time the sink
received the run's first webhook. Reported: p50, p90, p99 and max of the difference, in seconds.

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from airflow_escalation.demo.sinks import HttpSink  # noqa: E402
from airflow_stack import AirflowStack  # noqa: E402
from _percentile import pct  # noqa: E402

POLICIES = """\
escalation:
  policies:
    - name: bench
      levels:
        - level: 1
          targets: [{type: webhook, identifier: /hooks/bench, conn_id: bench_sink}]
  routes:
    - dag_id: bench_detect
      policy: bench
      incident_key: "{dag_id}.{run_id}"
"""

DAG = """
from datetime import datetime
from airflow.sdk import DAG, task

with DAG(dag_id="bench_detect", schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
         max_active_runs=4) as dag:

    @task
    def fail() -> None:
        raise RuntimeError("bench")

    fail()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0, help="[escalation] detect_interval_seconds")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="escalation-bench-detect-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "bench_detect.py").write_text(DAG)
    sink = HttpSink()
    stack = AirflowStack(home, policies_yaml=POLICIES, dags_folder=dags, extra_env={})
    stack.env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__ESCALATION__DETECT_INTERVAL_SECONDS": str(args.interval),
            "AIRFLOW__API__BASE_URL": stack.base,
            "AIRFLOW_CONN_BENCH_SINK": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": sink.port, "schema": "http"}
            ),
            "PYTHONPATH": str(ROOT),
        }
    )
    latencies: list[float] = []
    try:
        assert stack.cli("db", "migrate").returncode == 0
        stack.start()
        stack.start_components("dag-processor", "scheduler")
        stack.wait(lambda: stack.get("/api/v2/dags/bench_detect").status_code, lambda s: s == 200, 180, "Dag parsed")
        run_ids = []
        for _ in range(args.runs):
            r = stack.post("/api/v2/dags/bench_detect/dagRuns", json={"logical_date": None})
            assert r.status_code in (200, 201), r.text
            run_ids.append(r.json()["dag_run_id"])
            time.sleep(0.5)  # spread the failures over time, as a deployment's are

        def first_hook(run_id: str) -> float | None:
            times = [t for _, body, outcome, t in sink.attempts if body.get("dag", {}).get("run_id") == run_id]
            return min(times) if times else None

        for run_id in run_ids:
            at = stack.wait(lambda r=run_id: first_hook(r), lambda t: t is not None, 300, f"webhook of {run_id}")
            ti = stack.get(f"/api/v2/dags/bench_detect/dagRuns/{run_id}/taskInstances/fail").json()
            ended = datetime.fromisoformat(ti["end_date"]).timestamp()
            latencies.append(at - ended)
    finally:
        stack.stop_all()
        sink.stop()
    result = {
        "runs": len(latencies),
        "detect_interval_seconds": args.interval,
        "p50_s": round(statistics.median(latencies), 3),
        "p90_s": round(pct(latencies, 0.90), 3),
        "p99_s": round(pct(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3),
        "min_s": round(min(latencies), 3),
    }
    print(
        f"task end -> first delivery, {result['runs']} failures without callback "
        f"(detect_interval_seconds={args.interval:g}): p50 {result['p50_s']:.2f}s, p90 {result['p90_s']:.2f}s, "
        f"p99 {result['p99_s']:.2f}s, max {result['max_s']:.2f}s",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
