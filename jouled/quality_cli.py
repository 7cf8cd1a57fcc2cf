"""`jouled assess`, `jouled compare`, `jouled report`: how far a run's energy numbers can be trusted (jouled.quality)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from jouled.cli_common import ConfigOpt, StoreOpt, WideOpt, context
from jouled.errors import UserError
from jouled.tables import Column, print_table

RunOpt = Annotated[str, typer.Option("--run", metavar="RUN", help="run id (as in the markers)")]
FmtOpt = Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | json")]
LimitsOpt = Annotated[
    str | None,
    typer.Option("--gpu-limits", metavar="MIN:MAX",
                 help="the GPUs' min and max power limits in watts (nvidia-smi -q -d POWER: Min/Max Power Limit); "
                      "default: what the NVML source declared, else the run start marker's attrs "
                      "gpu_power_min_w/gpu_power_max_w"),
]
CodeCarbonOpt = Annotated[
    Path | None, typer.Option("--codecarbon", metavar="FILE", help="CodeCarbon's emissions.csv of the same training"),
]


CalibrationOpt = Annotated[
    Path | None, typer.Option("--calibration", metavar="FILE",
                              help="the calibration (jouled calibrate) that corrects CodeCarbon and is shown in the "
                                   "report (default: [holistic] calibration, else the calibration file beside the log)"),
]


def _load(run: str, config: Path | None, store: str | None, limits: str | None) -> Any:
    from jouled.quality.load import load_run
    from jouled.query import open_readonly

    ctx = context(config, store)
    st = open_readonly(ctx.store_url, ctx.config)
    try:
        data = load_run(st, ctx.config, run, limits)
    finally:
        st.close()
    for p in data.problems:
        typer.echo(f"warning: {p}", err=True)
    return data


def _check_fmt(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt!r}: choose table or json")


def assess_command(
    run: RunOpt,
    fmt: FmtOpt = "table",
    gpu_limits: LimitsOpt = None,
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The measurement checklist of the energy-benchmark study, each finding with the numbers behind its verdict."""
    from jouled.quality.assess import worst
    from jouled.quality.load import assess_run

    _check_fmt(fmt)
    data = _load(run, config, store, gpu_limits)
    findings = assess_run(data)
    if fmt == "json":
        typer.echo(json.dumps({"run": run, "host": data.host, "verdict": worst(findings),
                               "gpu_limits_from": data.limits_from or None,
                               "findings": [f.to_dict() for f in findings]}, indent=2))
        return
    cells = [[f.check, f.subject, f.verdict, f.why, _numbers(f.numbers)] for f in findings]
    cols = [Column("check"), Column("subject"), Column("verdict"), Column("why", 0, fit="wrap"),
            Column("numbers", 2, fit="wrap")]
    print_table(f"assess — run {run} ({worst(findings)})", cols, cells, wide=wide)


def _numbers(d: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return ",".join(map(str, v)) or "—"
        return "—" if v is None else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in d.items())


def compare_command(
    run: RunOpt,
    fmt: FmtOpt = "table",
    codecarbon: CodeCarbonOpt = None,
    calibration: CalibrationOpt = None,
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Per-epoch energy of every tool that measured the run, and each one's error against the best truth."""
    from jouled.quality.cccorrect import align_offset_ns, shift_intervals
    from jouled.quality.codecarbon import read_emissions
    from jouled.quality.load import compare_run
    from jouled.series import COARSE_UPDATES

    _check_fmt(fmt)
    cc = read_emissions(codecarbon) if codecarbon is not None else None
    data = _load(run, config, store, None)
    shift_ns = 0
    if cc is not None:  # CodeCarbon's whole-second stamps: its intervals aligned with the epochs' ends
        shift_ns = align_offset_ns(cc["total"], [t for w in data.windows for t in (w.start_ns, w.end_ns)])
        cc = shift_intervals(cc, shift_ns)
    c = compare_run(data, cc)
    if not c.energy_j:  # found nothing to compare: one line and exit 1 (the README's rule), not two empty tables
        typer.echo(f"compare: run {run} has no measuring tool's energy to compare (NVML, nvidia-smi, RAPL or a wall "
                   "meter; the CPU estimate is not one) — `jouled sources` shows what this machine can read", err=True)
        raise typer.Exit(1)
    corr = _codecarbon_corrected(data, c, shift_ns, calibration, config, store) if cc is not None else None
    if fmt == "json":
        extra = {"codecarbon_corrected": corr.to_dict()} if corr is not None else {}
        typer.echo(json.dumps({"run": run, "host": data.host, **c.to_dict(), **extra}, indent=2))
        return
    truth = ", ".join(f"{g}: {t}" for g, t in c.truth.items())
    tools = list(c.energy_j)
    cols = [Column("epoch", 0, "right"), Column("duration", 1, "right")] + [Column(t, 0, "right") for t in tools]
    cells = []
    any_partial = False
    for i, w in enumerate(c.windows):
        line = ["" if w.epoch is None else str(w.epoch), f"{w.duration_s:.2f} s"]
        for t in tools:
            e = c.energy_j[t][i]
            err = c.error_pct(t)[i]
            mark = "*" if c.partial.get(t, [False] * len(c.windows))[i] else ""
            any_partial = any_partial or bool(mark)
            line.append("—" if not math.isfinite(e) else
                        f"{e:.1f} J{mark}" + ("" if not math.isfinite(err) else f" ({round(err, 1) + 0.0:+.1f}%)"))  # no -0.0
        cells.append(line)
    caption = "* the tool's data covers only part of the epoch (it stops short of an edge)" if any_partial else None
    print_table(f"energy per epoch — run {run} (truth: {truth})", cols, cells, wide=wide, caption=caption)
    bcols = [Column("epoch length"), Column("tool"), Column("truth"), Column("epochs", 0, "right"),
             Column("mean |err|", 0, "right"), Column("max |err|", 0, "right"), Column("pearson", 1, "right")]
    bcells = [[b["bucket"], b["tool"], b["truth"], str(b["epochs"]), _pct(b["mean_abs_error_pct"]),
               _pct(b["max_abs_error_pct"]), "—" if b["pearson"] is None else f"{b['pearson']:.3f}"] for b in c.buckets]
    coarse = [f"{t} is coarse in epochs under {s:.1f} s (the device updates it every {s / COARSE_UPDATES * 1e3:.0f} ms): "
              "errors there are partly the truth's own" for t, s in c.coarse_below_s.items()
              if t in c.truth.values() and any(b["truth"] == t and b["truth_coarse_epochs"] for b in c.buckets)]
    print_table("error by epoch length", bcols, bcells, wide=wide, caption="; ".join(coarse) or None)
    if corr is not None:
        _print_corrected(corr, wide)


def _codecarbon_corrected(data: Any, c: Any, shift_ns: int, calibration: Path | None, config: Path | None,
                          store: str | None) -> Any:
    """CodeCarbon with the calibration's static and time-varying corrections against the wall meter; None (and one
    line saying why) when there is no calibration or no meter."""
    from jouled.holistic import load_calibration, mean_util, util_series
    from jouled.quality.calibfit import proxy_util
    from jouled.quality.cccorrect import correct_codecarbon
    from jouled.query import open_readonly

    ctx = context(config, store)
    cal, where = load_calibration(ctx.config, ctx.store_url, calibration)
    if cal is None or not cal.fit.calibrated:
        typer.echo(f"note: CodeCarbon not corrected: {'no calibration' if cal is None else cal.label} "
                   f"({where or 'no file'}) — run `jouled calibrate` with a wall meter", err=True)
        return None
    if "wall" not in c.energy_j:
        typer.echo("note: CodeCarbon's corrections not checked: no wall meter in this run", err=True)
        return None
    n = len(c.windows)
    st = open_readonly(ctx.store_url, ctx.config)
    try:
        util = util_series(st, data.host, data.start_ns, data.end_ns)
    finally:
        st.close()
    rapl = c.energy_j.get("rapl", [math.nan] * n)
    utils: list[float | None] = []
    for w, r in zip(c.windows, rapl, strict=True):
        u = mean_util(util, w.start_ns, w.end_ns)
        if u is None and math.isfinite(r) and w.duration_s > 0:  # no logged utilisation: read it off the RAPL line
            u = proxy_util(r / w.duration_s, cal.fit.cpu_idle_w, cal.fit.cpu_busy_w)
        utils.append(u)
    return correct_codecarbon(c.windows, c.energy_j["wall"], c.energy_j["codecarbon"],
                              c.energy_j.get("codecarbon-gpu", [math.nan] * n), utils, cal.fit,
                              shift_s=shift_ns / 1e9, calibration=cal.label)


def _print_corrected(corr: Any, wide: bool) -> None:
    names = list(corr.energy_j)
    cols = [Column("epoch", 0, "right"), Column("wall", 0, "right")] + [Column(k, 0, "right") for k in names]
    cells = []
    for i, w in enumerate(corr.windows):
        line = ["" if w.epoch is None else str(w.epoch), f"{corr.truth_j[i]:.1f} J"]
        for k in names:
            e, err = corr.energy_j[k][i], corr.error_pct(k)[i]
            line.append("—" if not math.isfinite(e) else
                        f"{e:.1f} J" + ("" if not math.isfinite(err) else f" ({round(err, 1) + 0.0:+.1f}%)"))
        cells.append(line)
    cells.append(["max |err|", ""] + [_pct(corr.max_abs_error_pct(k)) for k in names])
    print_table(f"CodeCarbon corrected with {corr.calibration} (its intervals shifted {corr.shift_s:+.3f} s onto the "
                "epochs)", cols, cells, wide=wide)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} %"


def report_command(
    run: RunOpt,
    out: Annotated[Path, typer.Option("-o", "--output", metavar="FILE.html", help="where to write the page")],
    codecarbon: CodeCarbonOpt = None,
    gpu_limits: LimitsOpt = None,
    calibration: CalibrationOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """One self-contained HTML page: power, energy per epoch, tool errors, GPU range, carbon, the assess findings."""
    from jouled.holistic import load_calibration
    from jouled.quality.cccorrect import align_offset_ns, shift_intervals
    from jouled.quality.codecarbon import read_emissions
    from jouled.quality.load import assess_run, compare_run
    from jouled.quality.report import render_report

    cc = read_emissions(codecarbon) if codecarbon is not None else None
    data = _load(run, config, store, gpu_limits)
    if cc is not None:
        cc = shift_intervals(cc, align_offset_ns(cc["total"], [t for w in data.windows for t in (w.start_ns, w.end_ns)]))
    ctx = context(config, store)
    cal, _where = load_calibration(ctx.config, ctx.store_url, calibration)
    html = render_report(data, assess_run(data), compare_run(data, cc),
                         None if cal is None else (cal.label, cal.fit, cal.points))
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise UserError(f"-o {out}: cannot write it ({e.strerror}) — pick a writable path") from None
    typer.echo(f"wrote {out} ({len(html) // 1024} KiB)")
