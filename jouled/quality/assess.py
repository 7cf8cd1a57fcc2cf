"""`jouled assess`: the energy-benchmark study's checklist as measured findings, each with its numbers (pure, no I/O).

Every check returns `Finding`s: a verdict (`ok`, `warn`, `fail`, `n/a`), one line saying why, and the numbers the
verdict rests on (what `--format json` prints). The thresholds are named constants below and in the README.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from jouled.energy import GAP_PERIODS, SPARSE_BELOW_SAMPLES, SeriesArrays
from jouled.series import COARSE_UPDATES, SeriesMeta, meta_or_default

VERDICTS = ("ok", "warn", "fail", "n/a")
# sparse epochs: the study found < 10 samples in 39 % of short epochs with nvidia-smi
SPARSE_FAIL_SHARE = 0.10  # a tenth of the epochs integrated from < 10 samples: the per-epoch figures are unreliable
COVERAGE_OK = 0.99
COVERAGE_WARN = 0.90
SMI_OK_REL = 0.05  # nvidia-smi within 5 % of NVML in every epoch
SMI_WARN_REL = 0.15
PEARSON_OK = 0.90  # per-epoch agreement with the wall meter (the study: 0.99 for long epochs)
PEARSON_WARN = 0.70
RANGE_OK_SHARE = 0.50  # the study's benchmark used ~40 % of the GPU's range: too narrow to generalise

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Finding:
    """One checked property of a run, on one subject (a series `source:device`, a GPU, or the run)."""

    check: str
    subject: str
    verdict: str
    why: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "verdict": self.verdict, "why": self.why,
                "numbers": dict(self.numbers)}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r of paired finite values; None with fewer than 3 pairs or a constant side."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None
             and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return None
    xa = np.array([p[0] for p in pairs])
    ya = np.array([p[1] for p in pairs])
    dx, dy = xa - xa.mean(), ya - ya.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if den == 0.0:
        return None
    return float((dx * dy).sum()) / den


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


def _key(row: Mapping[str, Any]) -> str:
    return f"{row['source']}:{row['device']}"


def _window(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["epoch"], row["phase"], int(row["start_ns"]), int(row["end_ns"]))


def epoch_energy(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[tuple[Any, ...], float | None]]:
    """`source:device` → window → energy_j, from epoch rows (rows without a device are left out)."""
    out: dict[str, dict[tuple[Any, ...], float | None]] = {}
    for r in rows:
        if r["source"]:
            out.setdefault(_key(r), {})[_window(r)] = r["energy_j"]
    return out


# --------------------------------------------------------------------------------------------------
# 1. samples per epoch and sparse epochs
# --------------------------------------------------------------------------------------------------


def samples_findings(rows: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Per series: samples per epoch (min, median, max) and the epochs with fewer than 10 samples (the study's
    "sparse"), split by how their energy was computed.

    `samples` is what the energy core counted in the window for the field the energy came from (the counter's
    reads for a counter, the power readings for an integral). An integral from < 10 readings is the study's
    problem: fail above SPARSE_FAIL_SHARE of the epochs, else warn. A counter difference is exact however few its
    reads: such an epoch only warns when the core flagged it `sparse` (fewer reads than the counter's own rate
    promises: reads were lost). Its precision is the device's own update period, though (NVML on an H200 updates
    the counter every 100 ms): epochs the core flagged `coarse` (shorter than COARSE_UPDATES updates) can be off by
    more than 5 %; they warn, and fail above SPARSE_FAIL_SHARE as sparse integrals do.
    """
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["source"]:
            by.setdefault(_key(r), []).append(r)
    out = []
    for key in sorted(by):
        rs = by[key]
        n = [int(r["samples"]) for r in rs]
        # an integral the core flagged sparse from more reads than 10: they repeat values the device updates slower
        # than it was read (NVML on an H200: every 100 ms) — as sparse as the few distinct values it holds
        sparse = [r for r in rs if int(r["samples"]) < SPARSE_BELOW_SAMPLES
                  or (r["method"] == "integral" and "sparse" in r["flags"])]
        sparse_integral = [r for r in sparse if r["method"] != "counter"]
        short_counter = [r for r in rs if r["method"] == "counter" and "sparse" in r["flags"]]
        coarse = [r for r in rs if r["method"] == "counter" and "coarse" in r["flags"]]
        share_integral = len(sparse_integral) / len(rs)
        numbers = {
            "epochs": len(rs), "samples_min": min(n), "samples_median": float(np.median(n)), "samples_max": max(n),
            "sparse_epochs": len(sparse), "sparse_share": _r(len(sparse) / len(rs)),
            "sparse_integrated_epochs": len(sparse_integral), "counter_epochs_missing_reads": len(short_counter),
            "coarse_epochs": len(coarse),
        }
        coarse_why = (f"{len(coarse)} of {len(rs)} epochs shorter than {COARSE_UPDATES} updates of the device's counter: "
                      "each end can be off by up to one update's energy, over 5 % of such an epoch — use longer epochs, or sum "
                      "them")
        if share_integral > SPARSE_FAIL_SHARE:
            v, why = "fail", (f"{len(sparse_integral)} of {len(rs)} epochs integrated from < {SPARSE_BELOW_SAMPLES} "
                              "samples: sample faster (up to the device's own update rate) or use longer epochs")
        elif len(coarse) / len(rs) > SPARSE_FAIL_SHARE:
            v, why = "fail", coarse_why
        elif coarse:
            v, why = "warn", coarse_why
        elif sparse_integral or short_counter:
            v = "warn"
            why = "; ".join(
                ([f"{len(sparse_integral)} of {len(rs)} epochs integrated from < {SPARSE_BELOW_SAMPLES} samples"]
                 if sparse_integral else [])
                + ([f"{len(short_counter)} epoch(s) with fewer counter reads than its rate promises"]
                   if short_counter else []))
        elif sparse:
            v, why = "ok", (f"{len(sparse)} of {len(rs)} epochs have < {SPARSE_BELOW_SAMPLES} samples, all counter "
                            "differences at the counter's rate (exact up to the counter's own update period)")
        else:
            v, why = "ok", f"every epoch has >= {SPARSE_BELOW_SAMPLES} samples (min {min(n)})"
        out.append(Finding("samples-per-epoch", key, v, why, numbers))
    return out


# --------------------------------------------------------------------------------------------------
# 2. coverage and gaps
# --------------------------------------------------------------------------------------------------


def series_period_s(s: SeriesArrays, t_ns: npt.NDArray[np.int64]) -> float:
    """The series' nominal period: the shortest declared one, else the median spacing of its samples (NaN: unknown)."""
    meta = s.meta
    declared = [p for p in ((meta.power_period_s, meta.counter_period_s) if meta is not None else ())
                if p is not None and p > 0 and math.isfinite(p)]
    if declared:
        return float(min(declared))
    if t_ns.size < 2:
        return float("nan")
    d = np.diff(t_ns)
    d = d[d > 0]
    return float(np.median(d)) * 1e-9 if d.size else float("nan")


def sample_times_in(s: SeriesArrays, start_ns: int, end_ns: int) -> npt.NDArray[np.int64]:
    """Sorted distinct times in [start, end] at which the series has any finite field."""
    ok = np.isfinite(s.power_w) | np.isfinite(s.energy_j)
    t = s.time_ns[ok]
    t = t[(t >= start_ns) & (t <= end_ns)]
    if t.size > 1 and not bool((t[1:] >= t[:-1]).all()):
        t = np.sort(t, kind="stable")  # the store returns them sorted; np.unique would hash (seconds on a day)
    return t[np.concatenate(([True], t[1:] != t[:-1]))] if t.size else t


def coverage(t_ns: npt.NDArray[np.int64], start_ns: int, end_ns: int, period_s: float) -> tuple[float, float, int]:
    """(coverage, largest gap s, holes): the run is covered except where two neighbouring samples — or a run edge
    and its nearest sample — lie more than GAP_PERIODS periods apart; such a hole counts whole."""
    dur_s = (end_ns - start_ns) * 1e-9
    if dur_s <= 0:
        return 1.0, 0.0, 0
    pts = np.concatenate(([start_ns], t_ns, [end_ns])).astype(np.int64)
    holes_s = np.diff(pts).astype(np.float64) * 1e-9
    largest = float(holes_s.max()) if holes_s.size else dur_s
    if t_ns.size == 0:
        return 0.0, largest, 1
    limit_s = GAP_PERIODS * period_s if math.isfinite(period_s) else math.inf
    big = holes_s[holes_s > limit_s]
    return max(0.0, 1.0 - float(big.sum()) / dur_s), largest, int(big.size)


def coverage_findings(
    series: Mapping[tuple[str, str], SeriesArrays], start_ns: int, end_ns: int, rows: Sequence[Mapping[str, Any]]
) -> list[Finding]:
    """Per series: the fraction of the run sampled, the largest gap, and how many epochs the energy core flagged `gap`."""
    gap_epochs: dict[str, int] = {}
    for r in rows:
        if r["source"]:
            gap_epochs[_key(r)] = gap_epochs.get(_key(r), 0) + int("gap" in r["flags"])
    out = []
    for (src, dev) in sorted(series):
        s = series[(src, dev)]
        t = sample_times_in(s, start_ns, end_ns)
        period = series_period_s(s, t)
        cov, largest, holes = coverage(t, start_ns, end_ns, period)
        key = f"{src}:{dev}"
        g = gap_epochs.get(key, 0)
        numbers = {"coverage": _r(cov), "largest_gap_s": _r(largest, 3), "holes": holes, "gap_epochs": g,
                   "period_s": _r(period, 6), "samples": int(t.size)}
        if cov >= COVERAGE_OK and g == 0:
            v, why = "ok", f"{cov:.1%} of the run sampled, largest gap {largest:.2f} s"
        elif cov >= COVERAGE_WARN:
            v, why = "warn", f"{cov:.1%} of the run sampled, largest gap {largest:.2f} s, {g} epoch(s) flagged gap"
        else:
            v, why = "fail", (f"only {cov:.1%} of the run sampled (largest gap {largest:.2f} s, {g} epoch(s) flagged gap)"
                              " — was the daemon running throughout?")
        out.append(Finding("coverage", key, v, why, numbers))
    return out


# --------------------------------------------------------------------------------------------------
# 3. nvidia-smi vs NVML
# --------------------------------------------------------------------------------------------------


def smi_nvml_findings(rows: Sequence[Mapping[str, Any]], metas: Mapping[tuple[str, str], SeriesMeta]) -> list[Finding]:
    """Per GPU both sampled: per-epoch relative difference (smi − nvml)/nvml and Pearson's r over the epochs."""
    energy = epoch_energy(rows)
    out = []
    nvml = {meta_or_default(metas.get(("nvml", k.split(":", 1)[1])), "nvml", k.split(":", 1)[1]).for_device(k.split(":", 1)[1]): k
            for k in energy if k.startswith("nvml:")}
    for k in sorted(energy):
        if not k.startswith("smi:"):
            continue
        dev = k.split(":", 1)[1]
        phys = meta_or_default(metas.get(("smi", dev)), "smi", dev).for_device(dev)
        ref = nvml.get(phys)
        if ref is None:
            continue
        pairs: list[tuple[float, float]] = []
        for w, e in energy[k].items():
            a = energy[ref].get(w)
            if a is not None and e is not None and a > 0:
                pairs.append((a, e))
        if not pairs:
            out.append(Finding("smi-vs-nvml", phys, "n/a", "no epoch has energy from both", {"epochs": 0}))
            continue
        rel = [(b - a) / a for a, b in pairs]
        worst = max(abs(x) for x in rel)
        r = pearson([a for a, _ in pairs], [b for _, b in pairs])
        numbers = {"epochs": len(pairs), "mean_rel_diff": _r(float(np.mean(rel))),
                   "mean_abs_rel_diff": _r(float(np.mean(np.abs(rel)))), "max_abs_rel_diff": _r(worst), "pearson": _r(r)}
        if worst <= SMI_OK_REL and (r is None or r >= PEARSON_OK):
            v = "ok"
        elif worst <= SMI_WARN_REL:
            v = "warn"
        else:
            v = "fail"
        why = f"nvidia-smi vs NVML per epoch: max |diff| {worst:.1%}, r {'—' if r is None else f'{r:.3f}'}"
        out.append(Finding("smi-vs-nvml", phys, v, why, numbers))
    return out


# --------------------------------------------------------------------------------------------------
# 4. GPU power range used vs the GPU's limits
# --------------------------------------------------------------------------------------------------


def gpu_range_findings(
    series: Mapping[tuple[str, str], SeriesArrays], start_ns: int, end_ns: int,
    limits_w: Mapping[str, tuple[float, float]],
) -> list[Finding]:
    """Per GPU: min/p5/p95/max of its power over the run against its min/max power limits.

    `span_share` = (p95 − p5) / (max limit − min limit): how much of the GPU's range the run exercised (the study's
    benchmark drew 146–305 W, about 40 %). The direct series (NVML) is used where both NVML and nvidia-smi ran.
    `limits_w`: by physical device name, or "*" for every GPU.
    """
    best: dict[str, tuple[tuple[int, str], SeriesArrays]] = {}
    for (src, dev), s in series.items():
        meta = meta_or_default(s.meta, src, dev)
        if meta.role != "gpu":
            continue
        phys = meta.for_device(dev)
        rank = (int(meta.comparison) + int(meta.estimated), src)
        if phys not in best or rank < best[phys][0]:
            best[phys] = (rank, s)
    out = []
    for phys in sorted(best):
        s = best[phys][1]
        inside = (s.time_ns >= start_ns) & (s.time_ns <= end_ns) & np.isfinite(s.power_w)
        p = s.power_w[inside]
        subject = f"{s.source}:{phys}"
        if p.size == 0:
            out.append(Finding("gpu-power-range", subject, "n/a", "no power readings in the run", {}))
            continue
        q = np.percentile(p, [5.0, 95.0])
        numbers: dict[str, Any] = {"min_w": _r(float(p.min()), 3), "p5_w": _r(float(q[0]), 3), "p95_w": _r(float(q[1]), 3),
                                   "max_w": _r(float(p.max()), 3), "readings": int(p.size)}
        lim = limits_w.get(phys) or limits_w.get("*")
        if lim is None:
            out.append(Finding("gpu-power-range", subject, "warn",
                               f"power {q[0]:.0f}–{q[1]:.0f} W (p5–p95); the GPU's limits are unknown — "
                               "pass --gpu-limits MIN:MAX (watts)", numbers))
            continue
        lo, hi = lim
        share = (float(q[1]) - float(q[0])) / (hi - lo) if hi > lo else float("nan")
        numbers.update({"limit_min_w": lo, "limit_max_w": hi, "span_share": _r(share), "p95_of_max": _r(float(q[1]) / hi)})
        v = "ok" if share >= RANGE_OK_SHARE else "warn"
        why = (f"power {q[0]:.0f}–{q[1]:.0f} W (p5–p95) covers {share:.0%} of the GPU's {lo:.0f}–{hi:.0f} W range"
               + ("" if v == "ok" else " — results may not generalise to other loads"))
        out.append(Finding("gpu-power-range", subject, v, why, numbers))
    return out


# --------------------------------------------------------------------------------------------------
# 5. per-epoch correlation with the wall meter
# --------------------------------------------------------------------------------------------------


def wall_correlation_findings(rows: Sequence[Mapping[str, Any]], metas: Mapping[tuple[str, str], SeriesMeta]) -> list[Finding]:
    """Per series: Pearson's r of its per-epoch energy with the wall meter's (the first wall series), over the
    epochs both have. n/a without a wall meter or with fewer than 3 shared epochs."""
    energy = epoch_energy(rows)
    walls = sorted(k for k in energy if meta_or_default(metas.get(tuple(k.split(":", 1))), *k.split(":", 1)).role == "wall")  # type: ignore[arg-type]
    if not walls:
        return [Finding("wall-correlation", "run", "n/a", "no wall meter in this run", {})]
    wall = walls[0]
    out = []
    for k in sorted(energy):
        if k == wall:
            continue
        shared = [w for w in energy[k] if w in energy[wall]]
        r = pearson([energy[k][w] for w in shared], [energy[wall][w] for w in shared])  # type: ignore[misc]
        numbers = {"epochs": len(shared), "pearson": _r(r), "wall": wall}
        if r is None:
            out.append(Finding("wall-correlation", k, "n/a", f"fewer than 3 epochs with energy from both it and {wall}",
                               numbers))
            continue
        v = "ok" if r >= PEARSON_OK else "warn" if r >= PEARSON_WARN else "fail"
        out.append(Finding("wall-correlation", k, v, f"per-epoch energy vs {wall}: r {r:.3f} over {len(shared)} epochs",
                           numbers))
    return out


# --------------------------------------------------------------------------------------------------
# 6. estimated or host-wide series in the totals
# --------------------------------------------------------------------------------------------------


def totals_findings(total_keys: Sequence[str], metas: Mapping[tuple[str, str], SeriesMeta]) -> list[Finding]:
    """Which series make the run's total, and whether any is an estimate or the whole host's figure."""
    est, wide = [], []
    for k in total_keys:
        src, dev = k.split(":", 1)
        m = meta_or_default(metas.get((src, dev)), src, dev)
        if m.estimated:
            est.append(k)
        if m.host_wide:
            wide.append(k)
    numbers = {"total": list(total_keys), "estimated": est, "host_wide": wide}
    if not total_keys:
        return [Finding("totals", "run", "fail", "no measured series makes a total", numbers)]
    if est or wide:
        parts = ([f"estimated: {', '.join(est)}"] if est else []) + ([f"host-wide: {', '.join(wide)}"] if wide else [])
        return [Finding("totals", "run", "warn", "the total includes " + "; ".join(parts), numbers)]
    return [Finding("totals", "run", "ok", f"the total is measured, per device: {', '.join(total_keys)}", numbers)]


def worst(findings: Iterable[Finding]) -> str:
    """The worst verdict (fail > warn > ok; n/a counts as ok)."""
    vs = {f.verdict for f in findings}
    return "fail" if "fail" in vs else "warn" if "warn" in vs else "ok"
