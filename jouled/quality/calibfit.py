"""Calibration math (pure): P_idle, P_busy, the uncaptured-power model and holistic energy of a window, from numbers.

`jouled calibrate` measures one `PhasePoint` per calibration phase (mean powers by role over the phase, the CPU
utilisation the phase drove); `fit_calibration` turns them into a `Fit`:

- the paper's static correction (arXiv 2505.15631): the machine without its GPUs draws
  P_idle + (P_busy − P_idle)·u at CPU utilisation u, where P_idle is the non-GPU wall power at idle and P_busy
  is extrapolated to u = 1 from a CPU stress load (one candidate per load; the best load is the one whose P_busy
  makes the static model's largest error over the calibration phases smallest);
- the time-varying correction: uncaptured power (wall − GPU − RAPL package − DRAM: board, fans, PSU losses)
  = c0 + c_u·u + c_g·P_gpu + c_ug·u·P_gpu, plain least squares over the phases (a feature that did not vary is left
  out; the interaction only when a phase loaded CPU and GPU at once: fans follow the hotter part, so CPU and GPU
  stressed apart do not add up to both stressed together — bench/calibration.py measures what it is worth).

`holistic_window` applies a fit to one window's measured energies: uncaptured energy = c0·T + c_u·ū·T + c_g·E_gpu
+ c_ug·ū·E_gpu (exact for the linear terms; the interaction takes u and GPU power as uncorrelated inside the window).
Units in names; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# With no wall meter nothing can be calibrated: uncaptured power is taken as this share of the measured power
# (a 90 %-efficient power supply: 1/0.9 − 1), labelled as the static fallback wherever it is used.
FALLBACK_UNCAPTURED_FRACTION = 1 / 0.9 - 1
MIN_UTIL_SPREAD = 0.05  # utilisation must span at least this across phases for c_u to be fitted
MIN_GPU_SPREAD_W = 5.0  # GPU power must span at least this across phases for c_g to be fitted
CPU_LOADS = ("cpu-prime", "cpu-fma", "memory")  # the loads that bound P_busy
COMBINED_LOAD = "gpu+cpu"  # GPU stress and CPU prime at once: identifies the CPU × GPU interaction


@dataclass(frozen=True, slots=True)
class PhasePoint:
    """Mean powers (W) over one calibration phase, by role, and the CPU utilisation (0..1) it drove."""

    phase: str  # the marker's phase name, e.g. "calibrate:cpu-prime"
    load: str  # idle, cpu-prime, cpu-fma, memory, gpu-stress
    duty: float  # share of the cores (CPU loads) or of the time (GPU stress) the load ran, 0..1
    duration_s: float
    util_cpu: float
    gpu_w: float
    cpu_w: float  # RAPL packages (or the CPU estimate when no package is measured)
    dram_w: float
    wall_w: float | None  # None: no wall meter

    @property
    def measured_w(self) -> float:
        return self.gpu_w + self.cpu_w + self.dram_w

    @property
    def uncaptured_w(self) -> float | None:
        return None if self.wall_w is None else self.wall_w - self.measured_w


@dataclass(frozen=True, slots=True)
class UncapturedModel:
    """uncaptured_w = intercept_w + per_util_w·u + per_gpu_w·P_gpu + per_util_gpu_w·u·P_gpu (u 0..1, P_gpu W)."""

    intercept_w: float
    per_util_w: float = 0.0
    per_gpu_w: float = 0.0
    features: tuple[str, ...] = ()  # which of "util_cpu", "gpu_w", "util_x_gpu_w" were fitted (the others are 0)
    per_util_gpu_w: float = 0.0

    def power_w(self, util_cpu: float, gpu_w: float) -> float:
        return (self.intercept_w + self.per_util_w * util_cpu + self.per_gpu_w * gpu_w
                + self.per_util_gpu_w * util_cpu * gpu_w)


@dataclass(frozen=True, slots=True)
class Residual:
    """One phase: wall power and what each correction predicts for it (W)."""

    phase: str
    wall_w: float
    time_varying_w: float  # GPU + RAPL + DRAM + modelled uncaptured
    static_w: float  # GPU + P_idle + (P_busy − P_idle)·u

    @property
    def time_varying_err_w(self) -> float:
        return self.time_varying_w - self.wall_w

    @property
    def static_err_w(self) -> float:
        return self.static_w - self.wall_w


@dataclass(frozen=True)
class Fit:
    """The result of one calibration. `calibrated` False: no wall meter, the static fallback is in force."""

    calibrated: bool
    p_idle_w: float | None  # non-GPU wall power at u = 0 (None without a wall meter)
    p_busy_w: float | None  # non-GPU wall power at u = 1, from the best load
    best_load: str | None
    busy_by_load_w: dict[str, float]  # each CPU load's P_busy candidate
    static_max_err_by_load_pct: dict[str, float]  # the static model's largest error over the phases, per candidate
    cpu_idle_w: float  # RAPL package + DRAM at u = 0 and u = 1 (the utilisation proxy when none is logged)
    cpu_busy_w: float
    model: UncapturedModel | None  # None without a wall meter
    residuals: list[Residual] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["residuals"] = [dict(asdict(r), time_varying_err_w=r.time_varying_err_w, static_err_w=r.static_err_w)
                          for r in self.residuals]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Fit:
        model = d.get("model")
        res = [Residual(r["phase"], r["wall_w"], r["time_varying_w"], r["static_w"]) for r in d.get("residuals", [])]
        return Fit(
            calibrated=bool(d["calibrated"]), p_idle_w=d.get("p_idle_w"), p_busy_w=d.get("p_busy_w"),
            best_load=d.get("best_load"), busy_by_load_w=dict(d.get("busy_by_load_w", {})),
            static_max_err_by_load_pct=dict(d.get("static_max_err_by_load_pct", {})),
            cpu_idle_w=float(d["cpu_idle_w"]), cpu_busy_w=float(d["cpu_busy_w"]),
            model=None if model is None else UncapturedModel(
                float(model["intercept_w"]), float(model["per_util_w"]), float(model["per_gpu_w"]),
                tuple(model.get("features", ())), float(model.get("per_util_gpu_w", 0.0))),
            residuals=res, notes=list(d.get("notes", [])),
        )


def line_fit(x: Sequence[float], y: Sequence[float], min_spread: float = 0.0) -> tuple[float, float]:
    """(intercept, slope) of y = a + b·x by least squares; x spanning no more than `min_spread` gives (mean y, 0)
    (a line through points that hardly differ in x extrapolates noise)."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.size == 0:
        raise ValueError("line_fit: no points")
    if xa.size < 2 or float(np.ptp(xa)) <= min_spread:
        return float(ya.mean()), 0.0
    b, a = np.polyfit(xa, ya, 1)
    return float(a), float(b)


def fit_uncaptured(points: Sequence[PhasePoint]) -> UncapturedModel:
    """Least squares of uncaptured = c0 + c_u·u + c_g·P_gpu over the phases with a wall reading.

    A feature that hardly varied across the phases (utilisation spread < MIN_UTIL_SPREAD, GPU power spread <
    MIN_GPU_SPREAD_W: no GPU) is left out rather than fitted to noise.
    """
    pts = [p for p in points if p.wall_w is not None]
    if not pts:
        raise ValueError("fit_uncaptured: no phase with a wall reading")
    y = np.array([p.uncaptured_w for p in pts], float)
    u = np.array([p.util_cpu for p in pts], float)
    g = np.array([p.gpu_w for p in pts], float)
    cols, names = [np.ones(len(pts))], []
    if float(np.ptp(u)) >= MIN_UTIL_SPREAD:
        cols.append(u)
        names.append("util_cpu")
    if float(np.ptp(g)) >= MIN_GPU_SPREAD_W:
        cols.append(g)
        names.append("gpu_w")
        if len(names) == 2 and any(p.load == COMBINED_LOAD for p in pts):
            cols.append(u * g)
            names.append("util_x_gpu_w")
    a = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    c = dict(zip(["intercept", *names], (float(v) for v in coef), strict=True))
    return UncapturedModel(c["intercept"], c.get("util_cpu", 0.0), c.get("gpu_w", 0.0), tuple(names),
                           c.get("util_x_gpu_w", 0.0))


def static_power_w(p_idle_w: float, p_busy_w: float, util_cpu: float) -> float:
    """The paper's non-GPU machine power: P_idle + (P_busy − P_idle)·u."""
    return p_idle_w + (p_busy_w - p_idle_w) * util_cpu


def busy_candidate_w(idle_w: float, idle_util: float, load_w: float, load_util: float) -> float:
    """P at u = 1 on the line through (idle_util, idle_w) and (load_util, load_w); the load's own power when the
    two utilisations coincide (nothing to extrapolate from)."""
    du = load_util - idle_util
    if du <= 1e-6:
        return load_w
    return idle_w + (load_w - idle_w) * (1.0 - idle_util) / du


def _implausible(walled: Sequence[PhasePoint], model: UncapturedModel) -> list[str]:
    """Notes on a fit the physics does not allow: a wall meter that did not see the load the sensors saw (a meter on
    another machine, one that answers one value: the simulated WT310), uncaptured power that falls with load."""
    out: list[str] = []
    wall = [float(p.wall_w) for p in walled if p.wall_w is not None]
    measured = [p.measured_w for p in walled]
    if len(wall) >= 2:
        wall_spread, measured_spread = float(np.ptp(wall)), float(np.ptp(measured))
        if wall_spread < max(1.0, 0.01 * float(np.mean(wall))) and measured_spread > max(2.0, 2 * wall_spread):
            out.append(f"the wall power did not follow the load ({min(wall):.1f}-{max(wall):.1f} W at the wall while the "
                       f"sensors saw {min(measured):.1f}-{max(measured):.1f} W): is the meter on this machine's plug? "
                       "This calibration is not to be trusted")
    if model.per_util_w < 0:
        out.append(f"the uncaptured power falls as the CPU works ({model.per_util_w:.2f} W per unit of utilisation): "
                   "check the meter before using this calibration")
    return out


def fit_calibration(points: Sequence[PhasePoint]) -> Fit:
    """Fit P_idle/P_busy (static) and the uncaptured model (time-varying) from the calibration phases.

    Needs an `idle` phase; without any wall reading only the RAPL CPU idle/busy powers are fitted (`calibrated`
    False). P_idle is the idle phase's non-GPU wall power extrapolated to u = 0 along the CPU loads' line.
    """
    idle = [p for p in points if p.load == "idle"]
    if not idle:
        raise ValueError("fit_calibration: no idle phase")
    i0 = idle[0]
    cpu_pts = [p for p in points if p.load in ("idle", *CPU_LOADS)]
    # RAPL CPU power at u = 0 and 1 (the utilisation proxy): the line through idle and every CPU load
    utils = [p.util_cpu for p in cpu_pts]
    ca, cb = line_fit(utils, [p.cpu_w + p.dram_w for p in cpu_pts], MIN_UTIL_SPREAD)
    notes: list[str] = []
    if float(np.ptp(utils)) < MIN_UTIL_SPREAD:
        notes.append(f"CPU utilisation hardly changed across the phases ({min(utils):.0%}-{max(utils):.0%}: other work "
                     "on the machine?): idle and busy power are not extrapolated, the model has no utilisation term")
    if not any(p.wall_w is not None for p in points):
        return Fit(False, None, None, None, {}, {}, ca, ca + cb, None,
                   notes=["no wall meter: P_idle, P_busy and uncaptured power not calibrated (static fallback)"])
    walled = [p for p in points if p.wall_w is not None]
    model = fit_uncaptured(walled)
    notes.extend(_implausible(walled, model))

    def nongpu(p: PhasePoint) -> float:
        return float(p.wall_w) - p.gpu_w  # type: ignore[arg-type]

    # P_idle: the non-GPU wall power at u = 0 on the line through the CPU phases (idle rarely is exactly 0 %)
    cpu_walled = [p for p in cpu_pts if p.wall_w is not None]
    ia, ib = line_fit([p.util_cpu for p in cpu_walled], [nongpu(p) for p in cpu_walled], MIN_UTIL_SPREAD)
    p_idle = ia if ib != 0.0 else (nongpu(i0) if i0.wall_w is not None else ia)
    busy: dict[str, float] = {}
    for p in cpu_walled:
        if p.load in CPU_LOADS and p.duty >= 0.99:  # a full-core load bounds P_busy; a partial one only checks it
            busy[p.load] = max(busy.get(p.load, -math.inf), busy_candidate_w(p_idle, 0.0, nongpu(p), p.util_cpu))
    errs: dict[str, float] = {}
    for load, pb in busy.items():
        errs[load] = max(abs(p.gpu_w + static_power_w(p_idle, pb, p.util_cpu) - float(p.wall_w)) / float(p.wall_w)
                         * 100.0 for p in walled if p.wall_w)
    best = min(errs, key=lambda k: (errs[k], k)) if errs else None
    if best is None:
        notes.append("no full-core CPU load was measured: P_busy unknown, the static correction uses P_idle only")
    p_busy = busy[best] if best is not None else p_idle
    residuals = [
        Residual(p.phase, float(p.wall_w),  # type: ignore[arg-type]
                 p.measured_w + model.power_w(p.util_cpu, p.gpu_w),
                 p.gpu_w + static_power_w(p_idle, p_busy, p.util_cpu))
        for p in walled
    ]
    return Fit(True, p_idle, p_busy, best, busy, errs, ca, ca + cb, model, residuals, notes)


def proxy_util(cpu_w: float, cpu_idle_w: float, cpu_busy_w: float) -> float:
    """CPU utilisation (0..1) read off the calibrated RAPL line, for windows without a logged utilisation."""
    span = cpu_busy_w - cpu_idle_w
    if span <= 1e-9:
        return 0.0
    return min(1.0, max(0.0, (cpu_w - cpu_idle_w) / span))


@dataclass(frozen=True, slots=True)
class Holistic:
    """One window's holistic energy (J), component by component."""

    gpu_j: float
    cpu_j: float
    dram_j: float
    uncaptured_j: float
    pue_overhead_j: float
    util_cpu: float | None  # the mean utilisation the model used (None: static fallback, no model)

    @property
    def it_j(self) -> float:
        return self.gpu_j + self.cpu_j + self.dram_j + self.uncaptured_j

    @property
    def total_j(self) -> float:
        return self.it_j + self.pue_overhead_j


def holistic_window(
    fit: Fit | None, duration_s: float, gpu_j: float, cpu_j: float, dram_j: float,
    util_cpu: float | None, pue: float = 1.0, correction: str = "time-varying",
) -> Holistic:
    """Holistic energy of one window from its measured energies.

    `correction`: "time-varying" (uncaptured = c0·T + c_u·ū·T + c_g·E_gpu + c_ug·ū·E_gpu) or "static" (the paper's: the non-GPU
    machine at P_idle + (P_busy − P_idle)·ū replaces CPU + DRAM + uncaptured; reported as CPU/DRAM as measured
    and the difference as uncaptured). `util_cpu` None: read off the calibrated RAPL line. `fit` None or not
    calibrated: the static fallback (uncaptured = FALLBACK_UNCAPTURED_FRACTION of the measured energy).
    PUE multiplies the whole: its overhead is (PUE − 1) × the IT energy.
    """
    if pue < 1.0:
        raise ValueError(f"pue {pue}: must be >= 1")
    measured = gpu_j + cpu_j + dram_j
    if fit is None or not fit.calibrated or fit.model is None:
        unc = FALLBACK_UNCAPTURED_FRACTION * measured
        u = util_cpu
    else:
        t = max(duration_s, 0.0)
        u = util_cpu
        if u is None:
            u = proxy_util((cpu_j + dram_j) / t if t > 0 else 0.0, fit.cpu_idle_w, fit.cpu_busy_w)
        if correction == "static":
            assert fit.p_idle_w is not None and fit.p_busy_w is not None
            unc = static_power_w(fit.p_idle_w, fit.p_busy_w, u) * t - cpu_j - dram_j
        elif correction == "time-varying":
            m = fit.model
            unc = m.intercept_w * t + m.per_util_w * u * t + m.per_gpu_w * gpu_j + m.per_util_gpu_w * u * gpu_j
        else:
            raise ValueError(f"correction {correction!r}: static or time-varying")
    it = measured + unc
    return Holistic(gpu_j, cpu_j, dram_j, unc, (pue - 1.0) * it, u)


def error_pct(estimate: float, truth: float) -> float:
    """Signed relative error in percent (NaN when the truth is 0)."""
    return (estimate - truth) / truth * 100.0 if truth else math.nan
