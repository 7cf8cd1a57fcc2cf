"""`jouled nas` commands: the trace-driven CE-NAS simulation (`nas simulate`)."""

from __future__ import annotations

import json
import math
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
    from jouled.scheduler.policies import make_policy
    from jouled.scheduler.simulator import ALL_METHODS, METHOD_HELP

    raw = [m.strip().lower() for m in spec.split(",") if m.strip()]
    if not raw:
        raise UserError(f"--method {spec!r}: empty — use all or one of: {METHOD_HELP}")
    out: list[str] = []
    for m in raw:
        if m == "all":
            out.extend(x for x in ALL_METHODS if x not in out)
            continue
        if m not in ("vanilla", "oneshot"):
            try:
                make_policy(m, 0)
            except UserError:
                raise UserError(f"--method {m!r}: unknown — use all or one of: {METHOD_HELP}") from None
        if m not in out:
            out.append(m)
    return out


def _fmt(stat: dict[str, float | None] | None, digits: int = 1) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    mean, std = stat["mean"], stat.get("std") or 0.0
    assert mean is not None
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table(doc: list[dict[str, Any]], console: Console, wide: bool = False) -> None:
    head = doc[0]
    names = " + ".join(Path(z["trace"]).name for z in head["zones"])
    # headers on two lines and the "reached" note under its value: numbers stay whole at 80 columns
    cols = (
        Column("method"), Column("seeds", 5, "right"), Column("HV", 0, "right"), Column("carbon\nkg", 0, "right"),
        Column("energy\nkWh", 0, "right"), Column("evaluations", 3, "right"), Column("samples", 4, "right"),
        Column("HV @ equal\ncarbon", 2, "right"), Column("kg to 99%\nvanilla HV", 1, "right"),
    )
    cells = []
    for m in doc:
        reached = m.get("reached_99pct_vanilla_hv")
        c99 = _fmt(m.get("carbon_kg_to_99pct_vanilla_hv"))
        if reached is not None and reached < m["seeds"]:
            c99 += f"\n({reached}/{m['seeds']} reached)"
        cells.append([
            m["method"], str(m["seeds"]), _fmt(m["hv"]), _fmt(m["carbon_kg"]), _fmt(m["energy_kwh"]),
            _fmt(m["evaluations"], 0), _fmt(m["samples"], 0), _fmt(m["hv_at_equal_carbon"]), c99,
        ])
    title = f"CE-NAS simulation — {names}, {head['gpus']} GPUs, {head['hours']:g} h"
    print_table(title, cols, cells, wide=wide, console=console)
    console.print(f"HV reference point {head['hv_ref_point']}; objectives: {'; '.join(head['objectives'])}")


def plot_runs(runs: dict[str, Any], path: Path, title: str) -> None:
    """HV vs time, carbon vs time and HV vs carbon (means over seeds) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    finals = [float(np.mean([r.hv for r in rs])) for rs in runs.values()]
    # the fronts differ by about 1 % of the HV: zoom onto the final values, or the lines coincide
    lo, hi = min(finals), max(finals)
    zoom = (lo - 0.02 * hi, hi + 0.002 * hi) if hi > 0 else None
    for method, rs in runs.items():
        t = rs[0].time_h
        hv = np.mean([r.hv_series for r in rs], axis=0)
        c = np.mean([r.carbon_kg_series for r in rs], axis=0)
        axes[0].plot(t, hv, label=method)
        axes[1].plot(t, c, label=method)
        axes[2].plot(c, hv, label=method)
    axes[0].set(xlabel="hours", ylabel="hypervolume (true objectives)", title="HV vs time")
    axes[1].set(xlabel="hours", ylabel="carbon (kg CO2eq)", title="carbon vs time")
    axes[2].set(xlabel="carbon (kg CO2eq)", ylabel="hypervolume", title="HV vs carbon")
    for ax in axes:
        ax.grid(alpha=0.3)
    if zoom is not None:
        axes[0].set_ylim(*zoom)
        axes[2].set_ylim(*zoom)
    axes[0].legend()
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
_METHOD_HELP = "all, or comma-separated: vanilla, oneshot, cenas, oracle, forecast, random, static:F, threshold:P"
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
    jobs: Annotated[int, typer.Option("--jobs", metavar="N", help="worker processes")] = 1,
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
    doc = report(runs, tr, cfg)
    if series_out is not None:
        try:
            series_out.write_text(json.dumps(series_json(runs)), encoding="utf-8")
        except OSError as e:
            raise UserError(f"--series-out {series_out}: cannot write ({e.strerror}) — pass a writable path") from None
    if plot_out is not None:
        names = " + ".join(Path(z.path).name for z in zones)
        plot_runs(runs, plot_out, f"{names}: {gpus} GPUs per zone, {hours:g} h, {seeds} seeds")
        if fmt == "table":  # JSON output stays the only thing printed
            typer.echo(f"plot written to {plot_out}", err=True)
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2))
    else:
        _table(doc, make_console(), wide)
