"""Benchmark: trace loading and a year of hourly policy decisions (what `nas simulate` pays per seed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from jouled.carbon.trace import load_trace
from jouled.scheduler.policies import make_policy

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "carbon"


def main() -> None:
    out: dict[str, object] = {}
    for name in ("electricitymaps/DE_2022_hourly.csv", "lets_wait_awhile_2020/ger_ci.csv"):
        t0 = time.perf_counter()
        tr = load_trace(DATA / name)
        out[f"load_trace_s[{name}]"] = round(time.perf_counter() - t0, 4)
        out[f"rows[{name}]"] = len(tr)
    tr = load_trace(DATA / "electricitymaps/DE_2022_hourly.csv")
    whole = tr  # a Trace is an IntensitySeries
    for spec in ("cenas", "oracle", "threshold:30", "forecast", "static:0.5", "random", "clean:50"):
        pol = make_policy(spec, 0)
        eval_gpu_h = 0
        t0 = time.perf_counter()
        for i in range(len(tr) - 24):
            now = float(tr.time_s[i])
            s = pol.decide(now, float(tr.intensity[i]), whole, whole, 8)
            eval_gpu_h += s.gpus_evaluation
        dt = time.perf_counter() - t0
        n = len(tr) - 24
        out[f"decide_us[{spec}]"] = round(dt / n * 1e6, 1)
        out[f"mean_eval_gpus[{spec}]"] = round(eval_gpu_h / n, 3)
    for k, v in out.items():
        print(f"{k:55s} {v}")
    res = REPO / "bench" / "results" / "carbon_policies.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps({"trace": "DE_2022_hourly.csv (direct)", "gpus": 8, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
