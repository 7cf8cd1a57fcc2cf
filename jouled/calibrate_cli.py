"""`jouled calibrate`: drive known loads with their own markers while the daemon samples, fit P_idle, P_busy and the
uncaptured-power model, store the calibration beside the log.

Guided and resumable: each phase (`calibrate:idle`, `calibrate:cpu-prime`, …) is recorded in
`<log>.calibrate-state.json` as soon as its markers are delivered; an interrupted calibration continues at the
first phase not done (`--restart` starts over). Each session is its own run (`calibrate-<host>-<time>`); the fit
reads every session's phase windows back through the query core, so it sees what `jouled energy epochs` would.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from jouled.cli_common import ConfigOpt, StoreOpt, WideOpt, context
from jouled.errors import UserError

STATE_VERSION = 1
GPU_DUTIES = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class PhaseSpec:
    name: str  # the marker's phase, e.g. "calibrate:gpu-stress@50"
    load: str
    duty: float
    workers: int


def plan(cores: int, gpu: bool) -> list[PhaseSpec]:
    """The phases, in order: idle, the CPU loads on every core (one on half of them: a second utilisation), memory,
    then, when a GPU is sampled, GPU stress at several duty cycles and GPU stress with prime numbers on half and on
    all but one core (one core feeds the GPU)."""
    out = [PhaseSpec("calibrate:idle", "idle", 0.0, 0),
           PhaseSpec("calibrate:cpu-prime", "cpu-prime", 1.0, cores)]
    if cores >= 2:
        out.append(PhaseSpec("calibrate:cpu-prime@50", "cpu-prime", 0.5, cores // 2))
    out += [PhaseSpec("calibrate:cpu-fma", "cpu-fma", 1.0, cores), PhaseSpec("calibrate:memory", "memory", 1.0, cores)]
    if gpu:
        out += [PhaseSpec(f"calibrate:gpu-stress@{round(d * 100)}", "gpu-stress", d, 1) for d in GPU_DUTIES]
        # CPU and GPU at once: fans and the power supply answer to both together, not to each apart
        out += [PhaseSpec("calibrate:gpu+cpu@50", "gpu+cpu", 1.0, max(1, (cores - 1) // 2)),
                PhaseSpec("calibrate:gpu+cpu", "gpu+cpu", 1.0, max(1, cores - 1))]
    return out


def state_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".calibrate-state.json")


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"calibration state {path}: unreadable ({e}) — run `jouled calibrate --restart`") from None
    if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
        raise UserError(f"calibration state {path}: not this jouled's — run `jouled calibrate --restart`")
    return d


def _write_state(path: Path, state: dict[str, Any]) -> None:
    from jouled.secrets import make_private_dir

    try:
        make_private_dir(path.parent)  # a first calibration on a new machine: the log's folder may not exist yet
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"calibration state {path}: cannot write ({e.strerror}) — choose a writable --store") from None


def _sampled_gpus(store: Any, host: str) -> list[str]:
    from jouled.query import series_metas

    return sorted({m.for_device(dev) for (_s, dev), m in series_metas(store, host).items()
                   if m.role == "gpu" and not m.comparison})


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def run_phases(
    cfg: Any, store_url: str, store_path: Path, state: dict[str, Any], todo: list[PhaseSpec], *,
    phase_s: float, settle_s: float, use_stress_ng: bool, say: Any,
) -> None:
    """Start or attach to the daemon, run each phase of `todo` between its markers, record each in `state` when its
    markers are delivered. KeyboardInterrupt leaves the done phases recorded."""
    from jouled.daemonproc import attach_or_start
    from jouled.quality.loads import start_load
    from jouled.sources.estimate import CpuUtilisation
    from jouled.trainer.markers import MarkerClient

    work = Path(tempfile.mkdtemp(prefix="jouled-calibrate-"))
    cfg_file = Path(cfg.source_file) if cfg.source_file else None
    link = attach_or_start(cfg, store_url, store_path, work, config_file=cfg_file, spool_dir=work / "spool")
    say(link.shown)
    run_id = f"calibrate-{state['host']}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    client = MarkerClient(link.broker_url, host=state["host"], spool_path=work / "spool")
    # no `gpus`: the calibration measures the whole machine, so every GPU's energy belongs to its windows
    handle = client.run(run_id, attrs={"calibrate": True}).start()
    spath = state_path(store_path)
    try:
        time.sleep(max(settle_s, 0.5))  # samples before the first window, so its edges have neighbours
        for i, ph in enumerate(todo):
            epoch = len(state["phases"])
            say(f"phase {epoch + 1}/{len(state['plan'])}: {ph.name} ({ph.workers} worker(s), {phase_s:g} s) …")
            load = start_load(ph.load, ph.workers, ph.duty, use_stress_ng=use_stress_ng)
            try:
                time.sleep(settle_s)  # let the load (and the power it draws) settle before the window opens
                if ph.load != "idle" and not load.alive():
                    raise UserError(f"{ph.name}: the load exited at once — is the `{ph.load}` load supported here?")
                util = CpuUtilisation()
                handle.start_phase(ph.name, epoch, attrs={"load": ph.load, "duty": ph.duty, "tool": load.tool})
                t0 = time.time_ns()
                time.sleep(phase_s)
                u = util() / 100.0
                t1 = time.time_ns()
                handle.end_phase(ph.name, epoch, attrs={"util_cpu_pct": round(u * 100, 3)})
            finally:
                load.stop()
            if not client.flush(30.0):
                raise UserError(f"{ph.name}: markers not delivered to {client.shown_url} within 30 s — is the daemon's "
                                f"broker up? (`jouled status`); the spool is in {work / 'spool'}")
            state["phases"].append({**asdict(ph), "run": run_id, "epoch": epoch, "util_cpu": u, "tool": load.tool,
                                    "start_ns": t0, "end_ns": t1})
            _write_state(spath, state)
            if i + 1 < len(todo):
                time.sleep(min(1.0, settle_s))  # a quiet gap between two loads
        time.sleep(0.5)
    finally:
        handle.end()
        client.close(timeout_s=10.0)
        if state["phases"] and link.child is None:
            _wait_logged(store_url, cfg, state, say)  # a daemon we only attached to keeps its samples in memory a while
        link.close()  # a child we started flushes everything as it stops


def _wait_logged(store_url: str, cfg: Any, state: dict[str, Any], say: Any) -> None:
    """Wait until the daemon's log holds every sample up to the last phase's end (and the one after)."""
    from jouled.query import open_readonly, wait_complete

    last_ns = max(p["end_ns"] for p in state["phases"])
    st = open_readonly(store_url, cfg)
    try:
        wait_complete(st, last_ns, timeout_s=30.0, host=state["host"], since_ns=last_ns - 60_000_000_000)
    except TimeoutError as e:
        say(f"warning: {e}")
    finally:
        st.close()


def phase_points(store: Any, cfg: Any, state: dict[str, Any]) -> list[Any]:
    """One PhasePoint per recorded phase: mean power by role over its window (the query core's energy rows)."""
    from jouled.holistic import window_parts
    from jouled.quality.calibfit import PhasePoint
    from jouled.query import compute_rows, series_metas

    metas = series_metas(store, state["host"])
    by_window: dict[tuple[str, int], Any] = {}
    for run in sorted({p["run"] for p in state["phases"]}):
        rows, _problems = compute_rows(store, cfg, run, ("phase",))
        for wp in window_parts([r for r in rows if r["host"] == state["host"]], metas):
            by_window[(wp.run, int(wp.epoch or 0))] = wp
    out = []
    for p in state["phases"]:
        wp = by_window.get((p["run"], p["epoch"]))  # type: ignore[assignment]
        if wp is None:
            raise UserError(f"{p['name']} (run {p['run']}): its markers are not in the log — was the daemon logging to "
                            "this store? Run `jouled calibrate --restart`")
        if wp.missing:
            raise UserError(f"{p['name']}: no samples of {', '.join(wp.missing)} in its window — is every source "
                            "sampling? (`jouled status`)")
        t = wp.duration_s
        out.append(PhasePoint(p["name"], p["load"], float(p["duty"]), t, float(p["util_cpu"]), wp.gpu_j / t,
                              wp.cpu_j / t, wp.dram_j / t, None if wp.wall_j is None else wp.wall_j / t))
    return out


def print_calibration(cal: Any, wide: bool = False) -> None:
    from jouled.tables import Column, print_table

    fit = cal.fit
    res = {r.phase: r for r in fit.residuals}
    cols = [Column("phase"), Column("util", 0, "right"), Column("GPU", 1, "right"), Column("CPU+DRAM", 1, "right"),
            Column("wall", 0, "right"), Column("uncaptured", 0, "right"), Column("time-varying resid.", 0, "right"),
            Column("static resid.", 2, "right")]
    cells = []
    for p in cal.points:
        r = res.get(p["phase"])
        wall = p["wall_w"]
        cells.append([
            p["phase"], f"{p['util_cpu'] * 100:.0f} %", f"{p['gpu_w']:.1f} W", f"{p['cpu_w'] + p['dram_w']:.1f} W",
            "—" if wall is None else f"{wall:.1f} W",
            "—" if wall is None else f"{wall - p['gpu_w'] - p['cpu_w'] - p['dram_w']:.1f} W",
            "—" if r is None else f"{r.time_varying_err_w:+.2f} W", "—" if r is None else f"{r.static_err_w:+.2f} W",
        ])
    print_table(f"{cal.label}: phases and residuals (model − wall)", cols, cells, wide=wide)
    typer.echo(f"CPU + DRAM (RAPL; the CPU estimate where no RAPL is sampled): {fit.cpu_idle_w:.1f} W idle, "
               f"{fit.cpu_busy_w:.1f} W busy (u = 0 and 1)")
    if not fit.calibrated:
        return
    m = fit.model
    typer.echo(f"P_idle {fit.p_idle_w:.1f} W, P_busy {fit.p_busy_w:.1f} W (machine without GPUs, at the wall)")
    if fit.busy_by_load_w:
        per = ", ".join(f"{k} {v:.1f} W (static max error {fit.static_max_err_by_load_pct[k]:.2f} %)"
                        for k, v in sorted(fit.busy_by_load_w.items()))
        typer.echo(f"P_busy by load: {per}; best bound: {fit.best_load}")
    if m is not None:
        def term(v: float, spec: str) -> str:  # "+ 3.10", "− 76.56": no "+ -76.56"
            return f"{'−' if v < 0 else '+'} {format(abs(v), spec)}"

        typer.echo(f"uncaptured = {m.intercept_w:.2f} W {term(m.per_util_w, '.2f')} W × CPU utilisation "
                   f"{term(m.per_gpu_w, '.4f')} × GPU power (fitted: {', '.join(m.features) or 'intercept only'})")
    for n in fit.notes:
        typer.echo(f"note: {n}")


def calibrate_command(
    phase_s: Annotated[float, typer.Option("--phase-s", min=0.5, metavar="S", help="seconds each phase is measured")] = 60.0,
    settle_s: Annotated[float, typer.Option("--settle-s", min=0.0, metavar="S",
                                            help="seconds a load runs before its window opens")] = 5.0,
    restart: Annotated[bool, typer.Option("--restart", help="forget an unfinished calibration and start over")] = False,
    no_stress_ng: Annotated[bool, typer.Option("--no-stress-ng", help="jouled's own loads even when stress-ng is "
                                                                      "installed")] = False,
    cores: Annotated[int, typer.Option("--cores", min=0, metavar="N", help="CPU workers (0: every core)")] = 0,
    gpu: Annotated[str, typer.Option("--gpu", metavar="auto|yes|no", help="GPU stress phases")] = "auto",
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | json")] = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Measure idle and stress loads with their own markers, fit P_idle, P_busy and the uncaptured power, store them."""
    from jouled.quality import calibstore
    from jouled.quality.calibfit import fit_calibration
    from jouled.query import open_readonly, url_path

    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt!r}: choose table or json")
    if gpu not in ("auto", "yes", "no"):
        raise UserError(f"--gpu {gpu!r}: choose auto, yes or no")
    ctx = context(config, store)
    cfg = ctx.config
    store_path = url_path(ctx.store_url)
    if store_path is None:
        raise UserError(f"--store {ctx.store_url}: calibrate needs the daemon's SQLite log (sqlite:///PATH), where "
                        "it keeps its state and the calibration")

    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    spath = state_path(store_path)
    state = None if restart else _read_state(spath)
    n_cores = cores or os.cpu_count() or 1
    if state is None:
        gpus: list[str] = []
        if store_path.exists():
            st0 = open_readonly(ctx.store_url, cfg)
            try:
                gpus = _sampled_gpus(st0, cfg.daemon.host)
            finally:
                st0.close()
        # a GPU the log already samples, or one torch can see (a new log has no series yet)
        want_gpu = gpu == "yes" or (gpu == "auto" and (bool(gpus) or _torch_cuda()))
        if want_gpu and not _torch_cuda():
            if gpu == "yes":
                raise UserError("--gpu yes: the GPU stress load needs torch with CUDA (pip install 'jouled[trainer]')")
            say("note: a GPU is sampled but torch with CUDA is not installed: no gpu-stress phases "
                "(the uncaptured model then has no GPU term)")
            want_gpu = False
        specs = plan(n_cores, want_gpu)
        state = {"version": STATE_VERSION, "host": cfg.daemon.host, "gpus": gpus, "phase_s": phase_s,
                 "plan": [asdict(s) for s in specs], "phases": []}
        _write_state(spath, state)
    else:
        say(f"resuming the calibration in {spath}: {len(state['phases'])} of {len(state['plan'])} phases done "
            "(--restart to start over)")
    done = {p["name"] for p in state["phases"]}
    todo = [PhaseSpec(**s) for s in state["plan"] if s["name"] not in done]
    if todo:
        try:
            run_phases(cfg, ctx.store_url, store_path, state, todo, phase_s=phase_s, settle_s=settle_s,
                       use_stress_ng=not no_stress_ng, say=say)
        except KeyboardInterrupt:
            say(f"interrupted: {len(state['phases'])} of {len(state['plan'])} phases done, kept in {spath} — "
                "run `jouled calibrate` again to go on")
            raise typer.Exit(130) from None
    st = open_readonly(ctx.store_url, cfg)
    try:
        points = phase_points(st, cfg, state)
    finally:
        st.close()
    fit = fit_calibration(points)
    if not fit.calibrated:
        say("no wall meter in this log: P_idle, P_busy and the uncaptured power cannot be calibrated — holistic energy "
            "uses the static fallback (11 % of the measured power), labelled as such; CPU idle/busy from RAPL (or the "
            "CPU estimate) only")
    now = time.time_ns()
    tools = sorted({p["tool"] for p in state["phases"] if p["tool"] != "none"})

    def make(n: int) -> calibstore.Calibration:
        return calibstore.Calibration(n, calibstore.now_stamp(now), now, calibstore.machine_identity(), state["host"],
                                      sorted({p["run"] for p in state["phases"]}), "+".join(tools) or "none",
                                      [dict(asdict(p)) for p in points], fit)

    cal = calibstore.append(calibstore.calibration_path(store_path), make)
    spath.unlink(missing_ok=True)
    if fmt == "json":
        typer.echo(json.dumps(cal.to_dict(), indent=2))
    else:
        print_calibration(cal, wide=wide)
        typer.echo(f"stored as #{cal.id} in {calibstore.calibration_path(store_path)}")
