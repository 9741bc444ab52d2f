"""What both lifecycle benchmarks share, so that both engines are driven identically.

Standard library only: it is imported by ``truthound_lifecycles.py`` (in ``.bench-venv``) and by
``ours_lifecycles.py`` (in ``.venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import sys
import time
from typing import Awaitable, Callable

# Concurrency shape: lifecycles run in batches of BATCH, each batch gathered concurrently.
BATCH = 100

# The policy both engines run: two levels, level 1 one user paged at once, level 2 one user
# after 15 minutes (never reached: every lifecycle is acknowledged and resolved well before).
POLICY_NAME = "bench-critical"
L1_USER = "oncall-primary"
L2_USER = "oncall-secondary"
L2_DELAY_MINUTES = 15
SEVERITY_FILTER = ["critical"]
CONTEXT = {"severity": "critical"}

HANDLER_DELAYS = {"instant": 0.0, "50ms": 0.05}


def parse_args(description: str, defaults: dict[str, dict[str, int]], stores: list[str]) -> argparse.Namespace:
    """``defaults[kind][handler]`` is N when ``--n`` is not given, kind being ``memory`` or
    ``durable``, prefixed ``quick-`` under ``--quick``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--handler",
        choices=sorted(HANDLER_DELAYS),
        required=True,
        help="instant: async handler returning True; 50ms: awaits asyncio.sleep(0.05)",
    )
    p.add_argument("--n", type=int, default=None, help=f"lifecycles to time (default: {defaults})")
    p.add_argument("--quick", action="store_true", help="smaller default N (smoke run)")
    p.add_argument("--store", choices=stores, default="memory")
    p.add_argument(
        "--warmup", type=int, default=None, help=f"untimed lifecycles first (default: {BATCH} for instant, 0 for 50ms)"
    )
    args = p.parse_args()
    if args.n is None:
        kind = ("quick-" if args.quick else "") + ("memory" if args.store == "memory" else "durable")
        args.n = defaults[kind][args.handler]
    if args.warmup is None:
        args.warmup = BATCH if args.handler == "instant" else 0
    return args


async def run_batches(lifecycle: Callable[[int], Awaitable[None]], start: int, n: int) -> None:
    """Run lifecycles ``start .. start+n-1`` in gathered batches of ``BATCH``."""
    i = start
    end = start + n
    while i < end:
        size = min(BATCH, end - i)
        await asyncio.gather(*(lifecycle(j) for j in range(i, i + size)))
        i += size


class Timer:
    def __enter__(self) -> "Timer":
        gc.collect()
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def emit(result: dict) -> None:
    result.setdefault("python", platform.python_version())
    result.setdefault("batch", BATCH)
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def figures(n: int, timer: Timer) -> dict:
    return {
        "n": n,
        "seconds": round(timer.wall, 4),
        "cpu_seconds": round(timer.cpu, 4),
        "lifecycles_per_s": round(n / timer.wall, 1) if timer.wall > 0 else None,
        "cpu_us_per_lifecycle": round(timer.cpu / n * 1e6, 1) if n else None,
    }
