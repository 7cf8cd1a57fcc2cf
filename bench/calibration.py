"""Calibrated holistic energy against known truth, on replayed traces with a time-varying uncaptured term.

A machine model stands in for the hardware (this bench machine has no RAPL, GPU or wall meter; the numbers below are
the model's, stated here, not measured hardware): GPU idle 60 W, max 700 W (an H100 SXM's range); CPU package
25 W + span·u, where the span depends on what the cores run (prime-number integer work 70 W, FMA 95 W, a memory
copy 55 W, a training job's data loading and Python 65 W); DRAM 6 W + 4 W·u (the memory copy 6 + 16 W·u).
Uncaptured (what the meter sees beyond GPU + RAPL + DRAM) is time-varying and not linear: board 35 W; fans
6 W + 30 W·h², h = max(P_gpu / 700 W, u) (they ramp with heat); PSU losses P_dc·(1/η − 1) with
η = 0.94 − 0.12·(1 − x)², x = P_dc / 1600 W (a platinum supply's efficiency curve). The meter reads the truth with
0.2 % noise per reading (an LMG450 class meter's accuracy, roughly).

Calibration replays `jouled calibrate`'s phases (idle, cpu-prime at all and half the cores, cpu-fma, memory,
gpu-stress at 25/50/75/100 % duty, GPU stress with prime numbers on half and on all cores; 60 s each at 10 Hz; and
once more without the last two, to show what they are worth) through the model and fits them with the real code
(`jouled.quality.calibfit.fit_calibration`). The workload: 240 epochs of a training job replayed at 10 Hz, epoch
lengths 0.5 s to 5 min (log-uniform), GPU mean power 120–650 W per epoch with ±30 % bursts inside, CPU utilisation
0.05–0.9 with its own fluctuation. Per epoch: truth = the meter's energy; each correction's holistic energy from the
measured components (`holistic_window`): none (GPU + RAPL + DRAM), the static fallback (+11 %), the paper's static
correction with P_busy from each stress load, and the time-varying one; and CodeCarbon's view of the same epochs
(its TDP model of the CPU, 3 W per 8 GB of RAM) as it is and corrected both ways. Seeds fixed; three seeds reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from jouled.quality.calibfit import PhasePoint, fit_calibration, holistic_window
from jouled.quality.cccorrect import correct_codecarbon
from jouled.quality.compare import EpochWindow

RESULTS = Path(__file__).parent / "results" / "calibration.json"
HZ = 10.0
GPU_IDLE_W, GPU_MAX_W = 60.0, 700.0
PKG_IDLE_W = 25.0
SPAN_W = {"cpu-prime": 70.0, "cpu-fma": 95.0, "memory": 55.0, "training": 65.0, "idle": 65.0, "gpu-stress": 65.0}
METER_NOISE = 0.002


def dram_w(load: str, u: np.ndarray) -> np.ndarray:
    return 6.0 + (16.0 if load == "memory" else 4.0) * u


def uncaptured_w(gpu: np.ndarray, pkg: np.ndarray, dram: np.ndarray, u: np.ndarray) -> np.ndarray:
    heat = np.maximum(gpu / GPU_MAX_W, u)
    fans = 6.0 + 30.0 * heat**2
    dc = gpu + pkg + dram + 35.0 + fans
    x = np.clip(dc / 1600.0, 0, 1)
    eff = 0.94 - 0.12 * (1 - x) ** 2
    return 35.0 + fans + dc * (1 / eff - 1)


def machine(load: str, gpu: np.ndarray, u: np.ndarray) -> dict[str, np.ndarray]:
    pkg = PKG_IDLE_W + SPAN_W[load] * u
    dr = dram_w(load, u)
    unc = uncaptured_w(gpu, pkg, dr, u)
    return {"gpu": gpu, "pkg": pkg, "dram": dr, "wall": gpu + pkg + dr + unc}


def calibration_points(rng: np.random.Generator, phase_s: float = 60.0, combined: bool = True) -> list[PhasePoint]:
    n = int(phase_s * HZ)
    phases = [("calibrate:idle", "idle", 0.0, 0.02, 0.0), ("calibrate:cpu-prime", "cpu-prime", 1.0, 0.99, 0.0),
              ("calibrate:cpu-prime@50", "cpu-prime", 0.5, 0.50, 0.0), ("calibrate:cpu-fma", "cpu-fma", 1.0, 0.99, 0.0),
              ("calibrate:memory", "memory", 1.0, 0.97, 0.0)]
    phases += [(f"calibrate:gpu-stress@{round(d * 100)}", "gpu-stress", d, 0.06, d) for d in (0.25, 0.5, 0.75, 1.0)]
    if combined:
        phases += [("calibrate:gpu+cpu@50", "gpu+cpu", 1.0, 0.5, 1.0), ("calibrate:gpu+cpu", "gpu+cpu", 1.0, 0.97, 1.0)]
    pts = []
    for name, load, duty, u_mean, gduty in phases:
        u = np.clip(u_mean + rng.normal(0, 0.01, n), 0, 1)
        gpu = np.full(n, GPU_IDLE_W + gduty * (GPU_MAX_W - GPU_IDLE_W)) * (1 + rng.normal(0, 0.01, n))
        m = machine("cpu-prime" if load == "gpu+cpu" else load, gpu, u)
        wall = m["wall"] * (1 + rng.normal(0, METER_NOISE, n))
        pts.append(PhasePoint(name, load, duty, phase_s, float(u.mean()), float(gpu.mean()), float(m["pkg"].mean()),
                              float(m["dram"].mean()), float(wall.mean())))
    return pts


def workload(rng: np.random.Generator, epochs: int = 240) -> list[dict[str, Any]]:
    out = []
    for e in range(epochs):
        length_s = float(math.exp(rng.uniform(math.log(0.5), math.log(300.0))))
        n = max(5, int(length_s * HZ))
        t = np.arange(n) / HZ
        g_mean, u_mean = rng.uniform(120, 650), rng.uniform(0.05, 0.9)
        gpu = np.clip(g_mean * (1 + 0.3 * np.sin(2 * np.pi * t / rng.uniform(0.3, 3.0)) + rng.normal(0, 0.05, n)),
                      GPU_IDLE_W, GPU_MAX_W)
        u = np.clip(u_mean + 0.1 * np.sin(2 * np.pi * t / rng.uniform(1, 10)) + rng.normal(0, 0.05, n), 0, 1)
        m = machine("training", gpu, u)
        dt = 1.0 / HZ
        wall_j = float((m["wall"] * (1 + rng.normal(0, METER_NOISE, n))).sum() * dt)
        out.append({"epoch": e, "duration_s": n * dt, "gpu_j": float(gpu.sum() * dt), "cpu_j": float(m["pkg"].sum() * dt),
                    "dram_j": float(m["dram"].sum() * dt), "util": float(u.mean()), "wall_j": wall_j})
    return out


def errors(est: list[float], truth: list[float]) -> dict[str, float]:
    e = np.abs((np.array(est) - np.array(truth)) / np.array(truth)) * 100
    return {"max_pct": round(float(e.max()), 3), "mean_pct": round(float(e.mean()), 3),
            "p95_pct": round(float(np.percentile(e, 95)), 3)}


def one_seed(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    fit = fit_calibration(calibration_points(rng))
    epochs = workload(rng)
    # the same calibration without the CPU + GPU phases: the model then has no interaction term
    fit_apart = fit_calibration(calibration_points(np.random.default_rng(seed), combined=False))
    truth = [w["wall_j"] for w in epochs]
    res: dict[str, Any] = {"seed": seed, "fit": {
        "p_idle_w": round(float(fit.p_idle_w or 0), 2), "p_busy_w": round(float(fit.p_busy_w or 0), 2),
        "best_load_on_calibration_phases": fit.best_load,
        "busy_by_load_w": {k: round(v, 2) for k, v in fit.busy_by_load_w.items()},
        "model": None if fit.model is None else {"intercept_w": round(fit.model.intercept_w, 3),
                                                 "per_util_w": round(fit.model.per_util_w, 3),
                                                 "per_gpu_w": round(fit.model.per_gpu_w, 5),
                                                 "per_util_gpu_w": round(fit.model.per_util_gpu_w, 5)},
        "calibration_residuals_w": {r.phase: {"time_varying": round(r.time_varying_err_w, 2),
                                              "static": round(r.static_err_w, 2)} for r in fit.residuals}}}
    res["measured_only"] = errors([w["gpu_j"] + w["cpu_j"] + w["dram_j"] for w in epochs], truth)
    res["static_fallback"] = errors([holistic_window(None, w["duration_s"], w["gpu_j"], w["cpu_j"], w["dram_j"], None)
                                     .it_j for w in epochs], truth)
    res["time_varying"] = errors([holistic_window(fit, w["duration_s"], w["gpu_j"], w["cpu_j"], w["dram_j"], w["util"])
                                  .it_j for w in epochs], truth)
    res["time_varying_without_combined_phases"] = errors([holistic_window(fit_apart, w["duration_s"], w["gpu_j"],
                                                                          w["cpu_j"], w["dram_j"], w["util"]).it_j
                                                           for w in epochs], truth)
    res["time_varying_util_from_rapl"] = errors([holistic_window(fit, w["duration_s"], w["gpu_j"], w["cpu_j"],
                                                                 w["dram_j"], None).it_j for w in epochs], truth)
    static_by_load = {}
    for load, pb in fit.busy_by_load_w.items():
        f = _with_busy(fit, pb)
        static_by_load[load] = errors([holistic_window(f, w["duration_s"], w["gpu_j"], w["cpu_j"], w["dram_j"],
                                                       w["util"], correction="static").it_j for w in epochs], truth)
    res["static_by_load"] = static_by_load
    # CodeCarbon's view of the same epochs: its GPU figure from NVML (exact here), CPU by its TDP model at the
    # utilisation (TDP 125 W, idle 10 %: `[sources.estimate]`'s model) and RAM at 3 W per 8 GB (64 GB: 24 W); then
    # corrected with the calibration as `jouled compare --codecarbon` does
    cc = [w["gpu_j"] + (12.5 + 112.5 * w["util"]) * w["duration_s"] + 24.0 * w["duration_s"] for w in epochs]
    wins = [EpochWindow(w["epoch"], None, 0, round(w["duration_s"] * 1e9)) for w in epochs]
    corr = correct_codecarbon(wins, truth, cc, [w["gpu_j"] for w in epochs], [w["util"] for w in epochs], fit)
    res["codecarbon"] = {k: errors(v, truth) for k, v in corr.energy_j.items()}
    res["static"] = static_by_load[fit.best_load] if fit.best_load else None
    res["best_load_on_workload"] = min(static_by_load, key=lambda k: static_by_load[k]["max_pct"])
    # by epoch length: the short epochs are where the meter's noise and the bursts weigh most
    short = [i for i, w in enumerate(epochs) if w["duration_s"] < 5]
    res["time_varying_short_epochs_under_5s"] = errors(
        [holistic_window(fit, epochs[i]["duration_s"], epochs[i]["gpu_j"], epochs[i]["cpu_j"], epochs[i]["dram_j"],
                         epochs[i]["util"]).it_j for i in short], [truth[i] for i in short])
    res["epochs"], res["short_epochs"] = len(epochs), len(short)
    return res


def _with_busy(fit: Any, p_busy_w: float) -> Any:
    from dataclasses import replace

    return replace(fit, p_busy_w=p_busy_w)


def main() -> None:
    seeds = [one_seed(s) for s in (1, 2, 3)]
    summary = {
        "goal": "max per-epoch error of calibrated holistic energy <= 3 % (the paper: 6.6 % for corrected CodeCarbon)",
        "time_varying_max_pct": max(s["time_varying"]["max_pct"] for s in seeds),
        "time_varying_without_combined_phases_max_pct": max(s["time_varying_without_combined_phases"]["max_pct"]
                                                            for s in seeds),
        "time_varying_util_from_rapl_max_pct": max(s["time_varying_util_from_rapl"]["max_pct"] for s in seeds),
        "static_best_load_max_pct": max(s["static"]["max_pct"] for s in seeds if s["static"]),
        "measured_only_max_pct": max(s["measured_only"]["max_pct"] for s in seeds),
        "static_fallback_max_pct": max(s["static_fallback"]["max_pct"] for s in seeds),
        "codecarbon_max_pct": {k: max(s["codecarbon"][k]["max_pct"] for s in seeds) for k in seeds[0]["codecarbon"]},
        "best_load_by_calibration_phases": sorted({s["fit"]["best_load_on_calibration_phases"] for s in seeds}),
        "best_load_on_workload": sorted({s["best_load_on_workload"] for s in seeds}),
    }
    summary["goal_met"] = summary["time_varying_max_pct"] <= 3.0
    out = {"bench": "calibration", "what": __doc__.strip().split("\n\n")[0], "machine_model": "see bench/calibration.py",
           "summary": summary, "seeds": seeds}
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
