"""CodeCarbon corrected with a calibration (pure): its intervals aligned with jouled's markers, its CPU + RAM estimate
replaced by the calibrated machine, per-epoch and maximum error of each against the wall meter.

Alignment: CodeCarbon stamps its rows in whole seconds of local time, so its intervals can sit up to a second (plus
any clock offset) away from the epochs they measured. When the tracker was flushed (or a task stopped) at epoch ends,
its interval ends should fall on epoch edges: `align_offset_ns` picks the one shift, within ±`max_shift_ns`, that puts
the interval ends closest to the nearest epoch edges (starts and ends).

Corrections (arXiv 2505.15631 and its open question):
- `static` (the paper's): CodeCarbon's GPU energy + ∫ P_idle + (P_busy − P_idle)·u dt — the calibrated whole machine
  without GPUs at the measured CPU utilisation replaces CodeCarbon's CPU and RAM figures (TDP and 3 W per 8 GB);
- `time-varying`: CodeCarbon's GPU energy + the calibrated CPU line (RAPL idle/busy at u) + the uncaptured model
  (utilisation, GPU power and their interaction), i.e. `holistic_window` with CodeCarbon's GPU figure.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .calibfit import Fit, holistic_window
from .compare import EpochWindow, Interval


def align_offset_ns(intervals: Sequence[Interval], edges_ns: Sequence[int], max_shift_ns: int = 2_000_000_000) -> int:
    """The shift (ns) to add to every interval that brings their ends closest to the nearest window edges (sum of
    distances, each capped at `max_shift_ns`); 0 when no edge is in reach or nothing beats no shift."""
    ends = sorted({iv.end_ns for iv in intervals})[:500]
    targets = sorted(set(edges_ns))
    if not ends or not targets:
        return 0
    candidates = {0}
    for e in ends:
        i = bisect.bisect_left(targets, e - max_shift_ns)
        while i < len(targets) and targets[i] <= e + max_shift_ns:
            candidates.add(targets[i] - e)
            i += 1

    def cost(shift: int) -> float:
        total = 0.0
        for e in ends:
            x = e + shift
            j = bisect.bisect_left(targets, x)
            d = min(abs(x - targets[k]) for k in (j - 1, j) if 0 <= k < len(targets))
            total += min(d, max_shift_ns)  # an end with no window end near it (the tracker's stop) weighs the same
        return total

    return min(sorted(candidates, key=abs), key=cost)


def shift_intervals(cc: dict[str, list[Interval]], shift_ns: int) -> dict[str, list[Interval]]:
    return {k: [replace(iv, start_ns=iv.start_ns + shift_ns, end_ns=iv.end_ns + shift_ns) for iv in ivs]
            for k, ivs in cc.items()}


@dataclass
class CodeCarbonCorrection:
    """Per epoch: the truth (wall meter), CodeCarbon as it is, and each correction; errors in percent."""

    windows: list[EpochWindow]
    truth_j: list[float]
    energy_j: dict[str, list[float]]  # "codecarbon", "codecarbon+static", "codecarbon+time-varying"
    shift_s: float
    calibration: str

    def error_pct(self, name: str) -> list[float]:
        return [(e - t) / t * 100.0 if t and math.isfinite(e) and math.isfinite(t) else math.nan
                for e, t in zip(self.energy_j[name], self.truth_j, strict=True)]

    def max_abs_error_pct(self, name: str) -> float | None:
        errs = [abs(e) for e in self.error_pct(name) if math.isfinite(e)]
        return max(errs) if errs else None

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else round(v, 6)

        return {
            "calibration": self.calibration, "aligned_shift_s": round(self.shift_s, 3), "truth": "wall",
            "epochs": [w.epoch for w in self.windows],
            "truth_j": [num(v) for v in self.truth_j],
            "energy_j": {k: [num(v) for v in vs] for k, vs in self.energy_j.items()},
            "error_pct": {k: [num(v) for v in self.error_pct(k)] for k in self.energy_j},
            "max_abs_error_pct": {k: (None if (m := self.max_abs_error_pct(k)) is None else round(m, 4))
                                  for k in self.energy_j},
        }


def correct_codecarbon(
    windows: Sequence[EpochWindow], truth_j: Sequence[float], cc_total_j: Sequence[float], cc_gpu_j: Sequence[float],
    util: Sequence[float | None], fit: Fit, *, shift_s: float = 0.0, calibration: str = "",
) -> CodeCarbonCorrection:
    """Both corrections of CodeCarbon's per-epoch figures (NaN GPU: CodeCarbon saw no GPU, 0 J). `util` None: the
    epoch's CPU utilisation is unknown, the calibrated idle power is used (u = 0)."""
    static, tv = [], []
    for w, g, u in zip(windows, cc_gpu_j, util, strict=True):
        t = w.duration_s
        gpu = g if math.isfinite(g) else 0.0
        uu = 0.0 if u is None else u
        if not fit.calibrated:
            static.append(math.nan)
            tv.append(math.nan)
            continue
        static.append(holistic_window(fit, t, gpu, 0.0, 0.0, uu, correction="static").it_j)
        cpu_line_j = (fit.cpu_idle_w + (fit.cpu_busy_w - fit.cpu_idle_w) * uu) * t
        tv.append(holistic_window(fit, t, gpu, cpu_line_j, 0.0, uu).it_j)
    return CodeCarbonCorrection(list(windows), list(truth_j), {
        "codecarbon": list(cc_total_j), "codecarbon+static": static, "codecarbon+time-varying": tv,
    }, shift_s, calibration)
