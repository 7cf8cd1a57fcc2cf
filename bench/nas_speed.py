"""Benchmark: simulator speed (every method x 10 seeds on a year-long trace) and LaMOO step time on all 15,625 cells.

Writes bench/results/nas_speed.json. Usage: .venv/bin/python bench/nas_speed.py [--jobs 2] [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from jouled.carbon.trace import load_trace
from jouled.scheduler.lamoo import LaMOO
from jouled.scheduler.simulator import ALL_METHODS, SimConfig, run_many, simulate
from jouled.scheduler.space import load_benchmark

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO.parent / "shared" / "data" / "carbon" / "electricitymaps" / "DE_2022_hourly.csv"


def lamoo_steps(bench_features: np.ndarray, objectives: np.ndarray) -> dict[str, Any]:
    """Refit time and ask/tell time at several sample counts, on the whole NB201 space."""
    out: dict[str, Any] = {}
    for n in (100, 1000, 5000, 15000):
        m = LaMOO(bench_features, seed=0)
        cells = np.random.default_rng(0).choice(len(bench_features), n, replace=False)
        m.tell(cells, objectives[cells])
        t0 = time.perf_counter()
        m._fit()  # a refit: k-means + SVMs on <= max_train samples, then route all 15,625 cells
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        k = 0
        for _ in range(50):
            got = m.ask(1)  # no refit: 50 new samples stay below the refit threshold from n >= 200
            if got:
                m.tell(got, objectives[got])
                k += 1
        step_s = (time.perf_counter() - t0) / max(k, 1)
        out[str(n)] = {
            "refit_ms": round(fit_s * 1e3, 2),
            "ask_tell_ms": round(step_s * 1e3, 3),
            "leaves": len(m.tree.leaves) if m.tree else 1,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    t0 = time.perf_counter()
    bench = load_benchmark()
    load_s = time.perf_counter() - t0
    tr = load_trace(TRACE)
    cfg = SimConfig()  # 8 GPUs, 168 h, hourly decisions
    res: dict[str, Any] = {
        "machine": platform.platform(), "cpus": os.cpu_count(), "jobs": args.jobs, "seeds": args.seeds,
        "trace": TRACE.name, "trace_hours": len(tr), "gpus": cfg.gpus, "hours_per_run": cfg.hours,
        "benchmark_load_s": round(load_s, 3),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],  # other work sharing the cores
    }
    t0 = time.perf_counter()
    runs = run_many(list(ALL_METHODS), tr, bench, list(range(args.seeds)), cfg, jobs=args.jobs)
    wall = time.perf_counter() - t0
    res["all_methods_x_seeds_wall_s"] = round(wall, 2)
    res["runs"] = sum(len(v) for v in runs.values())
    print(f"benchmark tables loaded in {load_s:.2f} s")
    print(f"{len(ALL_METHODS)} methods x {args.seeds} seeds x {cfg.hours:g} h on {TRACE.name} "
          f"({len(tr)} h trace), {args.jobs} worker(s): {wall:.1f} s wall (goal < 60 s)")
    per: dict[str, float] = {}
    for m in ALL_METHODS:  # one seed per method in this process, for a per-method cost
        t0 = time.perf_counter()
        simulate(m, tr, bench, 0, cfg)
        per[m] = round(time.perf_counter() - t0, 3)
    res["one_run_s"] = per
    print("one 168-h run, seconds:", per)
    year = SimConfig(hours=len(tr) - 1)
    t0 = time.perf_counter()
    r = simulate("cenas", tr, bench, 0, year)
    res["cenas_full_year_run_s"] = round(time.perf_counter() - t0, 2)
    res["cenas_full_year_evaluations"] = r.evaluations
    print(f"one cenas run over the whole year ({year.hours:g} h): {res['cenas_full_year_run_s']} s, "
          f"{r.evaluations} evaluations")
    steps = lamoo_steps(bench.features(), bench.true_objectives())
    res["lamoo_step"] = steps
    for n, s in steps.items():
        print(f"LaMOO with {n:>5s} samples over 15,625 cells: refit {s['refit_ms']} ms "
              f"({s['leaves']} leaves), ask+tell {s['ask_tell_ms']} ms")
    res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = REPO / "bench" / "results" / "nas_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
