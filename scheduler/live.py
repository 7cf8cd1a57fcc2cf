"""The live carbon-aware search (CE-NAS): intensity → policy → GPU split → sampling and evaluation workers.

Every decision period (on the provider's clock: real time, or a trace on a fast virtual clock)
the loop reads the grid intensity, asks the policy for the split, writes the allocation and
the carbon point to the store, and gives each worker slot a role. Sampling slots run
`SampleJob`s (one-shot supernet scores) that feed a LaMOO over *estimated* objectives
(score, −table energy); evaluation slots train the most promising sampled cells fully
(`EvalJob`) while the daemon measures them, and a second LaMOO is told the TRUE results:
the accuracy reached and the energy the daemon MEASURED for that run (read back from the
store with the `energy epochs` math). An evaluation slot that becomes a sampling slot stops
its job at the next epoch boundary; the checkpoint stays and the job resumes later on any
evaluation slot, so no finished epoch is lost.

Carbon points and allocations are stamped with the wall-clock time of the decision (the time
the daemon's samples carry), holding the intensity of the provider's (possibly virtual) now.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jouled.carbon.base import CarbonProvider, TimeSource
from jouled.carbon.series import IntensitySeries
from jouled.clock import CLOCK
from jouled.config import Config
from jouled.errors import UserError
from jouled.model import Allocation, CarbonPoint
from jouled.scheduler.executors import Executor, Handle, JobEvent
from jouled.scheduler.hypervolume import CENAS_REF_POINT, hypervolume_2d, nondominated_ranks, pareto_mask
from jouled.scheduler.lamoo.optimizer import TRUTH_CP_FRACTION, TRUTH_MAX_HEIGHT, TRUTH_MIN_LEAF, LaMOO, truth_config
from jouled.scheduler.policies import CleanHourPolicy, Policy, Split
from jouled.scheduler.space import Benchmark
from jouled.scheduler.workers import EvalJob, Job, JobResult, SampleJob, WorkerSettings
from jouled.store.sqlite import SqliteStore

log = logging.getLogger("jouled.scheduler.live")
Role = Literal["sampling", "evaluation", "released"]


@dataclass
class LiveConfig:
    """Knobs of one live search; times on the provider's clock unless they say wall."""

    hours: float
    zone: str = ""
    search_id: str = field(default_factory=lambda: f"search-{uuid.uuid4().hex[:8]}")
    decision_period_s: float = 3600.0
    epochs: int = 2
    sample_batch: int = 8
    supernet_epochs: int = 1
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    work_dir: Path = Path(".")
    max_evaluations: int | None = None
    max_wall_s: float | None = None
    energy_objective: Literal["measured", "table"] = "measured"
    poll_s: float = 0.05
    energy_wait_s: float = 8.0  # wall seconds to wait for a finished run's markers to reach the store
    drain_s: float = 60.0  # wall seconds to let running jobs reach a boundary at the end
    seed: int = 0
    # truth-fed choice (as the simulator's cenas): the first prior_evals trainings take the best one-shot
    # estimates (the prior where no truth exists); after that the LaMOO told TRUE results picks them
    prior_evals: int = 20
    truth_cp_fraction: float = TRUTH_CP_FRACTION
    truth_max_height: int = TRUTH_MAX_HEIGHT  # its tree, as the simulator's
    truth_min_leaf: int = TRUTH_MIN_LEAF


@dataclass
class Evaluation:
    cell: int
    arch_str: str
    run_id: str
    checkpoint: str
    epochs_done: int = 0
    accuracy_pct: float | None = None
    slots: list[str] = field(default_factory=list)
    resumes: int = 0
    finished: bool = False
    energy_j: float | None = None  # measured by the daemon (sum of the run's epoch windows)
    energy_by_device_j: dict[str, float] = field(default_factory=dict)
    energy_flags: list[str] = field(default_factory=list)
    carbon_g: float | None = None
    wall_j: float | None = None  # a wall meter's figure for the run's windows, beside energy_j (never in it)
    finished_wall_s: float = 0.0


@dataclass(frozen=True)
class EvaluationEnergy:
    """The measured energy of one evaluation: the query core's run total over its epoch windows."""

    energy_j: float
    energy_by_device_j: dict[str, float]  # the devices of the total, each physical device once
    wall_j: float | None
    carbon_g: float | None
    flags: tuple[str, ...]


def evaluation_energy(store: SqliteStore, config: Config, run_id: str) -> EvaluationEnergy | None:
    """Energy of one evaluation run from the daemon's log (None: nothing measured yet).

    The totals are the query core's (jouled.query.run_totals, chosen by the series' roles): a GPU that NVML and
    nvidia-smi both read counts once; on CPU slots the packages and DRAM count, core/uncore (inside the package)
    do not, and a wall meter is `wall_j`, beside the total. GPU energy belongs to the run's GPUs, so on a host
    with GPUs only the GPU series count; without GPUs the host devices are all there is (flagged `host-wide`).
    """
    from jouled.query import compute_rows, run_totals

    rows, _problems = compute_rows(store, config, run_id, ("epoch",))
    gpu_rows = [r for r in rows if r.get("role") == "gpu"]
    used = gpu_rows or rows
    totals = [t for t in run_totals(used, store) if t["run"] == run_id]
    if not totals or totals[0]["energy_j"] is None:
        return None
    tot = totals[0]
    flags = set(tot["flags"])
    if not gpu_rows:
        flags.add("host-wide")
    by_dev = {k: float(v) for k, v in tot["energy_j_by_device"].items() if k in tot["total_devices"] and v is not None}
    return EvaluationEnergy(float(tot["energy_j"]), by_dev, tot["wall_j"], tot["carbon_g"], tuple(sorted(flags)))


class LiveSearch:
    """One live search over a benchmark's space with a provider, a policy and an executor."""

    def __init__(
        self,
        cfg: LiveConfig,
        provider: CarbonProvider,
        clock: TimeSource,
        policy: Policy,
        executor: Executor,
        bench: Benchmark,
        *,
        store: SqliteStore | None = None,
        config: Config | None = None,
    ) -> None:
        if not (cfg.hours > 0):
            raise UserError(f"--hours {cfg.hours}: must be > 0 — e.g. --hours 24")
        self.cfg = cfg
        self.provider = provider
        self.clock = clock
        self.policy = policy
        self.ex = executor
        self.bench = bench
        self.store = store
        self.config = config or Config()
        features = bench.features()
        self.sampler = LaMOO(features, CENAS_REF_POINT, seed=cfg.seed)
        # the evaluation LaMOO sees (accuracy %, −measured J): its reference point is set on the first result
        self.true_lamoo: LaMOO | None = None
        self._true_told: list[tuple[int, float, float]] = []
        self.est_acc = np.full(bench.n, np.nan)
        self.claimed = np.zeros(bench.n, dtype=bool)
        self.roles: dict[str, Role] = {s: "sampling" for s in executor.slots}
        self.running: dict[str, tuple[Handle, Job]] = {}
        self.stopping: set[str] = set()  # slots asked to stop at a boundary
        self.resume_queue: list[Evaluation] = []
        self.evals: dict[str, Evaluation] = {}  # run_id -> evaluation
        self.to_measure: list[Evaluation] = []
        self.decisions: list[dict[str, Any]] = []
        self.samples = 0
        self.sample_jobs = 0
        # sampling runs (scoring windows, supernet trainings) whose measured energy joins the totals
        self.sample_runs_pending: list[str] = []
        self.sample_energy: dict[str, EvaluationEnergy | None] = {}
        self._trained_supernet: dict[str, bool] = {}
        self.errors: list[str] = []
        self.work = Path(cfg.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.supernet_path = self.work / "supernet.pt"

    # ---------------------------------------------------------------- decisions
    def decide(self, now_s: float) -> Split:
        z = self.cfg.zone
        reading = self.provider.current(z)
        if reading.intensity_g_per_kwh is None:
            raise UserError(f"carbon provider {reading.provider}: gives only an index for zone {z!r} — use another provider")
        intensity = float(reading.intensity_g_per_kwh)
        try:
            history = IntensitySeries.from_points(self.provider.history(z))
        except Exception as e:  # history is optional: CE-NAS falls back to λs = 0.5
            log.info("no history from %s: %s", reading.provider, e)
            history = IntensitySeries.empty()
        try:
            fc: IntensitySeries | None = IntensitySeries.from_points(self.provider.forecast(z))
        except Exception:
            fc = None
        split = self.policy.decide(now_s, intensity, history, fc, len(self.ex.slots))
        if isinstance(self.policy, CleanHourPolicy):
            self.policy.observe_period(1.0 if split.gpus_evaluation > 0 else 0.0, self.cfg.decision_period_s)
            if split.gpus_evaluation > 0:
                split = self._clean_split(split)
        wall_ns = CLOCK.now_ns()
        if self.store is not None:
            self.store.write_carbon([CarbonPoint(wall_ns, reading.zone or z, reading.provider, intensity)])
            self.store.write_allocations([Allocation(wall_ns, self.cfg.search_id, split.gpus_sampling,
                                                     split.gpus_evaluation, split.lambda_s, intensity)])
        self.decisions.append({
            "time_s": now_s, "wall_ns": wall_ns, "intensity_g_per_kwh": intensity,
            "gpus_sampling": split.gpus_sampling, "gpus_evaluation": split.gpus_evaluation,
            "lambda_s": split.lambda_s, "note": split.note,
        })
        self._assign_roles(split.gpus_sampling, split.gpus_evaluation)
        return split

    def _clean_split(self, split: Split) -> Split:
        """A clean hour's working slots (jouled's `cenas`): sampling first, as the simulator's cenas does.

        Until the truth-fed trainer has its prior (prior_evals trainings, picked from the one-shot estimates), half
        the working slots score cells on the supernet, the others train the best estimated ones (a single slot
        scores while nothing scored is left to train, else trains); after that every working slot trains the cells
        the LaMOO told true results picks."""
        n_work = split.gpus_evaluation
        in_prior = len(self.evals) < self.cfg.prior_evals
        if not in_prior:
            n_s = 0
        elif n_work > 1:
            n_s = n_work // 2
        else:  # one slot: it scores until there is something estimated to train, then trains
            n_s = 0 if bool((~np.isnan(self.est_acc) & ~self.claimed).any()) else 1
        note = f"{split.note}; {'sampling for the prior' if n_s else 'truth-fed'}"
        return Split(n_s, n_work - n_s, n_s / n_work, note)

    def _assign_roles(self, n_sampling: int, n_evaluation: int | None = None) -> None:
        """Change as few slots as possible; prefer idle slots, then slots whose job ends soonest (sampling).

        Slots beyond n_sampling + n_evaluation (a clean-hour policy in a dirty hour) are released: they get no
        job, and a training on one stops at its next epoch boundary (checkpoint kept)."""
        slots = list(self.ex.slots)
        n_work = len(slots) if n_evaluation is None else min(len(slots), n_sampling + n_evaluation)
        working = slots[:n_work]
        for s in slots[n_work:]:
            self.roles[s] = "released"
        for s in working:
            if self.roles[s] == "released":
                self.roles[s] = "evaluation"
        sampling = [s for s in working if self.roles[s] == "sampling"]
        evaluation = [s for s in working if self.roles[s] == "evaluation"]

        def cost(slot: str) -> int:
            job = self.running.get(slot)
            return 0 if job is None else (1 if isinstance(job[1], SampleJob) else 2)

        if len(sampling) > n_sampling:
            for s in sorted(sampling, key=cost)[: len(sampling) - n_sampling]:
                self.roles[s] = "evaluation"  # a running sample job is short: let it finish
        elif len(sampling) < n_sampling:
            for s in sorted(evaluation, key=cost)[: n_sampling - len(sampling)]:
                self.roles[s] = "sampling"
        for s, (h, job) in self.running.items():
            if isinstance(job, EvalJob) and self.roles[s] != "evaluation" and s not in self.stopping:
                self.ex.cancel(h, at_epoch_boundary=True)
                self.stopping.add(s)

    # ---------------------------------------------------------------- dispatch
    def _next_eval(self) -> Evaluation | None:
        if self.resume_queue:
            return self.resume_queue.pop(0)
        if self.cfg.max_evaluations is not None and len(self.evals) >= self.cfg.max_evaluations:
            return None
        cand = np.nonzero(~np.isnan(self.est_acc) & ~self.claimed)[0]
        truth_fed = self.true_lamoo is not None and len(self.evals) >= self.cfg.prior_evals
        if truth_fed and self.true_lamoo is not None:
            got = [c for c in self.true_lamoo.ask(4) if not self.claimed[c]]
            if not got:
                return None
            cell = got[0]
        elif len(cand):
            est = np.stack([self.est_acc[cand], -self.bench.energy_mj[cand]], axis=1)
            order = np.lexsort((-est[:, 0], nondominated_ranks(est)))  # best layer, then higher estimate
            cell = int(cand[order[0]])
        else:
            lam = self.true_lamoo or self.sampler
            got = [c for c in lam.ask(4) if not self.claimed[c]]
            if not got:
                return None
            cell = got[0]
        self.claimed[cell] = True
        run_id = f"{self.cfg.search_id}-eval-{cell}"
        ev = Evaluation(cell, self.bench.arch_strs[cell], run_id, str(self.work / f"eval-{cell}.pt"))
        self.evals[run_id] = ev
        return ev

    def _dispatch(self) -> None:
        for slot in self.ex.idle_slots():
            if slot in self.running:
                continue
            job: Job | None = None
            if self.roles[slot] == "released":
                continue
            if self.roles[slot] == "sampling":
                cells = [c for c in self.sampler.ask(self.cfg.sample_batch) if not self.claimed[c]]
                if cells:
                    job = SampleJob(tuple(self.bench.arch_strs[c] for c in cells), str(self.supernet_path),
                                    self.cfg.settings, train_epochs=self.cfg.supernet_epochs,
                                    run_id=f"{self.cfg.search_id}-sample-{self.sample_jobs}")
                    self._trained_supernet[job.run_id] = self.cfg.supernet_epochs > 0
                    self.sample_jobs += 1
            else:
                ev = self._next_eval()
                if ev is not None:
                    job = EvalJob(ev.arch_str, self.cfg.epochs, ev.checkpoint, ev.run_id, self.cfg.settings)
                    ev.slots.append(slot)
            if job is not None:
                self.running[slot] = (self.ex.submit(job, slot), job)

    # ---------------------------------------------------------------- results
    def _on_event(self, e: JobEvent) -> None:
        if e.kind == "started":
            return
        entry = self.running.pop(e.slot, None)
        self.stopping.discard(e.slot)
        job = entry[1] if entry else None
        res = e.result
        if e.kind == "error" or res is None:
            self.errors.append(f"{e.job_id} on {e.slot}: {e.error.splitlines()[0] if e.error else e.kind}")
            if isinstance(job, EvalJob):
                ev = self.evals[job.run_id]
                if e.kind == "cancelled":  # killed: resume from the last checkpoint
                    ev.resumes += 1
                    self.resume_queue.insert(0, ev)
            return
        if res.kind == "sample":
            self._on_sample(res)
        elif res.kind == "eval":
            self._on_eval(res)

    def _on_sample(self, res: JobResult) -> None:
        self.sample_runs_pending.append(res.run_id)
        if self._trained_supernet.pop(res.run_id, False):
            self.sample_runs_pending.append(f"{res.run_id}-train")
        cells = [self.bench.index_of(a) for a in res.scores]
        acc = np.array([res.scores[a] for a in res.scores], dtype=np.float64)
        self.est_acc[cells] = acc
        self.samples += len(cells)
        self.sampler.tell(cells, np.stack([acc, -self.bench.energy_mj[cells]], axis=1))

    def _on_eval(self, res: JobResult) -> None:
        ev = self.evals[res.run_id]
        ev.epochs_done = res.epochs_done
        ev.accuracy_pct = res.accuracy_pct
        if not res.finished:
            ev.resumes += 1
            self.resume_queue.insert(0, ev)  # checkpoint kept: the next evaluation slot resumes it
            return
        ev.finished = True
        ev.finished_wall_s = time.time()
        self.to_measure.append(ev)

    def _measure_ready(self, force: bool = False) -> None:
        """Read the daemon's measured energy of finished runs once their epoch markers are in the store."""
        left: list[Evaluation] = []
        for ev in self.to_measure:
            done = self._measure(ev)
            if done or force or time.time() - ev.finished_wall_s > self.cfg.energy_wait_s:
                if not done:
                    ev.energy_flags.append("unmeasured")
                self._tell_true(ev)
            else:
                left.append(ev)
        self.to_measure = left

    def _measure_samples(self, force: bool = False) -> None:
        """Read the measured energy of finished sampling runs (their scoring window, their supernet training):
        the same query-core totals as evaluations; with `force` the ones still unmeasured are recorded as such."""
        left: list[str] = []
        for rid in self.sample_runs_pending:
            m = self._measure_run(rid, 1)
            if m is not None or force:
                self.sample_energy[rid] = m
            else:
                left.append(rid)
        self.sample_runs_pending = left

    def _measure_run(self, run_id: str, epochs: int) -> EvaluationEnergy | None:
        """A finished run's measured energy once the log holds it whole (None: not yet, or no store)."""
        if self.store is None:
            return None
        from jouled.query import lagging_series

        ends = [m for m in self.store.read_markers(run_id) if m.scope == "epoch" and m.event == "end"]
        if len({m.epoch for m in ends}) < epochs:
            return None
        last = max(ends, key=lambda m: m.time_ns)
        if lagging_series(self.store, last.time_ns, host=last.host):
            return None
        try:
            return evaluation_energy(self.store, self.config, run_id)
        except UserError:
            return None

    def _measure(self, ev: Evaluation) -> bool:
        if self.store is None:
            return False
        markers = self.store.read_markers(ev.run_id)
        end_markers = [m for m in markers if m.scope == "epoch" and m.event == "end"]
        if len({m.epoch for m in end_markers}) < self.cfg.epochs:
            return False
        # the daemon's watermark past the last edge (and the reading after it): the log holds the whole run.
        # None: no daemon logs samples into this store, so waiting cannot bring more
        from jouled.query import lagging_series

        last = max(end_markers, key=lambda m: m.time_ns)
        if lagging_series(self.store, last.time_ns, host=last.host):
            return False
        try:
            m = evaluation_energy(self.store, self.config, ev.run_id)
        except UserError:
            return False
        if m is None:
            return False
        ev.energy_by_device_j = m.energy_by_device_j
        ev.energy_j = m.energy_j
        ev.wall_j = m.wall_j
        ev.carbon_g = m.carbon_g
        ev.energy_flags = list(m.flags)
        return True

    def _tell_true(self, ev: Evaluation) -> None:
        acc = ev.accuracy_pct if ev.accuracy_pct is not None else 0.0
        use_measured = self.cfg.energy_objective == "measured" and ev.energy_j is not None
        energy = float(ev.energy_j) if use_measured and ev.energy_j is not None else float(self.bench.energy_mj[ev.cell])
        self._true_told.append((ev.cell, acc, energy))
        if self.true_lamoo is None:
            # energy in J of the run: a reference point well beyond the first run keeps later runs inside it
            self.true_lamoo = LaMOO(self.bench.features(), (0.0, -10.0 * max(energy, 1e-9)), seed=self.cfg.seed + 1,
                                    config=truth_config(cp_fraction=self.cfg.truth_cp_fraction,
                                                        max_height=self.cfg.truth_max_height,
                                                        min_leaf=self.cfg.truth_min_leaf))
        self.true_lamoo.tell([ev.cell], [[acc, -energy]])
        self.sampler.exclude([ev.cell])
        if isinstance(self.policy, CleanHourPolicy):  # the stall rule's view of progress: the front of true results
            pts = np.array([[a, -e] for _c, a, e in self._true_told])
            self.policy.observe_training(hypervolume_2d(pts, self.true_lamoo.ref))

    # ---------------------------------------------------------------- main loop
    def run(self) -> dict[str, Any]:
        start_s = self.clock.now_s()
        end_s = start_s + self.cfg.hours * 3600.0
        if isinstance(self.policy, CleanHourPolicy):  # cenas: half the search's hours worked by its end (paced)
            self.policy.pace_over(self.cfg.hours * 3600.0)
        wall0 = time.monotonic()
        next_decision = start_s
        while True:
            now = self.clock.now_s()
            if now >= end_s or self._budget_spent(wall0):
                break
            if now >= next_decision:
                self.decide(now)
                self._measure_samples()
                while next_decision <= now:
                    next_decision += self.cfg.decision_period_s
            self._dispatch()
            for e in self.ex.poll(self.cfg.poll_s):
                self._on_event(e)
            self._measure_ready()
        self._drain()
        return self.summary(start_s, self.clock.now_s(), time.monotonic() - wall0)

    def _budget_spent(self, wall0: float) -> bool:
        if self.cfg.max_wall_s is not None and time.monotonic() - wall0 >= self.cfg.max_wall_s:
            return True
        if self.cfg.max_evaluations is not None:
            finished = sum(1 for e in self.evals.values() if e.finished)
            return finished >= self.cfg.max_evaluations
        return False

    def _drain(self) -> None:
        """Stop evaluations at their next epoch boundary (checkpoints kept) and let sampling jobs finish."""
        for s, (h, job) in list(self.running.items()):
            if isinstance(job, EvalJob) and s not in self.stopping:
                self.ex.cancel(h, at_epoch_boundary=True)
                self.stopping.add(s)
        deadline = time.monotonic() + self.cfg.drain_s
        while self.running and time.monotonic() < deadline:
            for e in self.ex.poll(0.1):
                self._on_event(e)
        self.resume_queue.clear()
        deadline = time.monotonic() + self.cfg.energy_wait_s
        while self.to_measure and time.monotonic() < deadline:
            self._measure_ready()
            time.sleep(0.1)
        self._measure_ready(force=True)
        while self.sample_runs_pending and time.monotonic() < deadline + self.cfg.energy_wait_s:
            self._measure_samples()
            time.sleep(0.1)
        self._measure_samples(force=True)

    # ---------------------------------------------------------------- report
    def summary(self, start_s: float, end_s: float, wall_s: float) -> dict[str, Any]:
        done = [e for e in self.evals.values() if e.finished]
        partial = [e for e in self.evals.values() if not e.finished and e.epochs_done > 0]
        rows = [self._eval_row(e) for e in sorted(self.evals.values(), key=lambda e: e.run_id)]
        measured = [e for e in done if e.energy_j is not None]
        front: list[dict[str, Any]] = []
        hv_measured = None
        if measured:
            pts = np.array([[e.accuracy_pct or 0.0, -(e.energy_j or 0.0)] for e in measured])
            mask = pareto_mask(pts)
            front = [self._eval_row(e) for e, k in zip(measured, mask, strict=True) if k]
            ref = self.true_lamoo.ref if self.true_lamoo is not None else (0.0, float(pts[:, 1].min()) * 1.1)
            hv_measured = {"hv": hypervolume_2d(pts, ref), "ref_point": list(ref),
                           "objectives": ["accuracy_pct (eval split, this run)", "-energy_j (measured by the daemon)"]}
        eval_j = float(sum(e.energy_j for e in measured if e.energy_j is not None))
        eval_g = float(sum(e.carbon_g for e in measured if e.carbon_g is not None))
        sampled = [m for m in self.sample_energy.values() if m is not None]
        samp_j = float(sum(m.energy_j for m in sampled))
        samp_g = float(sum(m.carbon_g for m in sampled if m.carbon_g is not None))
        table_pts = np.array([[e.accuracy_pct or 0.0, -float(self.bench.energy_mj[e.cell])] for e in done]) if done else None
        return {
            "search": self.cfg.search_id,
            "policy": self.policy.name,
            "slots": list(self.ex.slots),
            "zone": self.cfg.zone,
            "start_s": start_s,
            "end_s": end_s,
            "hours": (end_s - start_s) / 3600.0,
            "wall_s": wall_s,
            "decisions": self.decisions,
            "samples": self.samples,
            "sample_jobs": self.sample_jobs,
            "evaluations": len(done),
            "evaluations_partial": len(partial),
            "resumes": sum(e.resumes for e in self.evals.values()),
            "evaluated": rows,
            "front": front,
            "hv_measured": hv_measured,
            "hv_table_energy": None if table_pts is None else {
                "hv": hypervolume_2d(table_pts, CENAS_REF_POINT), "ref_point": list(CENAS_REF_POINT),
                "objectives": ["accuracy_pct (eval split, this run)", "-hwnas_fpga_energy_mj_derived (table stand-in)"]},
            "energy_j_measured": eval_j,
            "carbon_g": eval_g,
            "sampling": {
                "runs": len(self.sample_energy),
                "measured_runs": len(sampled),
                "unmeasured_runs": sorted(r for r, m in self.sample_energy.items() if m is None),
                "energy_j": samp_j,
                "carbon_g": samp_g,
            },
            # the search's totals: evaluations AND the sampling workers (scoring, supernet training)
            "energy_j_total": eval_j + samp_j,
            "carbon_g_total": eval_g + samp_g,
            "errors": self.errors,
        }

    def _eval_row(self, e: Evaluation) -> dict[str, Any]:
        return {
            "cell": e.cell, "arch": e.arch_str, "run": e.run_id, "finished": e.finished,
            "epochs_done": e.epochs_done, "accuracy_pct": e.accuracy_pct, "energy_j": e.energy_j,
            "energy_by_device_j": e.energy_by_device_j, "energy_flags": e.energy_flags, "carbon_g": e.carbon_g,
            "wall_j": e.wall_j,
            "table_energy_mj": float(self.bench.energy_mj[e.cell]),
            "table_test_acc_pct": float(self.bench.test_acc_pct[e.cell]),
            "estimated_acc_pct": None if np.isnan(self.est_acc[e.cell]) else float(self.est_acc[e.cell]),
            "slots": e.slots, "resumes": e.resumes,
        }
