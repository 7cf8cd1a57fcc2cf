"""`jouled compare`: per-epoch energy of every tool that measured the same thing, and each one's error (pure, no I/O).

Tools and what they measure (the group decides the truth each is held against):
- group `gpu` (the run's GPUs, summed): `nvml-counter` (NVML's energy counter), `nvml-power` (the integral of the
  instant power readings), `nvml-avg` (the integral of NVML's averaged power, the `power_avg_w` extra), `smi`
  (nvidia-smi's power integral), `codecarbon-gpu` (CodeCarbon's gpu_energy). Truth: `nvml-counter` (else
  `nvml-power`).
- group `cpu`: `rapl` (packages + DRAM), `codecarbon-cpu` (cpu_energy + ram_energy). Truth: `rapl`.
- group `host` (the whole machine): `wall` (a wall meter), `jouled` (the run's total: GPUs + CPU packages + DRAM,
  as `jouled energy runs` adds them), `codecarbon` (energy_consumed). Truth: `wall`.
A software tool's GPU figure is never held against the wall meter: they do not measure the same thing (the gap is
the uncaptured power `jouled calibrate` models). The wall meter is the best truth for the host; without one, the
NVML counter is the best truth there is and the host group has no errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from jouled.energy import F_EDGE, F_NO_SAMPLES, SeriesArrays, window_energy_many
from jouled.quality.assess import pearson
from jouled.series import COARSE_UPDATES, SeriesMeta, meta_or_default

BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("< 0.5 s", 0.0, 0.5), ("0.5–1 s", 0.5, 1.0), ("1–5 s", 1.0, 5.0), ("5–30 s", 5.0, 30.0), ("30 s+", 30.0, math.inf),
)
GROUPS: dict[str, tuple[str, ...]] = {
    "gpu": ("nvml-counter", "nvml-power", "nvml-avg", "smi", "codecarbon-gpu"),
    "cpu": ("rapl", "codecarbon-cpu"),
    "host": ("wall", "jouled", "codecarbon"),
}
TRUTH_ORDER: dict[str, tuple[str, ...]] = {"gpu": ("nvml-counter", "nvml-power"), "cpu": ("rapl",), "host": ("wall",)}
TOOL_GROUP = {t: g for g, ts in GROUPS.items() for t in ts}
NAN = float("nan")


@dataclass(frozen=True)
class EpochWindow:
    epoch: int | None
    phase: str | None
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) * 1e-9


@dataclass(frozen=True)
class Interval:
    """Energy a tool reported for [start, end] (CodeCarbon's rows), spread evenly over it."""

    start_ns: int
    end_ns: int
    energy_j: float


@dataclass
class Comparison:
    """Per-epoch energy by tool, the truth of each group, and the error of each tool by epoch length bucket."""

    windows: list[EpochWindow]
    energy_j: dict[str, list[float]]  # tool → per window (NaN: none)
    truth: dict[str, str]  # group → the tool taken as truth
    buckets: list[dict[str, Any]] = field(default_factory=list)
    # tool → per window: its figure covers only part of the window (the data stops short of an edge, or none inside)
    partial: dict[str, list[bool]] = field(default_factory=dict)
    # tool → the epoch length below which its figure is coarse (a counter the device updates only every so often:
    # NVML on an H200 every 100 ms, so 2 s): errors against such a truth in shorter epochs are partly the truth's own
    coarse_below_s: dict[str, float] = field(default_factory=dict)

    def error_pct(self, tool: str) -> list[float]:
        """Per window: 100 × (tool − truth) / truth (NaN where either is missing or the truth is 0)."""
        t = self.truth.get(TOOL_GROUP[tool])
        if t is None or t == tool:
            return [NAN] * len(self.windows)
        return [100.0 * (a - b) / b if math.isfinite(a) and math.isfinite(b) and b != 0 else NAN
                for a, b in zip(self.energy_j[tool], self.energy_j[t], strict=True)]

    def to_dict(self) -> dict[str, Any]:
        tools = list(self.energy_j)
        errs = {t: self.error_pct(t) for t in tools}
        return {
            "truth": dict(self.truth),
            "tools": [{"tool": t, "group": TOOL_GROUP[t], "truth": self.truth.get(TOOL_GROUP[t])} for t in tools],
            "epochs": [
                {"epoch": w.epoch, "phase": w.phase, "start_ns": w.start_ns, "end_ns": w.end_ns,
                 "duration_s": round(w.duration_s, 9), "bucket": bucket_of(w.duration_s),
                 "energy_j": {t: _num(self.energy_j[t][i]) for t in tools},
                 "error_pct": {t: _num(errs[t][i]) for t in tools if self.truth.get(TOOL_GROUP[t]) not in (None, t)},
                 "partial": [t for t in tools if self.partial.get(t, [False] * (i + 1))[i]]}
                for i, w in enumerate(self.windows)
            ],
            "buckets": self.buckets,
            "coarse_below_s": dict(self.coarse_below_s),
        }


def _num(v: float, nd: int = 6) -> float | None:
    return None if not math.isfinite(v) else round(float(v), nd)


def bucket_of(duration_s: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= duration_s < hi:
            return name
    return BUCKETS[-1][0]


FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Part = tuple[FloatArray, BoolArray]  # per window: energy, and whether it covers only part of the window


def _energies(s: SeriesArrays, windows: Sequence[EpochWindow], *, use: str) -> Part:
    """Per window energy of one series from one field only: `counter`, `power`, or `any` (the energy core's choice)."""
    nan = np.full(s.time_ns.shape, np.nan)
    p = s.power_w if use in ("power", "any") else nan
    e = s.energy_j if use in ("counter", "any") else nan
    only = SeriesArrays(s.time_ns, p, e, s.source, s.device, s.period_s, s.estimated, s.counter_period_s, s.meta)
    if not bool(np.isfinite(p).any() | np.isfinite(e).any()):
        return np.full(len(windows), np.nan), np.ones(len(windows), dtype=bool)
    b = window_energy_many(only, [w.start_ns for w in windows], [w.end_ns for w in windows])
    return b.energy_j, (b.flags & (F_EDGE | F_NO_SAMPLES)) != 0


def _sum(parts: list[Part], n: int) -> tuple[list[float], list[bool]]:
    """Element-wise sum; NaN where any part is NaN (a tool that missed a device has no figure, not a low one);
    partial where any part is."""
    if not parts:
        return [NAN] * n, [True] * n
    e = np.sum(np.vstack([p[0] for p in parts]), axis=0)
    partial = np.any(np.vstack([p[1] for p in parts]), axis=0)
    return [float(v) for v in e], [bool(x) for x in partial]


def interval_energy(intervals: Sequence[Interval], windows: Sequence[EpochWindow]) -> list[float]:
    """Energy of each window from intervals spread evenly over their span (NaN where no interval overlaps)."""
    return _interval_part(intervals, windows)[0]


def _interval_part(intervals: Sequence[Interval], windows: Sequence[EpochWindow]) -> tuple[list[float], list[bool]]:
    """interval_energy, and whether the intervals cover less than the whole window."""
    out, partial = [], []
    for w in windows:
        tot, hit, covered = 0.0, False, 0
        for iv in intervals:
            lo, hi = max(iv.start_ns, w.start_ns), min(iv.end_ns, w.end_ns)
            if hi > lo and iv.end_ns > iv.start_ns:
                tot += iv.energy_j * (hi - lo) / (iv.end_ns - iv.start_ns)
                hit = True
                covered += hi - lo
        out.append(tot if hit else NAN)
        partial.append(covered < w.end_ns - w.start_ns)
    return out, partial


def compare(
    windows: Sequence[EpochWindow],
    series: Mapping[tuple[str, str], SeriesArrays],
    *,
    avg_power: Mapping[tuple[str, str], SeriesArrays] | None = None,
    gpus: Sequence[str] = (),
    codecarbon: Mapping[str, Sequence[Interval]] | None = None,
) -> Comparison:
    """Per-epoch energy of every tool present, the truth of each group, and errors by epoch length bucket.

    `series`: the run's series (with their metadata); `avg_power`: per NVML series, its `power_avg_w` extra as the
    power field; `gpus`: the physical GPUs of the run (empty: every GPU); `codecarbon`: `gpu`, `cpu`, `total`
    intervals read from CodeCarbon's emissions.csv.
    """
    n = len(windows)
    metas: dict[tuple[str, str], SeriesMeta] = {k: meta_or_default(s.meta, *k) for k, s in series.items()}
    want = set(gpus)
    got: dict[str, tuple[list[float], list[bool]]] = {}

    def gpu_series(source: str) -> list[SeriesArrays]:
        return [s for k, s in sorted(series.items()) if k[0] == source and metas[k].role == "gpu"
                and (not want or metas[k].for_device(k[1]) in want)]

    nvml = gpu_series("nvml")
    if nvml and all(bool(np.isfinite(s.energy_j).any()) for s in nvml):
        got["nvml-counter"] = _sum([_energies(s, windows, use="counter") for s in nvml], n)
    if nvml and all(bool(np.isfinite(s.power_w).any()) for s in nvml):
        got["nvml-power"] = _sum([_energies(s, windows, use="power") for s in nvml], n)
    avg = [avg_power[(s.source, s.device)] for s in nvml if avg_power and (s.source, s.device) in avg_power]
    if nvml and len(avg) == len(nvml):
        got["nvml-avg"] = _sum([_energies(s, windows, use="power") for s in avg], n)
    smi = gpu_series("smi")
    if smi:
        got["smi"] = _sum([_energies(s, windows, use="any") for s in smi], n)
    cc = codecarbon or {}
    if cc.get("gpu"):
        got["codecarbon-gpu"] = _interval_part(cc["gpu"], windows)
    cpu = [s for k, s in sorted(series.items()) if metas[k].role in ("package", "dram") and not metas[k].estimated]
    if cpu:
        got["rapl"] = _sum([_energies(s, windows, use="any") for s in cpu], n)
    if cc.get("cpu"):
        got["codecarbon-cpu"] = _interval_part(cc["cpu"], windows)
    wall = [s for k, s in sorted(series.items()) if metas[k].role == "wall"]
    if wall:
        got["wall"] = _sum([_energies(wall[0], windows, use="any")], n)
    gpu_best = next((got[t] for t in ("nvml-counter", "nvml-power", "smi") if t in got), None)
    if gpu_best is not None or cpu:
        parts: list[Part] = [(np.array(v[0]), np.array(v[1], dtype=bool)) for v in (gpu_best, got.get("rapl"))
                             if v is not None]
        got["jouled"] = _sum(parts, n)
    if cc.get("total"):
        got["codecarbon"] = _interval_part(cc["total"], windows)
    order = [t for g in GROUPS.values() for t in g]
    tools = {t: got[t][0] for t in order if t in got}
    truth = {g: next(t for t in TRUTH_ORDER[g] if t in tools) for g in GROUPS if any(t in tools for t in TRUTH_ORDER[g])}
    c = Comparison(list(windows), tools, truth, partial={t: got[t][1] for t in tools})
    updates = [metas[(s.source, s.device)].counter_update_s or 0.0 for s in nvml]
    if "nvml-counter" in tools and max(updates, default=0.0) > 0:
        c.coarse_below_s["nvml-counter"] = COARSE_UPDATES * max(updates)
    c.buckets = bucket_stats(c)
    return c


def bucket_stats(c: Comparison) -> list[dict[str, Any]]:
    """Per epoch-length bucket and tool (against its group's truth): epochs, mean and max |error| %, Pearson's r."""
    out = []
    names = [bucket_of(w.duration_s) for w in c.windows]
    for bucket, _lo, _hi in BUCKETS:
        idx = [i for i, b in enumerate(names) if b == bucket]
        if not idx:
            continue
        for tool in c.energy_j:
            t = c.truth.get(TOOL_GROUP[tool])
            if t is None or t == tool:
                continue
            err = c.error_pct(tool)
            e = [abs(err[i]) for i in idx if math.isfinite(err[i])]
            r = pearson([c.energy_j[tool][i] for i in idx], [c.energy_j[t][i] for i in idx])
            coarse_s = c.coarse_below_s.get(t, 0.0)
            out.append({
                "bucket": bucket, "tool": tool, "truth": t, "epochs": len(e),
                # epochs in which the truth itself is coarse: their errors are partly the truth's
                "truth_coarse_epochs": sum(1 for i in idx if c.windows[i].duration_s < coarse_s),
                "mean_abs_error_pct": _num(float(np.mean(e)), 4) if e else None,
                "max_abs_error_pct": _num(max(e), 4) if e else None,
                "pearson": None if r is None else round(r, 4),
            })
    return out
