"""Trace-driven CE-NAS simulator: a virtual clock over a carbon trace, G GPUs split hourly between
one-shot sampling and full-training evaluation, LaMOO search on the NAS-Bench-201 tables.

Work model (CE-NAS): sampling GPUs score LaMOO's proposals with the one-shot supernet estimate
(`test-per-time` GPU-seconds each) and tell LaMOO the estimated objectives; evaluation GPUs fully
train (2 x `train-all-time` GPU-seconds each) the sampled cells that rank best on the estimates
(non-dominated sorting), or LaMOO's next proposal when none is waiting. Samples scored during a
decision period become visible to evaluation at the next one. Training jobs are checkpointed: when
the split takes their GPU away they pause and resume later. Hypervolume counts TRULY evaluated cells
only (true accuracy vs `hwnas_fpga_energy_mj_derived`, the stand-in for CE-NAS's edge-GPU energy).
Every GPU-second is charged: sampling, evaluation or idle power x the intensity in force at that
instant (work is packed at the start of each period, so the integral is exact for that schedule).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from jouled.carbon.series import J_PER_KWH, IntensitySeries
from jouled.carbon.trace import Trace
from jouled.errors import UserError
from jouled.scheduler.hypervolume import (
    CENAS_REF_POINT,
    ParetoArchive,
    hypervolume_2d,
    nondominated_ranks,
    pareto_mask,
)
from jouled.scheduler.lamoo import LaMOO, LaMOOConfig
from jouled.scheduler.policies import Policy, Split, make_policy, place
from jouled.scheduler.space import ACCURACY_NAME, ENERGY_NAME, Benchmark

FloatArray = npt.NDArray[np.float64]

ALL_METHODS: tuple[str, ...] = ("vanilla", "cenas", "oracle", "forecast", "random", "oneshot")
METHOD_HELP = (
    "vanilla (LaMOO, every GPU fully trains), oneshot (every GPU samples with supernet estimates), "
    "or a CE-NAS split policy: cenas, oracle, forecast, random, static:<F>, threshold:<P>"
)


@dataclass(frozen=True)
class SimConfig:
    """What one simulated search looks like; powers come from config [nas]."""

    gpus: int = 8
    hours: float = 168.0
    decision_period_s: float = 3600.0
    window_h: float = 24.0
    sampling_power_w: float = 250.0
    evaluation_power_w: float = 300.0
    idle_power_w: float = 50.0
    ref_point: tuple[float, float] = CENAS_REF_POINT
    estimate: str = "one_shot"  # or "few_shot"
    sample_batch: int = 256  # LaMOO proposals per ask while sampling
    lamoo: LaMOOConfig = field(default_factory=LaMOOConfig)

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.hours * 3600.0 / self.decision_period_s - 1e-9))

    @property
    def horizon_s(self) -> float:
        return self.steps * self.decision_period_s


@dataclass
class RunResult:
    """One method on one seed. Series are per decision period (value at the period's end)."""

    method: str
    seed: int
    start_s: float
    hv: float
    carbon_kg: float
    energy_kwh: float
    evaluations: int
    samples: int
    time_h: FloatArray  # period ends, hours since start
    hv_series: FloatArray
    carbon_kg_series: FloatArray
    energy_kwh_series: FloatArray
    evaluations_series: npt.NDArray[np.int64]
    samples_series: npt.NDArray[np.int64]
    gpus_sampling_series: npt.NDArray[np.int64]
    intensity_series: FloatArray
    hv_events: list[tuple[float, float]]  # (seconds since start, HV) whenever HV rose
    front_cells: list[int]

    def carbon_at(self, t_s: float) -> float:
        """Cumulative carbon (kg) at t_s since start (linear within a period)."""
        t = np.concatenate([[0.0], self.time_h * 3600.0])
        c = np.concatenate([[0.0], self.carbon_kg_series])
        return float(np.interp(t_s, t, c))

    def hv_at(self, t_s: float) -> float:
        hv = 0.0
        for te, h in self.hv_events:
            if te > t_s:
                break
            hv = h
        return hv

    def time_at_carbon(self, carbon_kg: float) -> float:
        """First time (s since start) the cumulative carbon reaches carbon_kg (inf if never)."""
        t = np.concatenate([[0.0], self.time_h * 3600.0])
        c = np.concatenate([[0.0], self.carbon_kg_series])
        if carbon_kg > c[-1] + 1e-12:
            return math.inf
        i = int(np.searchsorted(c, carbon_kg, side="left"))
        if i == 0:
            return 0.0
        c0, c1 = c[i - 1], c[i]
        return float(t[i - 1] + (t[i] - t[i - 1]) * ((carbon_kg - c0) / (c1 - c0) if c1 > c0 else 1.0))

    def time_to_hv(self, target: float) -> float:
        for te, h in self.hv_events:
            if h >= target:
                return te
        return math.inf


# --- searchers --------------------------------------------------------------------------------


class _Search:
    """The search state shared by all methods: what was sampled, what was evaluated, the true front."""

    def __init__(self, bench: Benchmark, seed: int, cfg: SimConfig, *, lamoo_true: bool) -> None:
        self.bench = bench
        self.cfg = cfg
        self.true_obj = bench.true_objectives()
        self.est_obj = bench.estimated_objectives(estimate=cfg.estimate)
        self.lamoo = LaMOO(bench.features(), cfg.ref_point, seed=seed, config=cfg.lamoo)
        self.lamoo_true = lamoo_true  # vanilla: LaMOO learns from full trainings
        self.archive = ParetoArchive(cfg.ref_point)
        self.evaluated = np.zeros(bench.n, dtype=bool)
        self.claimed = np.zeros(bench.n, dtype=bool)  # evaluated or being trained
        self.sampled = np.zeros(bench.n, dtype=bool)
        self.visible = np.zeros(bench.n, dtype=bool)  # sampled before the current period
        self.n_eval = 0
        self.n_samples = 0
        self._to_score: deque[int] = deque()
        self._partial_sample_s = 0.0  # work already done on _to_score[0]
        self._queue: list[int] = []
        self._queue_built_on = -1

    # sampling -----------------------------------------------------------------------------
    def sample(self, budget_s: float) -> float:
        """Score proposals for up to budget_s GPU-seconds; returns GPU-seconds used."""
        used = 0.0
        cost = self.bench.sample_time_s
        mean_cost = float(cost.mean())
        done: list[int] = []
        while used < budget_s - 1e-9:
            if not self._to_score:
                if done:  # let LaMOO see this batch before it proposes the next
                    self._tell_samples(done)
                    done = []
                n = min(self.cfg.sample_batch, max(1, math.ceil((budget_s - used) / mean_cost)))
                asked = self.lamoo.ask(n)
                if not asked:
                    break  # every cell proposed: the sampling GPUs idle
                self._to_score.extend(asked)
            cell = self._to_score[0]
            need = float(cost[cell]) - self._partial_sample_s
            if used + need > budget_s:
                self._partial_sample_s += budget_s - used
                used = budget_s
                break
            used += need
            self._partial_sample_s = 0.0
            self._to_score.popleft()
            done.append(cell)
        if done:
            self._tell_samples(done)
        return used

    def _tell_samples(self, cells: list[int]) -> None:
        idx = np.asarray(cells, dtype=np.int64)
        self.sampled[idx] = True
        self.n_samples += len(cells)
        if not self.lamoo_true:
            self.lamoo.tell(idx, self.est_obj[idx])

    def publish_samples(self) -> None:
        """Samples scored so far become visible to evaluation (called at each period start)."""
        self.visible |= self.sampled

    # evaluation ---------------------------------------------------------------------------
    def next_job(self) -> int:
        """The next cell to train fully; -1 when nothing is left."""
        if not self.lamoo_true:
            n_visible = int(self.visible.sum())
            if n_visible != self._queue_built_on:
                self._rebuild_queue()
                self._queue_built_on = n_visible
            while self._queue:
                c = self._queue.pop()
                if not self.claimed[c]:
                    self.claimed[c] = True
                    return c
        while True:
            got = self.lamoo.ask(1)
            if not got:
                return -1
            c = got[0]
            if not self.claimed[c]:
                self.claimed[c] = True
                return c

    def _rebuild_queue(self) -> None:
        """Waiting sampled cells, best estimated non-dominated layer first (popped from the end)."""
        cand = np.nonzero(self.visible & ~self.claimed)[0]
        if len(cand) == 0:
            self._queue = []
            return
        est = self.est_obj[cand]
        ranks = nondominated_ranks(est)
        order = np.lexsort((-est[:, 0], ranks))  # layer, then higher estimated accuracy
        self._queue = cand[order][::-1].tolist()

    def finish(self, cell: int, t_s: float, events: list[tuple[float, float]]) -> None:
        self.evaluated[cell] = True
        self.n_eval += 1
        if self.lamoo_true:
            self.lamoo.tell([cell], self.true_obj[cell][None, :])
        else:
            self.lamoo.exclude([cell])
        if self.archive.add(self.true_obj[cell], cell):
            events.append((t_s, self.archive.hv))

    def hv(self) -> float:
        return self.archive.hv

    def front_cells(self) -> list[int]:
        return sorted(self.archive.ids)


class _OneShotSearch(_Search):
    """Sampling only: the chosen front is the estimated Pareto front, judged by its TRUE objectives."""

    def __init__(self, bench: Benchmark, seed: int, cfg: SimConfig) -> None:
        super().__init__(bench, seed, cfg, lamoo_true=False)
        self._hv = 0.0
        self._front: list[int] = []

    def refresh(self, t_s: float, events: list[tuple[float, float]]) -> None:
        idx = np.nonzero(self.sampled)[0]
        if len(idx) == 0:
            return
        front = idx[pareto_mask(self.est_obj[idx])]
        hv = hypervolume_2d(self.true_obj[front], self.cfg.ref_point)
        self._front = sorted(front.tolist())
        if hv != self._hv:
            self._hv = hv
            events.append((t_s, hv))

    def hv(self) -> float:
        return self._hv

    def front_cells(self) -> list[int]:
        return self._front


# --- the simulation loop ----------------------------------------------------------------------


def start_time_s(trace: Trace, seed: int, cfg: SimConfig) -> float:
    """Each seed starts at its own point of the trace (a seeded draw among the points that leave room)."""
    if len(trace) == 0:
        raise UserError(f"trace {trace.path}: no data rows — pass a trace with at least --hours of data")
    latest = trace.end_s - cfg.horizon_s
    ok = np.nonzero(trace.time_s <= latest + 1e-6)[0]
    if len(ok) == 0:
        span_h = (trace.end_s - trace.start_s) / 3600.0
        raise UserError(
            f"trace {trace.path}: covers {span_h:.0f} h, fewer than --hours {cfg.hours:g} — "
            "pass a longer trace or fewer hours"
        )
    rng = np.random.default_rng([int(seed), 20230710])
    return float(trace.time_s[ok[int(rng.integers(0, len(ok)))]])


def _policy_for(method: str, seed: int, cfg: SimConfig) -> Policy | None:
    if method in ("vanilla", "oneshot"):
        return None
    return make_policy(method, seed, window_s=cfg.window_h * 3600.0)


def combine_zones(traces: Sequence[Trace]) -> Trace:
    """The intensity the scheduler can get at each instant across zones: the per-period minimum.

    Zones must share timestamps (e.g. Electricity Maps hourly exports of one year)."""
    first = traces[0]
    for tr in traces[1:]:
        if tr.time_ns.shape != first.time_ns.shape or not np.array_equal(tr.time_ns, first.time_ns):
            raise UserError(
                f"trace {tr.path}: its timestamps differ from {first.path} — pass zone traces that cover "
                "the same hours at the same resolution"
            )
    values = np.min(np.stack([tr.g_per_kwh for tr in traces]), axis=0)
    return Trace(
        time_ns=first.time_ns,
        g_per_kwh=values,
        path=" + ".join(tr.path for tr in traces),
        column=first.column,
        zone="min(" + ",".join(tr.zone or Path(tr.path).stem for tr in traces) + ")",
    )


def _zone_names(traces: Sequence[Trace]) -> list[str]:
    names: list[str] = []
    for i, tr in enumerate(traces):
        name = tr.zone or Path(tr.path).stem or f"zone{i}"
        names.append(name if name not in names else f"{name}#{i}")
    return names


def simulate(
    method: str, trace: Trace | Sequence[Trace], bench: Benchmark, seed: int, cfg: SimConfig | None = None
) -> RunResult:
    """Run one method for cfg.hours from this seed's start point; deterministic per (method, trace, seed).

    Several traces = several zones with cfg.gpus GPUs each: the policy decides on the cleanest
    zone's intensity for the whole cluster, evaluation GPUs are placed in the cleanest zones first
    (policies.place) and the remaining GPUs sample; checkpointed trainings may resume in any zone.
    """
    cfg = cfg or SimConfig()
    if cfg.gpus < 1:
        raise UserError(f"--gpus {cfg.gpus}: need at least one GPU — pass --gpus 1 or more")
    zones = [trace] if isinstance(trace, Trace) else list(trace)
    if not zones:
        raise UserError("no trace given — pass --trace FILE (repeat it for several zones)")
    decide_on = zones[0] if len(zones) == 1 else combine_zones(zones)
    names = _zone_names(zones)
    policy = _policy_for(method, seed, cfg)
    start = start_time_s(decide_on, seed, cfg)
    search: _Search = (
        _OneShotSearch(bench, seed, cfg) if method == "oneshot" else _Search(bench, seed, cfg, lamoo_true=method == "vanilla")
    )
    whole = decide_on  # the whole trace: only the oracle sees past now (see _decide)
    period = cfg.decision_period_s
    G = cfg.gpus * len(zones)
    n = cfg.steps
    train_s = bench.train_time_s
    running: list[tuple[int, float]] = []  # (cell, remaining GPU-seconds), oldest first
    events: list[tuple[float, float]] = []
    carbon_g = 0.0
    energy_j = 0.0
    series: dict[str, list[float]] = {k: [] for k in ("hv", "c", "e", "ev", "s", "gs", "ci")}

    for k in range(n):
        t0 = start + k * period
        ci_now = decide_on.at(t0)
        split = _decide(method, policy, t0, ci_now, decide_on, whole, G)
        g_s, g_e = split.gpus_sampling, split.gpus_evaluation
        # where the evaluation GPUs run: cleanest zone first; the rest of each zone samples
        ci_zone = {name: tr.at(t0) for name, tr in zip(names, zones, strict=True)}
        placed = place({z: (cfg.gpus, ci_zone[z]) for z in names}, g_e)
        eval_zone = [names.index(z) for z in names for _ in range(placed[z])]
        samp_per_zone = [cfg.gpus - placed[z] for z in names]
        search.publish_samples()

        # evaluation: g_e slots, event-driven in time order so LaMOO only hears of finished trainings
        busy_eval = [0.0] * g_e
        if g_e > 0:
            slot_free = [(0.0, i) for i in range(g_e)]
            heapq.heapify(slot_free)
            resumable = deque(running)
            running = []
            while slot_free:
                at, slot = heapq.heappop(slot_free)
                if at >= period - 1e-9:
                    busy_eval[slot] = period
                    continue
                if resumable:
                    cell, rem = resumable.popleft()
                else:
                    cell = search.next_job()
                    if cell < 0:
                        busy_eval[slot] = at  # nothing to train: idle for the rest of the period
                        continue
                    rem = float(train_s[cell])
                run = min(rem, period - at)
                if run >= rem - 1e-9:
                    search.finish(cell, k * period + at + rem, events)
                    heapq.heappush(slot_free, (at + rem, slot))
                else:
                    running.append((cell, rem - run))
                    heapq.heappush(slot_free, (period, slot))
            running = list(resumable) + running  # jobs that found no GPU this period stay paused, oldest first
        # sampling: a fluid pool of g_s GPUs
        used_s = search.sample(g_s * period) if g_s > 0 else 0.0
        if isinstance(search, _OneShotSearch):
            search.refresh((k + 1) * period, events)

        # energy and carbon: each GPU busy from the period start for its busy time, then idle,
        # charged at its own zone's intensity
        p_s, p_e, p_i = cfg.sampling_power_w, cfg.evaluation_power_w, cfg.idle_power_w
        total_ci = [tr.integral_s(t0, t0 + period) for tr in zones]
        e_j = 0.0
        c_gs = 0.0  # W · g/kWh · s
        for b, z in zip(busy_eval, eval_zone, strict=True):
            ci_busy = zones[z].integral_s(t0, t0 + b)
            e_j += p_e * b + p_i * (period - b)
            c_gs += p_e * ci_busy + p_i * (total_ci[z] - ci_busy)
        b = used_s / g_s if g_s > 0 else 0.0
        for z, g in enumerate(samp_per_zone):
            if g == 0:
                continue
            ci_busy = zones[z].integral_s(t0, t0 + b)
            e_j += g * (p_s * b + p_i * (period - b))
            c_gs += g * (p_s * ci_busy + p_i * (total_ci[z] - ci_busy))
        energy_j += e_j
        carbon_g += c_gs / J_PER_KWH

        series["hv"].append(search.hv())
        series["c"].append(carbon_g / 1000.0)
        series["e"].append(energy_j / J_PER_KWH)
        series["ev"].append(search.n_eval)
        series["s"].append(search.n_samples)
        series["gs"].append(g_s)
        series["ci"].append(ci_now)

    return RunResult(
        method=method,
        seed=seed,
        start_s=start,
        hv=search.hv(),
        carbon_kg=carbon_g / 1000.0,
        energy_kwh=energy_j / J_PER_KWH,
        evaluations=search.n_eval,
        samples=search.n_samples,
        time_h=np.arange(1, n + 1, dtype=np.float64) * (period / 3600.0),
        hv_series=np.asarray(series["hv"]),
        carbon_kg_series=np.asarray(series["c"]),
        energy_kwh_series=np.asarray(series["e"]),
        evaluations_series=np.asarray(series["ev"], dtype=np.int64),
        samples_series=np.asarray(series["s"], dtype=np.int64),
        gpus_sampling_series=np.asarray(series["gs"], dtype=np.int64),
        intensity_series=np.asarray(series["ci"]),
        hv_events=events,
        front_cells=search.front_cells(),
    )


def _decide(
    method: str, policy: Policy | None, t_s: float, ci: float, trace: Trace, whole: IntensitySeries, gpus: int
) -> Split:
    if method == "vanilla":
        return Split(0, gpus, 0.0, "vanilla: every GPU evaluates")
    if method == "oneshot":
        return Split(gpus, 0, 1.0, "one-shot: every GPU samples")
    assert policy is not None
    # Only the oracle may see the future; every other policy gets the past (time <= now) only, and
    # the forecast policy a perfect-foresight forecast of the next 24 h taken from the trace.
    past = whole.upto(t_s)
    history = whole if policy.name == "oracle" else past
    forecast = whole if policy.name == "forecast" else None
    return policy.decide(t_s, ci, history, forecast, gpus)


# --- many seeds, many methods ----------------------------------------------------------------


TraceArg: TypeAlias = Trace | Sequence[Trace]


def _zones(trace: TraceArg) -> list[Trace]:
    return [trace] if isinstance(trace, Trace) else list(trace)


def _run_one(args: tuple[str, TraceArg, str | None, int, SimConfig]) -> RunResult:
    from jouled.scheduler.space import load_benchmark

    method, trace, data_dir, seed, cfg = args
    return simulate(method, trace, load_benchmark(data_dir), seed, cfg)


def run_many(
    methods: Sequence[str],
    trace: TraceArg,
    bench: Benchmark,
    seeds: Sequence[int],
    cfg: SimConfig,
    jobs: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[RunResult]]:
    """Every (method, seed); jobs > 1 runs them in worker processes (results identical to jobs = 1).
    `on_progress(done, total)` is called as each run finishes (in completion order with workers)."""
    tasks = [(m, trace, bench.source_dir, s, cfg) for m in methods for s in seeds]
    report = on_progress or (lambda done, total: None)
    report(0, len(tasks))
    results: list[RunResult]
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_run_one, t) for t in tasks]
            index = {f: i for i, f in enumerate(futures)}
            slots: list[RunResult | None] = [None] * len(tasks)
            for done, f in enumerate(as_completed(futures), start=1):
                slots[index[f]] = f.result()
                report(done, len(tasks))
            results = [r for r in slots if r is not None]  # task order, as pool.map gave
    else:
        results = []
        for m, _, _, s, _ in tasks:
            results.append(simulate(m, trace, bench, s, cfg))
            report(len(results), len(tasks))
    out: dict[str, list[RunResult]] = {m: [] for m in methods}
    for r in results:
        out[r.method].append(r)
    return out


def _stat(values: Sequence[float]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def summarize(runs: dict[str, list[RunResult]], trace: TraceArg, cfg: SimConfig) -> list[dict[str, Any]]:
    """One object per method (DESIGN.md Interfaces) plus paired, per-seed comparisons:
    HV at equal carbon (each method's HV when its cumulative carbon reached the final carbon of
    CE-NAS on that seed, or of the least-carbon method when cenas did not run) and the carbon
    spent to reach 99 % of vanilla's final HV (when vanilla ran)."""
    methods = list(runs)
    ref_method = "cenas" if "cenas" in runs else None
    by_seed: dict[int, dict[str, RunResult]] = {}
    for m in methods:
        for r in runs[m]:
            by_seed.setdefault(r.seed, {})[m] = r
    out: list[dict[str, Any]] = []
    for m in methods:
        rs = runs[m]
        hv_eq: list[float] = []
        c99: list[float] = []
        for r in rs:
            peers = by_seed[r.seed]
            budget = peers[ref_method].carbon_kg if ref_method else min(p.carbon_kg for p in peers.values())
            hv_eq.append(r.hv_at(r.time_at_carbon(budget)))
            if "vanilla" in peers:
                t = r.time_to_hv(0.99 * peers["vanilla"].hv)
                c99.append(r.carbon_at(t) if math.isfinite(t) else math.inf)
        obj: dict[str, Any] = {
            "method": m,
            "seeds": len(rs),
            "trace": " + ".join(tr.path for tr in _zones(trace)),
            "gpus": cfg.gpus * len(_zones(trace)),
            "hours": cfg.hours,
            "hv": _stat([r.hv for r in rs]),
            "carbon_kg": _stat([r.carbon_kg for r in rs]),
            "energy_kwh": _stat([r.energy_kwh for r in rs]),
            "evaluations": _stat([float(r.evaluations) for r in rs]),
            "samples": _stat([float(r.samples) for r in rs]),
            "hv_at_equal_carbon": _stat(hv_eq),
            "equal_carbon_reference": ref_method or "least-carbon method per seed",
        }
        if c99:
            obj["carbon_kg_to_99pct_vanilla_hv"] = _stat(c99)
            obj["reached_99pct_vanilla_hv"] = sum(1 for c in c99 if math.isfinite(c))
        out.append(obj)
    return out


def report(runs: dict[str, list[RunResult]], trace: TraceArg, cfg: SimConfig) -> list[dict[str, Any]]:
    """The JSON of `jouled nas simulate --format json`: one object per method (DESIGN.md Interfaces),
    each also naming the HV reference point, the objectives and the simulation settings."""
    common: dict[str, Any] = {
        "hv_ref_point": list(cfg.ref_point),
        "objectives": [f"maximise {ACCURACY_NAME}", f"minimise {ENERGY_NAME}"],
        "trace_column": _zones(trace)[0].column,
        "zones": [{"trace": tr.path, "zone": tr.zone, "gpus": cfg.gpus} for tr in _zones(trace)],
        "power_w": {"sampling": cfg.sampling_power_w, "evaluation": cfg.evaluation_power_w, "idle": cfg.idle_power_w},
        "estimate": cfg.estimate,
        "decision_period_s": cfg.decision_period_s,
    }
    return [{**m, **common} for m in summarize(runs, trace, cfg)]


def series_json(runs: dict[str, list[RunResult]]) -> dict[str, Any]:
    """HV-vs-time and carbon-vs-time series of every run (for --series-out)."""
    return {
        m: [
            {
                "seed": r.seed,
                "start_s": r.start_s,
                "time_h": r.time_h.tolist(),
                "hv": r.hv_series.tolist(),
                "carbon_kg": r.carbon_kg_series.tolist(),
                "energy_kwh": r.energy_kwh_series.tolist(),
                "evaluations": r.evaluations_series.tolist(),
                "samples": r.samples_series.tolist(),
                "gpus_sampling": r.gpus_sampling_series.tolist(),
                "intensity_g_per_kwh": r.intensity_series.tolist(),
                "front_cells": r.front_cells,
            }
            for r in rs
        ]
        for m, rs in runs.items()
    }
