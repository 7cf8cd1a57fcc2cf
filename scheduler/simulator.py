"""Trace-driven CE-NAS simulator: a virtual clock over a carbon trace, G GPUs per zone given hourly to one-shot
sampling, full-training evaluation, or released; LaMOO search on the NAS-Bench-201 tables.

Methods (`ALL_METHODS`):
- `vanilla`: LaMOO told TRUE results; every GPU trains, every hour.
- `cenas` (jouled's carbon-aware method): truth-fed search — evaluation GPUs train the cells a LaMOO fitted on
  TRUE results picks (its first `prior_evals` trainings, before its tree exists, are the best one-shot
  estimates: the prior where no truth exists; inside the region it picks, cells come in a seeded random order —
  ordering them by their one-shot estimates took 2.5–5× as many trainings to the 0.1 % target) — under the
  clean-hour policy paced over `--hours`: GPUs work while the known intensity is at or below the percentile of
  the trailing `clean_window_h` that leaves half of the search's hours worked by its end, sampling first
  (supernet, then scoring the space) and evaluating after; in dirty hours they are released (0 W,
  `released_power_w`) and running trainings checkpoint.
- `cenas-seed`: the seed's published design — λs split by the trailing-window heuristic, evaluation of the
  sampled cells that rank best on the one-shot ESTIMATES; LaMOO never hears a true result.
- `static` (λs 0.5), `random`, `oracle` (λs over the whole trace: future knowledge), `forecast` (seasonal-naive
  day-ahead forecast built from known history only), `forecast-oracle` (the trace's future as the forecast):
  GPU splits over the truth-fed search; a sampling GPU with nothing to score idles at `idle_power_w`.
- `oneshot`: every GPU samples; its front is the estimated Pareto front judged by TRUE objectives.

Honest accounting: the hour's intensity is known `intensity_latency_s` after it began (the decision at t sees
the value in force at t − latency and history up to then, except the two oracles); the supernet is trained
before any sampling (`supernet_s` GPU-seconds at sampling power); a training that waits without a GPU pays
`checkpoint_s` GPU-seconds (save + restore, evaluation power) when it resumes; every GPU-second is charged —
busy at its power, idle at `idle_power_w`, released at `released_power_w` — times the intensity in force at that
instant (work is packed at the start of each period, so the integral is exact for that schedule).
Hypervolume counts TRULY evaluated cells only (true accuracy vs `hwnas_fpga_energy_mj_derived`).
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

from jouled.carbon.series import J_PER_KWH
from jouled.carbon.trace import Trace
from jouled.errors import UserError
from jouled.scheduler.hypervolume import (
    CENAS_REF_POINT,
    ParetoArchive,
    hypervolume_2d,
    nondominated_ranks,
    pareto_mask,
)
from jouled.scheduler.lamoo import TRUTH_CP_FRACTION, TRUTH_MAX_HEIGHT, TRUTH_MIN_LEAF, LaMOO, LaMOOConfig, truth_config
from jouled.scheduler.policies import (
    CLEAN_PERCENTILE,
    CLEAN_WINDOW_H,
    STALL_GAIN_PCT,
    STALL_TRAININGS,
    CleanHourPolicy,
    Policy,
    Split,
    clean_spec,
    make_policy,
    place,
    seasonal_naive,
)
from jouled.scheduler.space import ACCURACY_NAME, ENERGY_NAME, Benchmark

FloatArray = npt.NDArray[np.float64]

ALL_METHODS: tuple[str, ...] = (
    "vanilla", "cenas", "cenas-seed", "static", "random", "oneshot", "oracle", "forecast", "forecast-oracle",
)
METHOD_HELP = (
    "vanilla (LaMOO on true results, every GPU trains), cenas (truth-fed search, clean hours), cenas-seed (the "
    "seed's λs split, evaluation by one-shot estimates), oneshot (every GPU samples), or a GPU split over the "
    "truth-fed search: static (0.5), static:<F>, random, oracle, forecast, forecast-oracle, threshold:<P>, clean:<P>[:<late P>]"
)
TARGET_LOSS_PCT: tuple[float, ...] = (0.1, 0.05)
HV_AT_CARBON_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)  # of vanilla's mean 168-h carbon


@dataclass(frozen=True)
class MethodSpec:
    """How a method name maps onto a search ("vanilla" | "truth" | "seed" | "oneshot") and a policy spec."""

    search: str
    policy: str | None = None
    foresight: bool = False  # forecast-oracle: the trace's future is the forecast


def method_spec(
    method: str, clean_percentile: float = CLEAN_PERCENTILE, late_percentile: float | None = None,
) -> MethodSpec:
    """The search and policy behind a method name; UserError for an unknown one."""
    m = method.strip().lower()
    fixed = {
        "vanilla": MethodSpec("vanilla"),
        "oneshot": MethodSpec("oneshot"),
        "cenas": MethodSpec("truth", clean_spec(clean_percentile, late_percentile)),
        "cenas-seed": MethodSpec("seed", "cenas"),
        "static": MethodSpec("truth", "static:0.5"),
        "forecast-oracle": MethodSpec("truth", "forecast", foresight=True),
    }
    if m in fixed:
        return fixed[m]
    try:
        make_policy(m, 0)
    except UserError:
        raise UserError(f"--method {method!r}: unknown — use all or one of: {METHOD_HELP}") from None
    return MethodSpec("truth", m)


@dataclass(frozen=True)
class SimConfig:
    """What one simulated search looks like; powers come from config [nas]."""

    gpus: int = 8
    hours: float = 168.0
    decision_period_s: float = 3600.0
    window_h: float = 24.0
    sampling_power_w: float = 250.0
    evaluation_power_w: float = 300.0
    idle_power_w: float = 50.0  # a GPU kept but without work
    released_power_w: float = 0.0  # a GPU given back (cenas in dirty hours): not ours, not charged
    intensity_latency_s: float = 3600.0  # the hour's intensity is known once the hour is over
    checkpoint_s: float = 60.0  # save + restore of a paused training, GPU-seconds at evaluation power
    supernet_epochs: float = 250.0  # one-shot supernet training, in epochs of the slowest cell (see supernet_s)
    clean_percentile: float = CLEAN_PERCENTILE
    late_percentile: float | None = None  # cenas's stall rule (policies.CleanHourPolicy, clean:P:LATE); None: off
    clean_window_h: float = CLEAN_WINDOW_H  # the clean-hour policy's trailing window (window_h: the λs heuristic's)
    pace: bool = True  # the clean-hour policy works clean_percentile % of the search's hours by its end
    # truth mode's trainer: UCB's exploration weight Cp as a fraction of the max HV. CE-NAS's 10 % (vanilla
    # keeps it) dwarfs the HV differences between regions (~1 %), so its LaMOO explores almost uniformly; a
    # smaller Cp exploits the good regions and reaches the front in fewer trainings.
    truth_cp_fraction: float = TRUTH_CP_FRACTION
    truth_max_height: int = TRUTH_MAX_HEIGHT  # ... and its tree: deeper, smaller leaves than CE-NAS's 3 / 10
    truth_min_leaf: int = TRUTH_MIN_LEAF
    prior_evals: int = 20  # truth mode: trainings taken from the one-shot front before the trainer's tree exists
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

    def supernet_s(self, bench: Benchmark) -> float:
        """GPU-seconds to train the supernet: `supernet_epochs` epochs of the slowest cell (its full training
        is 200 epochs), an upper bound on a single-path supernet step."""
        return self.supernet_epochs * float(bench.train_time_s.max()) / 200.0


GPU_S_KINDS: tuple[str, ...] = ("sampling", "evaluation", "checkpoint", "idle", "released")


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
    intensity_series: FloatArray  # the intensity the decision was taken on (known at the time)
    hv_events: list[tuple[float, float]]  # (seconds since start, HV) whenever HV rose
    front_cells: list[int]
    gpus_evaluation_series: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gpus_released_series: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    actual_intensity_series: FloatArray = field(default_factory=lambda: np.zeros(0))  # mean over each period
    gpu_s: dict[str, float] = field(default_factory=dict)  # GPU-seconds by GPU_S_KINDS (checkpoint ⊂ evaluation)
    pauses: int = 0
    gpus_total: int = 0
    hv_max: float = 0.0  # the whole space's true maximum HV at the reference point

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
    """The search state shared by all methods: what was sampled, what was evaluated, the true front.

    mode "vanilla": one LaMOO told TRUE results picks every training; no sampling.
    mode "truth": the space is scored in a seeded order; a second LaMOO told TRUE results picks the trainings
      (after `prior_evals` taken from the best one-shot layer, the prior), in its own seeded order inside a leaf.
    mode "seed": the seed's design — LaMOO hears estimates only; trainings take the sampled cells that rank
      best on the estimates (non-dominated layer), finished ones are only excluded.
    """

    def __init__(self, bench: Benchmark, seed: int, cfg: SimConfig, *, mode: str) -> None:
        self.bench = bench
        self.cfg = cfg
        self.mode = mode
        self.true_obj = bench.true_objectives()
        self.est_obj = bench.estimated_objectives(estimate=cfg.estimate)
        self.lamoo = LaMOO(bench.features(), cfg.ref_point, seed=seed, config=cfg.lamoo)  # sampling (estimates)
        # the LaMOO that picks trainings: told true results (vanilla, truth) — or none (seed: the queue decides)
        self.trainer: LaMOO | None = None
        if mode == "vanilla":
            self.trainer = self.lamoo
        elif mode == "truth":
            tuned = truth_config(cfg.lamoo, cp_fraction=cfg.truth_cp_fraction, max_height=cfg.truth_max_height,
                                 min_leaf=cfg.truth_min_leaf)
            self.trainer = LaMOO(bench.features(), cfg.ref_point, seed=seed + 7919, config=tuned)
        self.archive = ParetoArchive(cfg.ref_point)
        self.evaluated = np.zeros(bench.n, dtype=bool)
        self.claimed = np.zeros(bench.n, dtype=bool)  # evaluated or being trained
        self.sampled = np.zeros(bench.n, dtype=bool)
        self.visible = np.zeros(bench.n, dtype=bool)  # sampled before the current period
        self.n_eval = 0
        self.n_claimed = 0
        self.n_samples = 0
        self.supernet_left_s = 0.0 if mode == "vanilla" else cfg.supernet_s(bench)
        self._to_score: deque[int] = deque()
        self._partial_sample_s = 0.0  # work already done on _to_score[0]
        self._queue: list[int] = []
        self._queue_built_on = -1
        self._perm = np.random.default_rng([seed, 1]).permutation(bench.n)
        self._perm_at = 0

    # sampling -----------------------------------------------------------------------------
    def sampling_left_s(self) -> float:
        """GPU-seconds of sampling work left: the supernet, then every cell neither scored nor claimed."""
        if self.mode == "vanilla":
            return 0.0
        left = self.bench.sample_time_s[~self.sampled & ~self.claimed].sum() - self._partial_sample_s
        return self.supernet_left_s + max(0.0, float(left))

    def sample(self, budget_s: float) -> float:
        """Train the supernet, then score proposals, for up to budget_s GPU-seconds; returns GPU-seconds used."""
        used = min(budget_s, self.supernet_left_s)
        self.supernet_left_s -= used
        if self.supernet_left_s > 1e-9:
            return used
        self.supernet_left_s = 0.0
        cost = self.bench.sample_time_s
        mean_cost = float(cost.mean())
        done: list[int] = []
        while used < budget_s - 1e-9:
            if not self._to_score:
                if done:  # let LaMOO see this batch before it proposes the next
                    self._tell_samples(done)
                    done = []
                n = min(self.cfg.sample_batch, max(1, math.ceil((budget_s - used) / mean_cost)))
                asked = self._ask_sample(n)
                if not asked:
                    break  # every cell proposed: the sampling GPUs idle
                self._to_score.extend(asked)
            cell = self._to_score[0]
            if self.claimed[cell]:  # trained meanwhile: its truth is known, no need to estimate it
                self._to_score.popleft()
                self._partial_sample_s = 0.0
                continue
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

    def _ask_sample(self, n: int) -> list[int]:
        """The next cells to score: LaMOO over the estimates (seed, oneshot) — in truth mode its estimates
        only serve the prior, so the space is scored in a seeded random order (no refits to pay for)."""
        if self.mode != "truth":
            return self.lamoo.ask(n)
        out: list[int] = []
        while len(out) < n and self._perm_at < len(self._perm):
            c = int(self._perm[self._perm_at])
            self._perm_at += 1
            if not self.claimed[c]:
                out.append(c)
        return out

    def _tell_samples(self, cells: list[int]) -> None:
        idx = np.asarray(cells, dtype=np.int64)
        self.sampled[idx] = True
        self.n_samples += len(cells)
        if self.mode == "seed":
            self.lamoo.tell(idx, self.est_obj[idx])

    def publish_samples(self) -> None:
        """Samples scored so far become visible to evaluation (called at each period start)."""
        self.visible |= self.sampled

    # evaluation ---------------------------------------------------------------------------
    def next_job(self) -> int:
        """The next cell to train fully; -1 when nothing is left."""
        # the prior where no truth exists: until the trainer has prior_evals results (its tree needs
        # 2 x min_leaf), truth mode trains the best estimated cells, as the seed's design does throughout
        warm = self.mode == "truth" and self.n_claimed < self.cfg.prior_evals
        if self.trainer is None or warm:  # best estimated layer of the visible samples first
            n_visible = int(self.visible.sum())
            if n_visible != self._queue_built_on:
                self._rebuild_queue()
                self._queue_built_on = n_visible
            while self._queue:
                c = self._queue.pop()
                if not self.claimed[c]:
                    self.claimed[c] = True
                    self.n_claimed += 1
                    if self.trainer is not None:
                        self.trainer.exclude([c])  # claimed here: the trainer hears its truth when done
                    return c
        source = self.trainer or self.lamoo
        while True:
            got = source.ask(1)
            if not got:
                return -1
            c = got[0]
            if not self.claimed[c]:
                self.claimed[c] = True
                self.n_claimed += 1
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
        if self.trainer is not None:
            self.trainer.tell([cell], self.true_obj[cell][None, :])
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
        super().__init__(bench, seed, cfg, mode="seed")
        self._refreshed_at = 0
        self._hv = 0.0
        self._front: list[int] = []

    def refresh(self, t_s: float, events: list[tuple[float, float]]) -> None:
        if self.n_samples == self._refreshed_at:
            return  # nothing new scored: same estimated front
        self._refreshed_at = self.n_samples
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


def space_hv_max(bench: Benchmark, ref: Sequence[float] = CENAS_REF_POINT) -> float:
    """The true maximum hypervolume of the whole space (every cell evaluated) at the reference point."""
    return hypervolume_2d(bench.true_objectives(), ref)


def hv_loss_pct(hv: float, hv_max: float) -> float:
    """How far below the space's maximum HV, in % of it."""
    return (hv_max - hv) / hv_max * 100.0 if hv_max > 0 else math.nan


def to_target(run: RunResult, loss_pct: float) -> tuple[float, float]:
    """(carbon kg, hours) until the run's evaluated front is within loss_pct % of hv_max; (inf, inf) if never.

    The time is the instant the training that closed the gap finished; the carbon is the cumulative carbon
    then (linear within its period)."""
    t = run.time_to_hv(run.hv_max * (1.0 - loss_pct / 100.0) - 1e-9)
    if not math.isfinite(t):
        return math.inf, math.inf
    return run.carbon_at(t), t / 3600.0


# --- the simulation loop ----------------------------------------------------------------------


def start_time_s(trace: Trace, seed: int, cfg: SimConfig) -> float:
    """Each seed starts at its own point of the trace (a seeded draw among the points that leave room,
    including the latency and window of history the decisions need before the start)."""
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


@dataclass
class _Alloc:
    """One period's GPUs per zone."""

    sampling: list[int]
    evaluation_zone: list[int]  # the zone index of each evaluation GPU
    released: list[int]
    decided_on: float  # the intensity the decision used
    worked_share: float = 1.0  # the share of the zones a clean-hour policy let work this period (its pace's input)


def _allocate(
    spec: MethodSpec,
    policy: Policy | None,
    search: _Search,
    t0: float,
    zones: list[Trace],
    names: list[str],
    decide_on: Trace,
    cfg: SimConfig,
) -> _Alloc:
    """Who does what this period, from what was known at t0 (the oracles excepted)."""
    per = cfg.gpus
    known_t = t0 - cfg.intensity_latency_s
    ci_known = [tr.at(known_t) for tr in zones]
    worked = 1.0
    if isinstance(policy, CleanHourPolicy):
        # every zone's known history pooled: the cleanest zones qualify most often
        limit = policy.threshold(known_t, [tr.upto(known_t) for tr in zones])
        working = [c <= limit for c in ci_known]
        worked = sum(working) / len(working)
        g_work = per * sum(working)
        left = search.sampling_left_s()
        g_s = min(g_work, math.ceil(left / cfg.decision_period_s - 1e-9)) if left > 0 else 0
        placed = place({z: (per if w else 0, c) for z, w, c in zip(names, working, ci_known, strict=True)}, g_work - g_s)
        sampling = [per - placed[z] if w else 0 for z, w in zip(names, working, strict=True)]
        released = [0 if w else per for w in working]
        best = min(ci_known)
    else:
        G = per * len(zones)
        if spec.search == "vanilla":
            split = Split(0, G, 0.0)
        elif spec.search == "oneshot":
            split = Split(G, 0, 1.0)
        else:
            assert policy is not None
            split = _decide(policy, spec, t0, decide_on, cfg, G)
        placed = place({z: (per, c) for z, c in zip(names, ci_known, strict=True)}, split.gpus_evaluation)
        sampling = [per - placed[z] for z in names]
        released = [0] * len(zones)
        best = decide_on.at(t0) if policy is not None and policy.name == "oracle" else decide_on.at(known_t)
    eval_zone = [i for i, z in enumerate(names) for _ in range(placed[z])]
    return _Alloc(sampling, eval_zone, released, best, worked)


def _decide(policy: Policy, spec: MethodSpec, t0: float, whole: Trace, cfg: SimConfig, gpus: int) -> Split:
    """A split policy's decision. Only the oracles see past the known history: `oracle` the whole trace (as the
    public CE-NAS code), `forecast-oracle` the true next 24 h; `forecast` gets a seasonal-naive forecast built
    from the known history; every other policy the known history only."""
    if policy.name == "oracle":
        return policy.decide(t0, whole.at(t0), whole, None, gpus)
    if spec.foresight:
        return policy.decide(t0, whole.at(t0), whole.upto(t0), whole, gpus)
    known_t = t0 - cfg.intensity_latency_s
    past = whole.upto(known_t)
    forecast = seasonal_naive(past, known_t) if policy.name == "forecast" else None
    return policy.decide(known_t, whole.at(known_t), past, forecast, gpus)


def simulate(
    method: str, trace: Trace | Sequence[Trace], bench: Benchmark, seed: int, cfg: SimConfig | None = None
) -> RunResult:
    """Run one method for cfg.hours from this seed's start point; deterministic per (method, trace, seed).

    Several traces = several zones with cfg.gpus GPUs each: evaluation GPUs are placed in the cleanest
    zones first (policies.place, on the known intensities) and the remaining GPUs sample; checkpointed
    trainings may resume in any zone. A split policy decides on the cleanest zone's intensity; `cenas`
    decides zone by zone (a zone works while it is below the pooled trailing percentile).
    """
    cfg = cfg or SimConfig()
    if cfg.gpus < 1:
        raise UserError(f"--gpus {cfg.gpus}: need at least one GPU — pass --gpus 1 or more")
    zones = [trace] if isinstance(trace, Trace) else list(trace)
    if not zones:
        raise UserError("no trace given — pass --trace FILE (repeat it for several zones)")
    spec = method_spec(method, cfg.clean_percentile, cfg.late_percentile)
    decide_on = zones[0] if len(zones) == 1 else combine_zones(zones)
    names = _zone_names(zones)
    policy = (
        make_policy(spec.policy, seed, window_s=cfg.window_h * 3600.0, clean_window_s=cfg.clean_window_h * 3600.0)
        if spec.policy else None
    )
    if isinstance(policy, CleanHourPolicy) and cfg.pace:
        policy.pace_over(cfg.horizon_s)
    start = start_time_s(decide_on, seed, cfg)
    search: _Search = (
        _OneShotSearch(bench, seed, cfg) if spec.search == "oneshot" else _Search(bench, seed, cfg, mode=spec.search)
    )
    period = cfg.decision_period_s
    G = cfg.gpus * len(zones)
    n = cfg.steps
    train_s = bench.train_time_s
    running: list[tuple[int, float, bool]] = []  # (cell, remaining GPU-seconds, paused), oldest first
    events: list[tuple[float, float]] = []
    carbon_g = 0.0
    energy_j = 0.0
    gpu_s = dict.fromkeys(GPU_S_KINDS, 0.0)
    pauses = 0
    series: dict[str, list[float]] = {k: [] for k in ("hv", "c", "e", "ev", "s", "gs", "ge", "gr", "ci", "ca")}
    p_s, p_e, p_i, p_r = cfg.sampling_power_w, cfg.evaluation_power_w, cfg.idle_power_w, cfg.released_power_w

    for k in range(n):
        t0 = start + k * period
        search.publish_samples()
        alloc = _allocate(spec, policy, search, t0, zones, names, decide_on, cfg)
        if isinstance(policy, CleanHourPolicy):
            policy.observe_period(alloc.worked_share, period)  # the pace's view of the work done
        g_e = len(alloc.evaluation_zone)
        g_s = sum(alloc.sampling)

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
                    cell, rem, paused = resumable.popleft()
                    if paused:  # restore the checkpoint (its save is charged here too)
                        rem += cfg.checkpoint_s
                        gpu_s["checkpoint"] += cfg.checkpoint_s
                else:
                    cell = search.next_job()
                    if cell < 0:
                        busy_eval[slot] = at  # nothing to train: idle for the rest of the period
                        continue
                    rem = float(train_s[cell])
                run = min(rem, period - at)
                if run >= rem - 1e-9:
                    search.finish(cell, k * period + at + rem, events)
                    if isinstance(policy, CleanHourPolicy):
                        policy.observe_training(search.hv())  # the policy's one view of progress: its own front
                    heapq.heappush(slot_free, (at + rem, slot))
                else:
                    running.append((cell, rem - run, False))
                    heapq.heappush(slot_free, (period, slot))
            waiting = [(c, r, True) for c, r, _ in resumable]  # no GPU this period: checkpointed, paused
            running = waiting + running  # oldest first
        else:
            running = [(c, r, True) for c, r, _ in running]
        pauses += sum(1 for _, _, p in running if p)
        # sampling: a fluid pool of g_s GPUs
        used_s = search.sample(g_s * period) if g_s > 0 else 0.0
        if isinstance(search, _OneShotSearch):
            search.refresh((k + 1) * period, events)

        # energy and carbon: each GPU busy from the period start for its busy time, then idle (or released
        # for the whole period), charged at its own zone's intensity
        total_ci = [tr.integral_s(t0, t0 + period) for tr in zones]
        e_j = 0.0
        c_gs = 0.0  # W · g/kWh · s
        for b, z in zip(busy_eval, alloc.evaluation_zone, strict=True):
            ci_busy = zones[z].integral_s(t0, t0 + b)
            e_j += p_e * b + p_i * (period - b)
            c_gs += p_e * ci_busy + p_i * (total_ci[z] - ci_busy)
            gpu_s["evaluation"] += b
            gpu_s["idle"] += period - b
        b = used_s / g_s if g_s > 0 else 0.0
        for z, g in enumerate(alloc.sampling):
            if g == 0:
                continue
            ci_busy = zones[z].integral_s(t0, t0 + b)
            e_j += g * (p_s * b + p_i * (period - b))
            c_gs += g * (p_s * ci_busy + p_i * (total_ci[z] - ci_busy))
            gpu_s["sampling"] += g * b
            gpu_s["idle"] += g * (period - b)
        for z, g in enumerate(alloc.released):
            e_j += g * p_r * period
            c_gs += g * p_r * total_ci[z]
            gpu_s["released"] += g * period
        energy_j += e_j
        carbon_g += c_gs / J_PER_KWH

        series["hv"].append(search.hv())
        series["c"].append(carbon_g / 1000.0)
        series["e"].append(energy_j / J_PER_KWH)
        series["ev"].append(search.n_eval)
        series["s"].append(search.n_samples)
        series["gs"].append(g_s)
        series["ge"].append(g_e)
        series["gr"].append(sum(alloc.released))
        series["ci"].append(alloc.decided_on)
        series["ca"].append(min(t / period for t in total_ci))

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
        gpus_evaluation_series=np.asarray(series["ge"], dtype=np.int64),
        gpus_released_series=np.asarray(series["gr"], dtype=np.int64),
        actual_intensity_series=np.asarray(series["ca"]),
        gpu_s=gpu_s,
        pauses=pauses,
        gpus_total=G,
        hv_max=space_hv_max(bench, cfg.ref_point),
    )


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
    budgets = carbon_budgets_kg(runs)
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
        obj.update(_honest_metrics(rs, by_seed, budgets))
        out.append(obj)
    return out


def carbon_budgets_kg(runs: dict[str, list[RunResult]]) -> list[float]:
    """The fixed budgets of hv_at_carbon: fractions of vanilla's mean total carbon (else the largest method's)."""
    base_runs = runs.get("vanilla") or max(runs.values(), key=lambda rs: float(np.mean([r.carbon_kg for r in rs])))
    base = float(np.mean([r.carbon_kg for r in base_runs]))
    return [round(f * base, 3) for f in HV_AT_CARBON_FRACTIONS]


def _honest_metrics(
    rs: list[RunResult], by_seed: dict[int, dict[str, RunResult]], budgets: list[float]
) -> dict[str, Any]:
    """hv_max, hv_loss_pct, to_target (the headline), hv_at_carbon, equal-time ratio, GPU-hours by use."""
    hv_max = rs[0].hv_max
    targets: list[dict[str, Any]] = []
    for lp in TARGET_LOSS_PCT:
        got = [to_target(r, lp) for r in rs]
        item: dict[str, Any] = {
            "loss_pct": lp,
            "carbon_kg": _stat([c for c, _ in got]),
            "hours": _stat([h for _, h in got]),
            "reached": sum(1 for c, _ in got if math.isfinite(c)),
        }
        ratios = []
        for r, (c, _) in zip(rs, got, strict=True):
            van = by_seed[r.seed].get("vanilla")
            if van is not None and math.isfinite(c) and c > 0:
                cv, _ = to_target(van, lp)
                if math.isfinite(cv):
                    ratios.append(cv / c)
        if any("vanilla" in by_seed[r.seed] for r in rs):
            item["carbon_ratio_vanilla_over_method"] = _stat(ratios)  # paired, seeds where both reached it
        targets.append(item)
    at_carbon = []
    for b in budgets:
        hv_b = [r.hv_at(r.time_at_carbon(b)) if b < r.carbon_kg else r.hv for r in rs]
        at_carbon.append({
            "carbon_kg": b,
            "hv": _stat(hv_b),
            "hv_loss_pct": _stat([hv_loss_pct(h, hv_max) for h in hv_b]),
            "runs_that_spent_less": sum(1 for r in rs if r.carbon_kg <= b),  # their final HV counts
        })
    ratio_eq = [
        by_seed[r.seed]["vanilla"].carbon_kg / r.carbon_kg for r in rs if "vanilla" in by_seed[r.seed] and r.carbon_kg > 0
    ]
    gpu_h = {k: _stat([r.gpu_s.get(k, 0.0) / 3600.0 for r in rs]) for k in GPU_S_KINDS}
    return {
        "hv_max": hv_max,
        "hv_loss_pct": _stat([hv_loss_pct(r.hv, hv_max) for r in rs]),
        "to_target": targets,
        "hv_at_carbon": at_carbon,
        "equal_time": {
            "carbon_ratio_vanilla_over_method": _stat(ratio_eq),
            "hv_loss_pct": _stat([hv_loss_pct(r.hv, hv_max) for r in rs]),
            "evaluations": _stat([float(r.evaluations) for r in rs]),
        },
        "gpu_hours": gpu_h,
        "pauses": _stat([float(r.pauses) for r in rs]),
    }


def report(
    runs: dict[str, list[RunResult]], trace: TraceArg, cfg: SimConfig, bench: Benchmark | None = None
) -> list[dict[str, Any]]:
    """The JSON of `jouled nas simulate --format json`: one object per method (DESIGN.md Interfaces),
    each also naming the HV reference point, the objectives and the simulation settings."""
    common: dict[str, Any] = {
        "hv_ref_point": list(cfg.ref_point),
        "objectives": [f"maximise {ACCURACY_NAME}", f"minimise {ENERGY_NAME}"],
        "trace_column": _zones(trace)[0].column,
        "zones": [{"trace": tr.path, "zone": tr.zone, "gpus": cfg.gpus} for tr in _zones(trace)],
        "power_w": {
            "sampling": cfg.sampling_power_w, "evaluation": cfg.evaluation_power_w, "idle": cfg.idle_power_w,
            "released": cfg.released_power_w,
        },
        "estimate": cfg.estimate,
        "decision_period_s": cfg.decision_period_s,
        "intensity_latency_s": cfg.intensity_latency_s,
        "checkpoint_s": cfg.checkpoint_s,
        "supernet_gpu_h": round(cfg.supernet_s(bench) / 3600.0, 3) if bench is not None else None,
        "clean_percentile": cfg.clean_percentile,
        "late_percentile": cfg.late_percentile,
        "truth_tree": {"cp_fraction": cfg.truth_cp_fraction, "max_height": cfg.truth_max_height,
                       "min_leaf": cfg.truth_min_leaf},
        "clean_window_h": cfg.clean_window_h,
        "paced": cfg.pace,
        "stall": {"trainings": STALL_TRAININGS, "gain_pct": STALL_GAIN_PCT},
        "window_h": cfg.window_h,
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
                "actual_intensity_g_per_kwh": r.actual_intensity_series.tolist(),
                "gpus_evaluation": r.gpus_evaluation_series.tolist(),
                "gpus_released": r.gpus_released_series.tolist(),
                "front_cells": r.front_cells,
            }
            for r in rs
        ]
        for m, rs in runs.items()
    }
