"""Every benchmark of the release in one command, one table (what ``make bench`` runs).

Run with our venv's python (``.venv/bin/python bench/all.py``). In order:

1. **Lifecycles against truthound 3.2.0** per store (memory with the instant and the 50 ms
   handler; SQLite and Redis with the instant one): truthound and ours alternate ``--repeat``
   times in the same run; the rates shown are medians, the ratio is the median of the paired
   runs' ratios, and CPU time per lifecycle (each process's own) is shown beside them: on a shared
   machine it moves far less than wall-clock rates.
2. **PostgreSQL and MySQL**, ours only (truthound has no such store): one engine process and
   three sharing the database, alternating; the PostgreSQL targets are 600 lifecycles/s across
   three and three at least 1.5x one.
3. **Scale of data** (``bench/scale.py``): each query at ``--scale-n`` records per store.
4. **Timer lateness** (``bench/timers.py``): p50/p99/max per store and scheduler.

    .venv/bin/python bench/all.py                  # everything (about 15-25 min on 2 cores)
    .venv/bin/python bench/all.py --quick          # a smoke run of every part (a few minutes)
    .venv/bin/python bench/all.py --only lifecycles --repeat 5

Exits 1 when a judged target fails or a part errors. Servers: see ``bench/README.md``
(``ESCALATION_BENCH_POSTGRES_URL`` etc.; the bench databases must be dedicated to it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import run as lifecycles  # noqa: E402  - bench/run.py: run_one, ensure_bench_venv, BENCH_PY

PARTS = ("lifecycles", "servers", "scale", "timers")
# (store, handler, target ratio ours/truthound)
VERSUS = [
    ("memory", "instant", 2.0),
    ("memory", "50ms", 50.0),
    ("sqlite", "instant", 8.0),
    ("redis", "instant", 3.5),
]
POSTGRES_TARGET = 600.0  # lifecycles/s across three processes
SCALE_TARGET = 1.5  # three processes against one


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "error" not in r]


def _rate(runs: list[dict]) -> str:
    ok = _ok(runs)
    if not ok:
        return f"error: {runs[-1]['error']}" if runs else "n/a"
    return f"{_median([r['lifecycles_per_s'] for r in ok]):,.0f}"


def _cpu(runs: list[dict]) -> str:
    ok = _ok(runs)
    return f"{_median([r['cpu_us_per_lifecycle'] for r in ok]):,.0f}" if ok else "-"


def _spread(runs: list[dict]) -> str:
    ok = _ok(runs)
    if len(ok) < 2:
        return ""
    rates = [r["lifecycles_per_s"] for r in ok]
    return f" ({min(rates):,.0f}-{max(rates):,.0f})"


def versus(repeat: int, quick: bool) -> tuple[list[list[str]], list[dict], bool]:
    rows, raw, failed = [], [], False
    for store, handler, target in VERSUS:
        lifecycles.ensure_bench_venv(store)
        theirs, ours, ratios = [], [], []
        for _ in range(repeat):
            t = lifecycles.run_one(lifecycles.BENCH_PY, "truthound_lifecycles.py", handler, store, quick)
            o = lifecycles.run_one(sys.executable, "ours_lifecycles.py", handler, store, quick)
            theirs.append(t)
            ours.append(o)
            if "error" not in t and "error" not in o:
                ratios.append(o["lifecycles_per_s"] / t["lifecycles_per_s"])
        ratio = _median(ratios)
        ok = ratio is not None and ratio >= target
        failed |= not ok
        cpu_ratio = _median(
            [
                t["cpu_us_per_lifecycle"] / o["cpu_us_per_lifecycle"]
                for t, o in zip(theirs, ours)
                if _ok([t, o]) == [t, o]
            ]
        )
        rows.append(
            [
                f"lifecycles, {store}, {handler} handler",
                _rate(ours) + _spread(ours),
                _rate(theirs) + _spread(theirs),
                f"{ratio:.2f}x" if ratio is not None else "n/a",
                f">= {target:g}x",
                "PASS" if ok else "FAIL",
                f"{_cpu(ours)} / {_cpu(theirs)}" + (f" ({cpu_ratio:.2f}x)" if cpu_ratio else ""),
            ]
        )
        raw.append({"store": store, "handler": handler, "ours": ours, "truthound": theirs, "ratios": ratios})
    return rows, raw, failed


def servers(repeat: int, quick: bool) -> tuple[list[list[str]], list[dict], bool]:
    rows, raw, failed = [], [], False
    for store in ("postgres", "mysql"):
        one, three = [], []
        for _ in range(repeat):
            one.append(
                lifecycles.run_one(sys.executable, "ours_lifecycles.py", "instant", store, quick, _n(store, quick))
            )
            three.append(
                lifecycles.run_one(
                    sys.executable,
                    "ours_lifecycles.py",
                    "instant",
                    store,
                    quick,
                    (*_n(store, quick), "--replicas", "3"),
                )
            )
        pairs = [(a, b) for a, b in zip(one, three) if "error" not in a and "error" not in b]
        scale = _median([b["lifecycles_per_s"] / a["lifecycles_per_s"] for a, b in pairs])
        rate3 = _median([r["lifecycles_per_s"] for r in _ok(three)])
        judged = store == "postgres"
        ok = rate3 is not None and scale is not None and rate3 >= POSTGRES_TARGET and scale >= SCALE_TARGET
        failed |= judged and not ok
        rows.append(
            [
                f"lifecycles, {store}, 1 process",
                _rate(one) + _spread(one),
                "n/a (no such store)",
                "",
                "",
                "",
                f"{_cpu(one)} / -",
            ]
        )
        rows.append(
            [
                f"lifecycles, {store}, 3 processes",
                _rate(three) + _spread(three),
                "n/a (no such store)",
                f"{scale:.2f}x one" if scale is not None else "n/a",
                f">= {POSTGRES_TARGET:g}/s, >= {SCALE_TARGET:g}x one" if judged else "(beside)",
                ("PASS" if ok else "FAIL") if judged else "",
                f"{_cpu(three)} / -",
            ]
        )
        raw.append({"store": store, "one": one, "three": three})
    return rows, raw, failed


def _n(store: str, quick: bool) -> tuple[str, ...]:
    if quick:
        return ()
    return ("--n", "3000") if store == "postgres" else ("--n", "1000")


def _json_line(cmd: list[str], timeout: float) -> tuple[dict | None, str]:
    print(
        f"[bench] {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return None, (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(lines[-1]), ""


def scale(n: int) -> tuple[list[list[str]], dict | None, bool]:
    result, error = _json_line([sys.executable, os.path.join(HERE, "scale.py"), "--n", str(n), "--json"], 7200)
    if result is None:
        return [["scale of data", f"error: {error}", "", "", "", "FAIL", ""]], None, True
    rows, failed = [], False

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.1f} ms"

    for r in result["scale"]:
        name = f"{n:,} records, {r['backend']}"
        if "error" in r:
            rows.append([name, f"unavailable: {r['error']}", "", "", "", "", ""])
            continue
        rows.append(
            [
                name,
                f"due sweep {ms(r['claim_due'] + r['next_due_at'])}; count_active {ms(r['count_active'])}; "
                f"list page {ms(r['list_records'])}; stats {ms(r['get_stats'])} (2 Dags {ms(r['get_stats_dags'])}); "
                f"get_active {ms(r['get_active'])} ({ms(r['get_active_bare'])} without histories, "
                f"{r['active_n']:,} records)",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    return rows, result, failed


def timers(quick: bool) -> tuple[list[list[str]], dict | None, bool]:
    cmd = [sys.executable, os.path.join(HERE, "timers.py")] + (["--quick"] if quick else [])
    result, error = _json_line(cmd, 3600)
    if result is None:
        return [["timer lateness", f"error: {error}", "", "", "", "FAIL", ""]], None, True
    rows, failed = [], False
    for r in result["timers"]:
        name = f"timers, {r['store']} + {r['scheduler']}"
        if "error" in r:
            rows.append([name, f"error: {r['error']}", "", "", "", "FAIL", ""])
            failed = True
            continue
        p99_target = {"memory": 100.0, "sqlite": 250.0}[r["store"]]
        ok = r["p99_ms"] < p99_target and r["max_ms"] < 1000.0
        judged = not quick
        failed |= judged and not ok
        rows.append(
            [
                name,
                f"p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} / max {r['max_ms']:.1f} ms",
                "",
                "",
                f"p99 < {p99_target:g}, max < 1,000 ms",
                ("PASS" if ok else "FAIL") if judged else "(not judged)",
                f"{r['cpu_s']:.1f} CPU s",
            ]
        )
    return rows, result, failed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: smaller N everywhere, nothing judged on speed")
    p.add_argument("--repeat", type=int, default=3, help="alternating runs per comparison (medians; default 3)")
    p.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    p.add_argument("--scale-n", type=int, default=None, help="records per store for the scale part (100,000)")
    p.add_argument("--json", action="store_true", help="also print every raw result as one JSON line")
    args = p.parse_args()
    parts = args.only or list(PARTS)
    scale_n = args.scale_n or (5_000 if args.quick else 100_000)
    repeat = 1 if args.quick else max(1, args.repeat)

    started, load0 = time.time(), os.getloadavg()[0]
    rows: list[list[str]] = []
    raw: dict = {}
    failed = False
    for part in parts:
        if part == "lifecycles":
            got, raw[part], bad = versus(repeat, args.quick)
        elif part == "servers":
            got, raw[part], bad = servers(repeat, args.quick)
        elif part == "scale":
            got, raw[part], bad = scale(scale_n)
        else:
            got, raw[part], bad = timers(args.quick)
        rows += got
        failed |= bad and not args.quick

    header = ["measure", "ours", "truthound", "ratio", "target", "result", "CPU us/lifecycle ours / theirs"]
    print(lifecycles.table(rows, header))
    print(
        f"\n  {repeat} alternating run(s) per comparison, medians (range in brackets); ratio = median of the "
        f"paired runs' ratios; CPU = each process's own CPU time per lifecycle (engine processes summed); "
        f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"{(time.time() - started) / 60:.1f} min; python {sys.version.split()[0]}"
    )
    if args.json:
        print(json.dumps(raw))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
