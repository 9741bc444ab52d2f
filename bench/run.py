"""Escalation lifecycles/s: airflow_escalation vs truthound 3.2.0, measured in the same run.

Run with our venv's python (``.venv/bin/python bench/run.py``). Creates ``.bench-venv`` with
truthound (``bench/setup_env.sh``) when it is missing, then runs, one after the other, for each
scenario: ``truthound_lifecycles.py`` in ``.bench-venv`` and ``ours_lifecycles.py`` in this
interpreter. Prints a table; exits 1 when a target fails (or our side errors).

    .venv/bin/python bench/run.py                   # memory store, instant and 50 ms handlers
    .venv/bin/python bench/run.py --quick           # smoke run (a tenth of N)
    .venv/bin/python bench/run.py --store sqlite    # our sqlite store vs truthound's sqlite store
    .venv/bin/python bench/run.py --store postgres --replicas 3   # three engine processes, one database
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH_VENV = os.path.join(ROOT, ".bench-venv")
BENCH_PY = os.path.join(BENCH_VENV, "bin", "python")

SCENARIOS = [
    # (handler, label, minimum ratio ours/truthound)
    ("instant", "instant handler", 1.0),
    ("50ms", "50 ms handler", 25.0),
]
# truthound's store for each of ours (truthound has memory, sqlite and redis stores)
TRUTHOUND_STORE = {"memory": "memory", "sqlite": "sqlite", "redis": "redis", "postgres": None, "mysql": None}
TIMEOUT = 900


def ensure_bench_venv(store: str) -> None:
    """Run setup_env.sh (idempotent: a no-op when .bench-venv already holds truthound 3.2.0)."""
    cmd = [os.path.join(HERE, "setup_env.sh")] + (["--with-redis"] if store == "redis" else [])
    if not os.path.exists(BENCH_PY):
        print(f"[bench] creating {BENCH_VENV} with truthound 3.2.0 ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def run_one(python: str, script: str, handler: str, store: str, quick: bool, extra: tuple[str, ...] = ()) -> dict:
    cmd = [python, os.path.join(HERE, script), "--handler", handler, "--store", store, *extra]
    if quick:
        cmd.append("--quick")
    venv = os.path.basename(os.path.dirname(os.path.dirname(python)))
    print(
        f"[bench] {venv}: {script} --handler {handler} --store {store}{''.join(' ' + a for a in extra)}"
        f"{' --quick' if quick else ''}",
        file=sys.stderr,
        flush=True,
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    result = json.loads(lines[-1])
    if proc.returncode != 0 and "error" not in result:
        result["error"] = f"exit {proc.returncode}"
    if "error" in result and proc.stderr.strip():
        print(proc.stderr.rstrip(), file=sys.stderr)
    return result


def best(runs: list[dict]) -> dict:
    """The run with the highest rate (errors only when every run failed)."""
    ok = [r for r in runs if "error" not in r]
    return max(ok, key=lambda r: r["lifecycles_per_s"]) if ok else runs[-1]


def fmt_rate(result: dict | None, note: str = "") -> str:
    if result is None:
        return note
    if "error" in result:
        return f"error: {result['error']}"
    return f"{result['lifecycles_per_s']:,.0f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller N: a smoke run (~5 s on memory)")
    p.add_argument(
        "--store",
        choices=sorted(TRUTHOUND_STORE),
        default="memory",
        help="our store (and truthound's corresponding store where it has one)",
    )
    p.add_argument(
        "--only", choices=[s[0] for s in SCENARIOS], action="append", help="run only this scenario (repeatable)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each engine this many times (alternating) and keep its best run; use 3 on a noisy machine",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="run ours as this many engine processes sharing the durable store, each "
        "running its share of the lifecycles (truthound runs as one)",
    )
    p.add_argument("--json", action="store_true", help="also print every raw result as JSON")
    args = p.parse_args()
    if args.replicas > 1 and args.store == "memory":
        p.error("--replicas needs a durable --store")
    ours_extra = ("--replicas", str(args.replicas)) if args.replicas > 1 else ()

    t_store = TRUTHOUND_STORE[args.store]
    ensure_bench_venv(args.store)

    rows, raw, failed = [], [], False
    for handler, label, target in SCENARIOS:
        if args.only and handler not in args.only:
            continue
        theirs_runs, ours_runs = [], []
        for _ in range(max(1, args.repeat)):
            if t_store is not None:
                theirs_runs.append(run_one(BENCH_PY, "truthound_lifecycles.py", handler, t_store, args.quick))
            ours_runs.append(run_one(sys.executable, "ours_lifecycles.py", handler, args.store, args.quick, ours_extra))
        theirs = best(theirs_runs) if t_store is not None else None
        ours = best(ours_runs)
        raw.append(
            {
                "scenario": handler,
                "truthound": theirs,
                "ours": ours,
                "all_runs": {"truthound": theirs_runs, "ours": ours_runs},
            }
        )

        ratio_s, cpu_ratio_s, status = "n/a", "n/a", "n/a"
        if "error" in ours:
            status, failed = "FAIL", True
        elif theirs is not None and "error" not in theirs:
            ratio = ours["lifecycles_per_s"] / theirs["lifecycles_per_s"]
            ratio_s = f"{ratio:.2f}x"
            cpu_ratio_s = f"{theirs['cpu_us_per_lifecycle'] / ours['cpu_us_per_lifecycle']:.2f}x"
            status = "PASS" if ratio >= target else "FAIL"
            failed |= status == "FAIL"
        store_label = args.store if t_store == args.store else f"{args.store} vs {t_store or '-'}"
        if args.replicas > 1:
            store_label += f", ours x{args.replicas} replicas"
        rows.append(
            [
                f"{label} ({store_label})",
                fmt_rate(theirs, "n/a (no such truthound store)"),
                fmt_rate(ours),
                ratio_s,
                f">= {target:g}x",
                status,
                cpu_ratio_s,
            ]
        )

    print(
        table(
            rows,
            [
                "scenario",
                "truthound lifecycles/s",
                "ours lifecycles/s",
                "ratio",
                "target",
                "result",
                "CPU ratio (info)",
            ],
        )
    )
    print()
    for r in raw:
        for who in ("truthound", "ours"):
            res = r[who]
            if res and "error" not in res:
                extra = f", max_concurrent_jobs={res['max_concurrent_jobs']}" if "max_concurrent_jobs" in res else ""
                if res.get("replicas"):
                    extra += f", {res['replicas']} engine processes"
                print(
                    f"  {r['scenario']:<8} {who:<10} n={res['n']} (+{res['warmup']} warm-up) in "
                    f"{res['seconds']:.2f} s, {res['cpu_us_per_lifecycle']:.0f} us CPU/lifecycle, "
                    f"scheduler={res['scheduler']}{extra}"
                )
    print(
        f"  concurrency: gathered batches of 100 lifecycles for both engines; python {sys.version.split()[0]}; "
        f"best of {max(1, args.repeat)} run(s) per engine"
    )
    print(
        "  ratio = ours/truthound lifecycles per wall-clock second (the target); CPU ratio = truthound's "
        "CPU time per lifecycle / ours (less sensitive to other load on the machine)"
    )
    if args.json:
        print(json.dumps(raw, indent=2, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
