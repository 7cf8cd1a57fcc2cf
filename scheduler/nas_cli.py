"""`jouled nas` commands: the trace-driven CE-NAS simulation (`nas simulate`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from jouled.cli_common import ConfigOpt, UnusedStoreOpt, context, ignore_store, make_app
from jouled.errors import UserError
from jouled.progress import NoProgressOpt, progress_bar, progress_enabled
from jouled.tables import Column, WideOpt, make_console, print_table

nas_app = make_app(help="Carbon-aware neural architecture search (CE-NAS) on NAS-Bench-201.")


def parse_methods(spec: str) -> list[str]:
    """'all' or a comma-separated list of methods; each checked so a typo fails before any work."""
    from jouled.scheduler.simulator import ALL_METHODS, METHOD_HELP, method_spec

    raw = [m.strip().lower() for m in spec.split(",") if m.strip()]
    if not raw:
        raise UserError(f"--method {spec!r}: empty — use all or one of: {METHOD_HELP}")
    out: list[str] = []
    for m in raw:
        if m == "all":
            out.extend(x for x in ALL_METHODS if x not in out)
            continue
        method_spec(m)  # UserError naming the method and the choices
        if m not in out:
            out.append(m)
    return out


def _fmt(stat: dict[str, float | None] | None, digits: int = 1) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    mean, std = stat["mean"], stat.get("std") or 0.0
    assert mean is not None
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _target_cell(m: dict[str, Any], loss_pct: float) -> str:
    t = next((x for x in m.get("to_target", []) if x["loss_pct"] == loss_pct), None)
    if t is None:
        return "—"
    cell = _fmt(t["carbon_kg"]) + f"\n({t['reached']}/{m['seeds']} reached)"
    ratio = t.get("carbon_ratio_vanilla_over_method")
    if ratio and ratio.get("mean") is not None and m["method"] != "vanilla":
        cell += f"\n{ratio['mean']:.2f}x vs vanilla"
    return cell


def _table(doc: list[dict[str, Any]], console: Console, wide: bool = False) -> None:
    head = doc[0]
    names = " + ".join(Path(z["trace"]).name for z in head["zones"])
    # headers on two lines and notes under their value: numbers stay whole at 80 columns
    cols = (
        Column("method"), Column("HV loss\n% of max", 0, "right"), Column("carbon\nkg", 0, "right"),
        Column("equal time\nvanilla/method", 0, "right"), Column("evaluations", 3, "right"),
        Column("kg to 0.1 %\nloss", 1, "right"), Column("kg to 0.05 %\nloss", 1, "right"),
        Column("GPU-h idle\n/ released", 2, "right"),
    )
    cells = []
    for m in doc:
        eq = m.get("equal_time", {}).get("carbon_ratio_vanilla_over_method")
        gh = m.get("gpu_hours", {})
        cells.append([
            m["method"], _fmt(m["hv_loss_pct"], 3), _fmt(m["carbon_kg"]), _fmt(eq, 2), _fmt(m["evaluations"], 0),
            _target_cell(m, 0.1), _target_cell(m, 0.05),
            f"{_fmt(gh.get('idle'), 0)}\n{_fmt(gh.get('released'), 0)}",
        ])
    seeds = f"{head['seeds']} seed{'s' if head['seeds'] != 1 else ''}"
    title = f"CE-NAS simulation — {names}, {head['gpus']} GPUs, {head['hours']:g} h, {seeds}"
    print_table(title, cols, cells, wide=wide, console=console)
    pw = head["power_w"]
    console.print(
        f"hv_max {head['hv_max']:.2f} at reference point {head['hv_ref_point']}; objectives: {'; '.join(head['objectives'])}\n"
        f"power W: sampling {pw['sampling']:g}, evaluation {pw['evaluation']:g}, idle {pw['idle']:g}, released "
        f"{pw['released']:g}; intensity known {head['intensity_latency_s']:g} s late; checkpoint {head['checkpoint_s']:g} "
        f"GPU-s per pause; supernet {head['supernet_gpu_h']} GPU-h; {_clean(head)}{_late(head)}"
    )


def _clean(head: dict[str, Any]) -> str:
    """cenas's clean hours, in words (reports written before pacing name only the percentile and window_h)."""
    pct, window = head["clean_percentile"], head.get("clean_window_h", head["window_h"])
    if head.get("paced"):
        return (f"clean hours: {pct:g} % of the {head['hours']:g} h worked, paced, the cleanest by the "
                f"trailing {window:g} h")
    return f"clean hours: <= p{pct:g} of the trailing {window:g} h"


def _late(head: dict[str, Any]) -> str:
    """The stall rule of cenas, in words (empty when off)."""
    late = head.get("late_percentile")
    if late is None:
        return ""
    st = head["stall"]
    return f", p{late:g} once the last {st['trainings']} trainings raised the front's HV by less than {st['gain_pct']} %"


def plot_runs(runs: dict[str, Any], path: Path, title: str) -> None:
    """HV loss vs cumulative carbon (mean over seeds, with the 0.1 % target line) per method, and the
    intensity with the allocation over time (seed 0 of cenas, or of the first method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from jouled.scheduler.simulator import hv_loss_pct

    fig, axes = plt.subplots(1, 2, figsize=(15, 5))
    ax = axes[0]
    top = max(float(np.mean([r.carbon_kg for r in rs])) for rs in runs.values())
    grid = np.linspace(0.0, top, 300)[1:]
    for method, rs in runs.items():
        hv_max = rs[0].hv_max
        loss = [
            [hv_loss_pct(r.hv_at(r.time_at_carbon(c)) if c < r.carbon_kg else r.hv, hv_max) for c in grid] for r in rs
        ]
        ax.plot(grid, np.mean(loss, axis=0), label=method)
    ax.axhline(0.1, color="k", ls="--", lw=1, label="target: 0.1 % of hv_max")
    ax.set(xlabel="cumulative carbon (kg CO2eq)", ylabel="HV loss (% of hv_max, mean over seeds)", yscale="log",
           title="HV loss vs carbon (a run that spent less keeps its final HV)")
    ax.set_ylim(0.005, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    show = "cenas" if "cenas" in runs else next(iter(runs))
    r = runs[show][0]
    t = r.time_h - (r.time_h[0] if len(r.time_h) else 0.0)
    ax.step(t, r.actual_intensity_series, where="post", color="tab:red", label="intensity (cleanest zone)")
    ax.step(t, r.intensity_series, where="post", color="tab:orange", lw=0.8, label="intensity known at the decision")
    ax.set(xlabel="hours", ylabel="g CO2eq / kWh", title=f"{show}, seed {r.seed}: intensity and allocation")
    ax2 = ax.twinx()
    ev, sa = r.gpus_evaluation_series, r.gpus_sampling_series
    ax2.fill_between(t, 0, ev, step="post", alpha=0.3, color="tab:blue", label="GPUs evaluating")
    ax2.fill_between(t, ev, ev + sa, step="post", alpha=0.3, color="tab:green", label="GPUs sampling")
    ax2.set_ylabel("GPUs (the rest idle or released)")
    ax2.set_ylim(0, max(1, r.gpus_total) * 1.05)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise UserError(f"--plot-out {path}: cannot write ({e.strerror}) — pass a writable path") from None
    finally:
        plt.close(fig)


PLOT_FILE_NAME = "nas-simulate.png"


def plot_target(path: Path) -> Path:
    """Where --plot-out writes: the PNG path itself, or nas-simulate.png inside an existing folder.

    A path without a suffix would make matplotlib add ".png" beside it, so a file name must end in .png.
    """
    if path.is_dir():
        return path / PLOT_FILE_NAME
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot-out {path}: not a .png file name nor an existing folder — pass e.g. {path.with_suffix('.png')}")
    if not path.parent.is_dir():
        raise UserError(f"--plot-out {path}: folder {path.parent} does not exist — create it or pass another path")
    return path


_PLOT_HELP = f"write HV/carbon plots to this .png file (an existing folder: {PLOT_FILE_NAME} inside it; default: no plot)"
_TRACE_HELP = (
    "carbon trace CSV (Electricity Maps export or time,intensity_g_per_kwh); repeat for several zones "
    "(then --gpus is per zone and evaluation goes to the cleanest zone first)"
)
_METHOD_HELP = (
    "all, or comma-separated: vanilla, cenas, cenas-seed, static, random, oneshot, oracle, forecast, forecast-oracle, "
    "static:F, threshold:P, clean:P"
)
_DATA_HELP = "folder of the NAS-Bench-201 tables (default $JOULED_NAS_DATA, then ../shared/data/nas)"


@nas_app.command("simulate")
def simulate_cmd(
    trace: Annotated[list[Path], typer.Option("--trace", metavar="FILE", help=_TRACE_HELP)],
    method: Annotated[str, typer.Option("--method", metavar="METHODS", help=_METHOD_HELP)] = "all",
    seeds: Annotated[
        int, typer.Option("--seeds", metavar="N", help="seeds per method; each starts at its own point of the trace")
    ] = 10,
    gpus: Annotated[int, typer.Option("--gpus", metavar="N", help="GPUs in the simulated cluster (per zone)")] = 8,
    hours: Annotated[float, typer.Option("--hours", metavar="HOURS", help="search length in hours")] = 168.0,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | json")] = "table",
    series_out: Annotated[
        Path | None, typer.Option("--series-out", metavar="FILE", help="write every run's HV/carbon series (JSON; default: none)")
    ] = None,
    plot_out: Annotated[Path | None, typer.Option("--plot-out", metavar="FILE", help=_PLOT_HELP)] = None,
    column: Annotated[
        str, typer.Option("--column", metavar="COLUMN", help="trace column: direct | lca (Electricity Maps exports)")
    ] = "direct",
    data: Annotated[Path | None, typer.Option("--data", metavar="DIR", help=_DATA_HELP)] = None,
    estimate: Annotated[
        str, typer.Option("--estimate", metavar="MODE", help="sampling estimate: one_shot | few_shot")
    ] = "one_shot",
    jobs: Annotated[
        int | None, typer.Option("--jobs", metavar="N", help="worker processes (default: the CPUs this process may use)")
    ] = None,
    wide: WideOpt = False,
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: UnusedStoreOpt = None,
) -> None:
    """Trace-driven comparison of vanilla LaMOO, one-shot and CE-NAS GPU-split policies."""
    from jouled.extras import require

    require("jouled nas simulate", "scheduler", "sklearn", "scipy", "threadpoolctl")
    if plot_out is not None:
        require("--plot-out", "scheduler", "matplotlib")
        plot_out = plot_target(plot_out)  # checked now, not after a long simulation
    from jouled.carbon.trace import load_trace
    from jouled.scheduler.simulator import SimConfig, report, run_many, series_json
    from jouled.scheduler.space import load_benchmark

    ignore_store(store, "nas simulate")
    ctx = context(config, None)
    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt!r}: unknown — use table or json")
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: need at least 1 — pass --seeds 1 or more")
    if gpus < 1:
        raise UserError(f"--gpus {gpus}: need at least one GPU — pass --gpus 1 or more")
    if not (math.isfinite(hours) and hours > 0):
        raise UserError(f"--hours {hours}: must be a positive number of hours — e.g. --hours 168")
    if estimate not in ("one_shot", "few_shot"):
        raise UserError(f"--estimate {estimate!r}: unknown — use one_shot or few_shot")
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: need at least 1 — pass --jobs 1 or more")
    methods = parse_methods(method)
    zones = [load_trace(p, column) for p in trace]
    tr = zones[0] if len(zones) == 1 else zones
    bench = load_benchmark(data)
    nas = ctx.config.nas
    cfg = SimConfig(
        gpus=gpus,
        hours=hours,
        decision_period_s=nas.decision_period_s,
        window_h=nas.window_h,
        sampling_power_w=nas.sampling_power_w,
        evaluation_power_w=nas.evaluation_power_w,
        idle_power_w=nas.idle_power_w,
        estimate=estimate,
    )
    with progress_bar("simulating (method × seed)", enabled=progress_enabled(no_progress)) as on_progress:
        runs = run_many(methods, tr, bench, list(range(seeds)), cfg, jobs=jobs, on_progress=on_progress)
    doc = report(runs, tr, cfg, bench)
    if series_out is not None:
        try:
            series_out.write_text(json.dumps(series_json(runs)), encoding="utf-8")
        except OSError as e:
            raise UserError(f"--series-out {series_out}: cannot write ({e.strerror}) — pass a writable path") from None
    if plot_out is not None:
        names = " + ".join(Path(z.path).name for z in zones)
        plot_runs(runs, plot_out, f"{names}: {gpus} GPUs per zone, {hours:g} h, {seeds} seed{'s' if seeds != 1 else ''}")
        if fmt == "table":  # JSON output stays the only thing printed
            typer.echo(f"plot written to {plot_out}", err=True)
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2))
    else:
        _table(doc, make_console(), wide)
