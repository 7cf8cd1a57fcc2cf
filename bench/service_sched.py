"""Benchmark the unit's scheduling choice: sampling jitter and missed ticks under a CPU-saturating "trainer".

The daemon (bench/sampler.py's run_once: 8 shim GPUs + 2 RAPL domains, real sampler threads, asyncio loop and
SQLite log) runs in a child process under each candidate of the unit's `Nice=`/`CPUSchedulingPolicy=`, while one
busy process per core at nice 0 (a data loader keeping every core busy) competes with it. The hogs count their
loop iterations: how much of the machine the "trainer" kept. Conditions run in a rotating order, twice.

    .venv/bin/python bench/service_sched.py [--seconds 15] [--rate 100]  ->  bench/results/service_sched.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results" / "service_sched.json"
POLICIES = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}
CONDITIONS = [("other", 0), ("other", 5), ("batch", 5), ("idle", 0)]
BASE_NICE = 10


def _hog(stop: Any, counter: Any) -> None:
    n = 0
    while not stop.is_set():
        for _ in range(10000):
            n += 1
        with counter.get_lock():
            counter.value += 10000


def _daemon(policy: str, nice: int, rate_hz: float, seconds: float, out: Any) -> None:
    os.sched_setscheduler(0, POLICIES[policy], os.sched_param(0))
    os.nice(nice)
    from bench.sampler import run_once

    out.put(run_once(rate_hz, seconds, 8, 2, False))


def measure(policy: str, nice: int, rate_hz: float, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    stop, counter, q = ctx.Event(), ctx.Value("q", 0), ctx.Queue()
    hogs = [ctx.Process(target=_hog, args=(stop, counter), daemon=True) for _ in range(os.cpu_count() or 1)]
    for h in hogs:
        h.start()
    time.sleep(0.5)
    c0, t0 = counter.value, time.monotonic()
    d = ctx.Process(target=_daemon, args=(policy, nice, rate_hz, seconds, q))
    d.start()
    res = q.get(timeout=seconds + 120)
    d.join()
    c1, t1 = counter.value, time.monotonic()
    stop.set()
    for h in hogs:
        h.join(5)
    per = {name: s for name, s in res["sources"].items()}
    return {
        "policy": policy, "nice": nice, "rate_hz": rate_hz, "seconds": seconds,
        "sources": per,
        "daemon_cpu_pct_of_one_core": res["cpu_pct_of_one_core"],
        "trainer_loops_per_s_millions": round((c1 - c0) / (t1 - t0) / 1e6, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--conditions", default=",".join(f"{p}/{n}" for p, n in CONDITIONS), help="e.g. other/0,other/5")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    conditions = [(c.split("/")[0], int(c.split("/")[1])) for c in a.conditions.split(",")]
    # everything one step back (hogs and daemon alike, their difference kept): the machine is shared, and the
    # comparison is between the daemon and the hogs, not with anyone else's work
    os.nice(BASE_NICE)
    runs = []
    for rep in range(a.reps):
        order = conditions[rep % len(conditions):] + conditions[:rep % len(conditions)]
        for policy, nice in order:
            r = measure(policy, nice, a.rate, a.seconds)
            print(json.dumps(r), flush=True)
            runs.append(r)
    summary = {}
    for policy, nice in conditions:
        rs = [r for r in runs if (r["policy"], r["nice"]) == (policy, nice)]
        nvml = [r["sources"]["nvml"] for r in rs]
        summary[f"{policy}/nice{nice}"] = {
            "nvml_jitter_p99_ms_max": max(s["jitter_p99_ms"] for s in nvml),
            "nvml_jitter_p50_ms_max": max(s["jitter_p50_ms"] for s in nvml),
            "nvml_missed_total": sum(s["missed"] for s in nvml),
            "nvml_delivered_ratio_min": min(s["delivered_ratio"] for s in nvml),
            "trainer_loops_per_s_millions_mean": round(sum(r["trainer_loops_per_s_millions"] for r in rs) / len(rs), 3),
        }
    out = {
        "setup": f"8 shim GPUs + 2 RAPL domains at {a.rate:g} Hz for {a.seconds:g} s per run, "
                 f"{os.cpu_count()} busy processes (one per core); nice values relative to theirs (all started at nice "
                 f"{BASE_NICE}: a shared machine); conditions rotated, x{a.reps}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "summary": summary,
        "runs": runs,
    }
    a.out.parent.mkdir(exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
