"""Dispatch overhead of the search executors: submit → worker start → result for a no-op job, LocalExecutor vs Ray.

Prints p50/p99 (ms) of submit→start (worker clock), start→result seen by the driver, and the
round trip, and writes bench/results/executor_dispatch.json. Each executor gets 2 CPU slots;
jobs go one at a time (no queueing), after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from jouled.scheduler.executors import LocalExecutor, RayExecutor
from jouled.scheduler.workers import NoopJob

RESULTS = Path(__file__).resolve().parent / "results" / "executor_dispatch.json"


def _pct(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "n": len(ms)}


def measure(ex: Any, jobs: int, warmup: int) -> dict[str, Any]:
    to_start: list[float] = []
    to_result: list[float] = []
    round_trip: list[float] = []
    for i in range(warmup + jobs):
        slot = ex.slots[i % len(ex.slots)]
        t0 = time.time()
        ev = ex.wait(ex.submit(NoopJob(), slot), 60)
        t1 = time.time()
        if ev.kind != "done" or ev.result is None:
            raise RuntimeError(f"no-op job failed: {ev}")
        if i >= warmup:
            to_start.append((ev.result.started_at_s - t0) * 1e3)
            to_result.append((t1 - ev.result.started_at_s) * 1e3)
            round_trip.append((t1 - t0) * 1e3)
    return {"submit_to_start": _pct(to_start), "start_to_result": _pct(to_result), "round_trip": _pct(round_trip)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    doc: dict[str, Any] = {"jobs": a.jobs, "warmup": a.warmup, "slots": ["cpu0", "cpu1"], "machine": platform.node(),
                           "python": platform.python_version(), "executors": {}}
    for name in ("local", "ray"):
        t = time.monotonic()
        ex: Any = LocalExecutor(["cpu0", "cpu1"]) if name == "local" else RayExecutor(["cpu0", "cpu1"], num_cpus=2)
        start_s = time.monotonic() - t
        try:
            res = measure(ex, a.jobs, a.warmup)
        finally:
            ex.shutdown()
        res["startup_s"] = start_s
        doc["executors"][name] = res
        print(f"{name:5s}: startup {start_s:.2f} s; round trip p50 {res['round_trip']['p50_ms']:.2f} ms, "
              f"p99 {res['round_trip']['p99_ms']:.2f} ms; submit→start p50 {res['submit_to_start']['p50_ms']:.2f} ms, "
              f"start→result p50 {res['start_to_result']['p50_ms']:.2f} ms")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
