"""Benchmark: the CE-NAS comparison table (every method, >= 10 seeds, 8 GPUs, 168 h) on recorded carbon traces.

Prints, per trace, the method table and CE-NAS vs vanilla LaMOO: carbon ratio (same 168 h), carbon
ratio to reach 99 % of vanilla's final HV, and HV difference — next to the paper's figures
(arXiv 2307.04131: 2.22-3.48x less carbon, 0.034 % HV difference). Writes bench/results/nas_compare.json.
Usage: .venv/bin/python bench/nas_compare.py [--seeds 10] [--jobs 2] [--hours 168]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from jouled.carbon.trace import load_trace
from jouled.scheduler.simulator import ALL_METHODS, RunResult, SimConfig, report, run_many
from jouled.scheduler.space import ENERGY_NAME, load_benchmark

REPO = Path(__file__).resolve().parents[1]
CARBON = REPO.parent / "shared" / "data" / "carbon" / "electricitymaps"
# one trace = one zone of 8 GPUs; "A+B" = two zones of 8 GPUs each (evaluation placed in the cleaner one)
TRACES = ("DE_2022_hourly.csv", "US-CAL-CISO_2022_hourly.csv", "DE_2022_hourly.csv+FR_2022_hourly.csv")
PAPER = {"carbon_ratio_vanilla_over_cenas": "2.22-3.48x", "hv_difference_pct": 0.034}


def paired(runs: dict[str, list[RunResult]], method: str) -> dict[str, Any]:
    """Per-seed ratios/differences of vanilla vs `method`, then mean ± std over seeds."""
    van = {r.seed: r for r in runs["vanilla"]}
    ratio, ratio99, hv_diff, hv_diff_eq = [], [], [], []
    reached = 0
    for r in runs[method]:
        v = van[r.seed]
        ratio.append(v.carbon_kg / r.carbon_kg)
        hv_diff.append((v.hv - r.hv) / v.hv * 100.0)
        # vanilla's HV when it had spent as much carbon as `method` spent in total
        hv_diff_eq.append((v.hv_at(v.time_at_carbon(r.carbon_kg)) - r.hv) / v.hv * 100.0)
        target = 0.99 * v.hv
        tm, tv = r.time_to_hv(target), v.time_to_hv(target)
        if math.isfinite(tm):
            reached += 1
            ratio99.append(v.carbon_at(tv) / r.carbon_at(tm))

    def ms(x: list[float]) -> dict[str, float | None]:
        if not x:
            return {"mean": None, "std": None}
        a = np.asarray(x)
        return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}

    return {
        "carbon_ratio_vanilla_over_method_same_hours": ms(ratio),
        "carbon_ratio_to_99pct_vanilla_hv": ms(ratio99),
        "seeds_reaching_99pct_vanilla_hv": reached,
        "hv_difference_pct_vanilla_minus_method": ms(hv_diff),
        "hv_difference_pct_at_equal_carbon": ms(hv_diff_eq),
    }


def fmt(s: dict[str, float | None], d: int = 2) -> str:
    return "—" if s["mean"] is None else f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--hours", type=float, default=168.0)
    args = ap.parse_args()
    bench = load_benchmark()
    cfg = SimConfig(gpus=8, hours=args.hours)  # GPUs per zone
    out: dict[str, Any] = {
        "settings": {
            "gpus": cfg.gpus, "hours": cfg.hours, "seeds": args.seeds, "methods": list(ALL_METHODS),
            "power_w": [cfg.sampling_power_w, cfg.evaluation_power_w, cfg.idle_power_w],
            "trace_column": "direct", "estimate": cfg.estimate, "energy_objective": ENERGY_NAME,
            "hv_ref_point": list(cfg.ref_point), "machine": platform.platform(), "jobs": args.jobs,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "paper": PAPER,
        "traces": {},
    }
    for name in TRACES:
        zones = [load_trace(CARBON / part) for part in name.split("+")]
        tr = zones[0] if len(zones) == 1 else zones
        t0 = time.perf_counter()
        runs = run_many(list(ALL_METHODS), tr, bench, list(range(args.seeds)), cfg, jobs=args.jobs)
        wall = time.perf_counter() - t0
        doc = report(runs, tr, cfg)
        comp = {m: paired(runs, m) for m in ALL_METHODS if m != "vanilla"}
        out["traces"][name] = {"wall_s": round(wall, 1), "methods": doc, "vs_vanilla": comp}
        print(f"\n== {name}  ({args.seeds} seeds x {len(ALL_METHODS)} methods, {wall:.1f} s)")
        print(f"{'method':10s} {'HV':>16s} {'carbon kg':>15s} {'energy kWh':>15s} {'evals':>12s} {'samples':>14s}")
        for d in doc:
            print(
                f"{d['method']:10s} {fmt(d['hv'], 1):>16s} {fmt(d['carbon_kg'], 1):>15s} {fmt(d['energy_kwh'], 1):>15s} "
                f"{fmt(d['evaluations'], 0):>12s} {fmt(d['samples'], 0):>14s}"
            )
        print(f"{'vs vanilla':10s} {'carbon ratio':>16s} {'ratio to 99%HV':>18s} {'HV diff %':>16s} {'HV diff % @eq C':>18s}")
        for m, c in comp.items():
            print(
                f"{m:10s} {fmt(c['carbon_ratio_vanilla_over_method_same_hours']):>16s} "
                f"{fmt(c['carbon_ratio_to_99pct_vanilla_hv']):>14s} ({c['seeds_reaching_99pct_vanilla_hv']:>2d}) "
                f"{fmt(c['hv_difference_pct_vanilla_minus_method'], 3):>16s} "
                f"{fmt(c['hv_difference_pct_at_equal_carbon'], 3):>18s}"
            )
        print(f"paper (CE-NAS vs vanilla LaMOO): carbon {PAPER['carbon_ratio_vanilla_over_cenas']} less, "
              f"HV difference {PAPER['hv_difference_pct']} %")
    res = REPO / "bench" / "results" / "nas_compare.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {res}")


if __name__ == "__main__":
    main()
