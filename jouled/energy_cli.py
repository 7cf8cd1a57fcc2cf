"""`jouled energy epochs|runs`: energy (and carbon) per marker window and per run, read from the store."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from jouled.cli_common import ConfigOpt, StoreOpt, context, make_app
from jouled.energy import NO_SAMPLES
from jouled.errors import UserError
from jouled.jsonout import dumps_indent2
from jouled.progress import NoProgressOpt, progress_bar, progress_enabled
from jouled.query import (
    OPEN,
    EpochRow,
    compute_rows,
    compute_run_rows,
    live_wait_s,
    open_readonly,
    run_rows,
    run_totals,
)
from jouled.rows import has_samples
from jouled.rowtable import RowTable, column, csv_text, json_text
from jouled.tables import Column, WideOpt, make_console, print_table

energy_app = make_app(help="Energy and carbon per epoch, phase and run, from the markers in the store.")
# `role` last: added after the first release, so every earlier column keeps its position
CSV_KEYS = ("run", "scope", "epoch", "phase", "arch", "host", "source", "device", "start", "end", "duration_s",
            "energy_j", "method", "samples", "max_gap_s", "flags", "carbon_g", "role")


def _emit_rows(rows: Sequence[dict[str, Any]], fmt: str) -> None:
    """The rows of `energy epochs` as JSON or CSV: straight from a `RowTable`'s columns when a row of each of its
    shapes is the contract (`EpochRow`, the Python API's rows), else through the typed rows."""
    if isinstance(rows, RowTable):
        examples = rows.examples()
        if EpochRow.conform(examples) is examples:  # the keys are the contract's, in its order
            try:
                text = json_text(rows) if fmt == "json" else csv_text(rows, CSV_KEYS)
            except TypeError:  # a value json cannot write as it is (a numpy scalar): the rows' path converts it
                pass
            else:
                if fmt == "json":
                    typer.echo(text)  # echo flushes: the text comes before any warning on stderr
                else:
                    sys.stdout.write(text)
                return
    _emit(EpochRow.conform(rows), fmt, CSV_KEYS)


def _emit(rows: list[dict[str, Any]], fmt: str, keys: Sequence[str]) -> None:
    if fmt == "json":
        typer.echo(dumps_indent2(rows, default=_json_default))  # json.dumps(indent=2)'s text, faster
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (" ".join(r[k]) if isinstance(r.get(k), (list, tuple)) else r.get(k)) for k in keys})
        sys.stdout.write(buf.getvalue())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def _j(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1000:.3f} kJ" if abs(v) >= 10_000 else f"{v:.2f} J"


# priority 0 columns are always shown; higher numbers are hidden first when the terminal is narrow
EPOCH_COLUMNS = (
    Column("epoch", 0, "right"), Column("phase", 0), Column("device", 0), Column("source", 2),
    Column("duration", 3, "right"), Column("energy", 0, "right"), Column("method", 5), Column("samples", 4, "right"),
    Column("max gap", 6, "right"),
)


TABLE_LIMIT = 1000  # rows a table shows by default: rich renders ~1.5 ms a row here, a day of epochs is 100,000


def print_rows(
    rows: Sequence[dict[str, Any]], title: str, *, wide: bool = False, console: Console | None = None, limit: int = 0,
) -> None:
    """The table of `energy epochs`; with `limit` (0: every row) and more rows than that, the first and the last
    halves of it around a ⋮ row, and a line saying how many were left out and how to get them."""
    has_carbon = any(c is not None for c in column(rows, "carbon_g"))  # no column of dashes when intensity is unknown
    cols = list(EPOCH_COLUMNS) + ([Column("carbon", 2, "right")] if has_carbon else []) + [Column("flags", 1, fit="wrap")]
    cells: list[list[str]] = []
    for r in _ends(rows, limit):
        line = [
            "" if r["epoch"] is None else str(r["epoch"]), r["phase"] or "", r["device"], r["source"],
            f"{r['duration_s']:.2f} s", _j(r["energy_j"]), r["method"], str(r["samples"]), f"{r['max_gap_s']:.2f} s",
        ]
        if has_carbon:
            line.append("—" if r.get("carbon_g") is None else f"{r['carbon_g']:.3f} g")
        line.append(" ".join(r["flags"]))
        cells.append(line)
    _print_limited(title, cols, cells, len(rows), limit, wide, console,
                   "all of them: --limit 0, or --format csv|json; totals: --by epoch|device")


def _ends(items: Sequence[Any], limit: int) -> list[Any]:
    """The first and the last halves of `items` when there are more than `limit` (0: all of them)."""
    if not limit or len(items) <= limit:
        return list(items)
    return [*items[: limit - limit // 2], *items[len(items) - limit // 2:]]


def _print_limited(title: str, cols: list[Column], cells: list[list[str]], total: int, limit: int, wide: bool,
                   console: Console | None, hint: str) -> None:
    """`cells` (already cut by `_ends` to `limit` of `total`) with a ⋮ row where rows were left out, and a line
    saying how many and how to get them."""
    left_out = total - len(cells)
    if left_out:
        cells.insert(limit - limit // 2, ["⋮"] * len(cols))
    print_table(title, cols, cells, wide=wide, console=console)
    if left_out:
        con = console or make_console()
        con.print(f"[dim]{left_out:,} of {total:,} rows left out at ⋮ — {hint}[/]", highlight=False)


HolisticOpt = Annotated[
    bool, typer.Option("--holistic", help="GPU + CPU + DRAM + modelled uncaptured power (+ PUE) per window, beside the "
                                          "wall meter, with the calibration used named (jouled calibrate)"),
]
CalibrationOpt = Annotated[
    Path | None, typer.Option("--calibration", metavar="FILE",
                              help="with --holistic: the calibration file (default: [holistic] calibration, else "
                                   "the calibration file beside the log)"),
]


def _holistic(run: str | None, scopes: tuple[str, ...], fmt: str, title: str, wide: bool, calibration: Path | None,
              config: Path | None, store: str | None) -> None:
    """`--holistic`: jouled.holistic's rows instead of the per-device ones (one column per component)."""
    from jouled.holistic import HOLISTIC_KEYS, holistic_rows, load_calibration, print_holistic

    ctx = context(config, store)
    st = open_readonly(ctx.store_url, ctx.config)
    cal, _where = load_calibration(ctx.config, ctx.store_url, calibration)
    rows, problems = holistic_rows(st, ctx.config, run, scopes, cal)
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    if cal is None:
        typer.echo("warning: no calibration found: uncaptured power is the static fallback (11 % of the measured "
                   "energy), not calibrated — run `jouled calibrate` with a wall meter", err=True)
    if not rows and run is not None:
        _say_no_windows(st, run, scopes)
    if fmt == "table":
        print_holistic(rows, title, wide=wide)
    else:
        _emit(rows, fmt, HOLISTIC_KEYS)


@energy_app.command("epochs")
def epochs(
    run: Annotated[str, typer.Option("--run", metavar="RUN", help="run id (as in the markers)")],
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | csv | json")] = "table",
    scope: Annotated[str, typer.Option("--scope", metavar="SCOPE", help="epoch | phase | run | all")] = "epoch",
    by: Annotated[
        str, typer.Option("--by", metavar="device|epoch", help="also print totals by device or epoch (table; default: no totals)",
                          show_default=False)
    ] = "",
    host_devices: Annotated[str, typer.Option("--host-devices", metavar="MODE", help="total | share | exclude")] = "total",
    holistic: HolisticOpt = False,
    calibration: CalibrationOpt = None,
    wide: WideOpt = False,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="table: at most N rows, the first and the last "
                                       "halves (0: all; csv and json always have all)")] = TABLE_LIMIT,
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Energy per window (epoch, phase, run) and device, with method, samples, gaps and quality flags."""
    if fmt not in ("table", "csv", "json"):
        raise UserError(f"--format {fmt!r}: choose table, csv or json")
    if scope not in ("epoch", "phase", "run", "all"):
        raise UserError(f"--scope {scope!r}: choose epoch, phase, run or all")
    if by not in ("", "device", "epoch"):
        raise UserError(f"--by {by!r}: choose device or epoch")
    if host_devices not in ("total", "share", "exclude"):
        raise UserError(f"--host-devices {host_devices!r}: choose total, share or exclude")
    if limit < 0:
        raise UserError(f"--limit {limit}: give a number of rows >= 0 (0: all of them)")
    scopes = ("epoch", "phase", "run") if scope == "all" else (scope,)
    if holistic:
        _holistic(run, scopes, fmt, f"holistic energy per {'window' if scope == 'all' else scope} — run {run}", wide,
                  calibration, config, store)
        return
    ctx = context(config, store)
    st = open_readonly(ctx.store_url, ctx.config)  # sqlite:///, influx://, influx2://
    with progress_bar("energy per window", enabled=progress_enabled(no_progress)) as on_progress:
        rows, problems = compute_rows(st, ctx.config, run, scopes, host_devices, on_progress=on_progress,
                                      wait_live_s=live_wait_s(ctx.config))
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    if not rows:
        _say_no_windows(st, run, scopes)
    if fmt != "table":
        _emit_rows(rows, fmt)  # the Python API's rows: one contract (jouled.query)
    else:
        print_rows(rows, f"energy per {'window' if scope == 'all' else scope} — run {run}", wide=wide, limit=limit)
        if by:
            _print_by(rows, by, wide=wide, limit=limit)
    _say_no_samples(rows, st.path, f"run {run}")


def _say_no_windows(st: Any, run: str, scopes: tuple[str, ...]) -> None:
    """A run without windows of the asked scope (a `jouled calibrate` run has phases, no epochs): say which scopes it
    has and exit 1, instead of printing an empty table."""
    have = sorted({m.scope for m in st.read_markers(run)} - {"run"} - set(scopes))
    hint = f" — it has {' and '.join(have)} windows: --scope {have[0]} (or --scope all)" if have else ""
    typer.echo(f"run {run}: no {'/'.join(scopes)} windows in {st.path}{hint}", err=True)
    raise typer.Exit(1)


def _say_no_samples(rows: Sequence[dict[str, Any]], store_path: Any, what: str) -> None:
    """Windows without samples are named, not shown as 0 J; when no window has any, exit 1 after the line."""
    if rows and not has_samples(rows):
        typer.echo(
            f"{what}: no samples for this run's windows in {store_path} — was the daemon running during the run? "
            "(`jouled status`)",
            err=True,
        )
        raise typer.Exit(1)
    # a window is empty when none of its devices has samples: only rows flagged no-samples can make one
    flags = column(rows, "flags")
    if not any(NO_SAMPLES in f for f in flags):
        return
    keys = ("run", "scope", "epoch", "phase", "start_ns")
    cols = [column(rows, k) for k in keys]
    covered: dict[tuple[Any, ...], bool] = {}  # window → does any of its devices have samples?
    for i, f in enumerate(flags):
        key = tuple(c[i] for c in cols)
        covered[key] = covered.get(key, False) or NO_SAMPLES not in f
    empty = [k for k, ok in covered.items() if not ok]
    if empty:
        typer.echo(
            f"warning: {what}: {len(empty)} window(s) without any samples in {store_path} (flagged no-samples) — "
            "was the daemon running during all of the run? (`jouled status`)",
            err=True,
        )


def _print_by(rows: Sequence[dict[str, Any]], by: str, *, wide: bool = False, limit: int = 0) -> None:
    acc: dict[Any, float] = {}
    energy = column(rows, "energy_j")
    keys: list[Any] = (list(zip(column(rows, "source"), column(rows, "device"), strict=True)) if by == "device"
                       else column(rows, "epoch"))
    for k, e in zip(keys, energy, strict=True):
        if e is not None:
            acc[k] = acc.get(k, 0.0) + e
    # epochs in number order (9 before 10), then windows without one; devices by name
    items = sorted(acc.items(), key=lambda kv: (0, kv[0], "") if isinstance(kv[0], int) else (1, 0, str(kv[0])))
    cells = [[" ".join(k) if isinstance(k, tuple) else str(k), _j(v)] for k, v in _ends(items, limit)]
    _print_limited(f"totals by {by}", [Column(by), Column("energy", 0, "right")], cells, len(items), limit, wide, None,
                   "all of them: --limit 0")


@energy_app.command("runs")
def runs(
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | csv | json")] = "table",
    holistic: HolisticOpt = False,
    calibration: CalibrationOpt = None,
    wide: WideOpt = False,
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """One row per run: start, end, duration, energy per device and total, carbon."""
    if fmt not in ("table", "csv", "json"):
        raise UserError(f"--format {fmt!r}: choose table, csv or json")
    if holistic:
        _holistic(None, ("run",), fmt, "holistic energy per run", wide, calibration, config, store)
        return
    ctx = context(config, store)
    st = open_readonly(ctx.store_url, ctx.config)  # sqlite:///, influx://, influx2://
    with progress_bar("energy per run", enabled=progress_enabled(no_progress)) as on_progress:
        # a run without a run window (epoch markers only, or not ended yet) is totalled from its epochs
        rows, problems = compute_run_rows(st, ctx.config, on_progress=on_progress, wait_live_s=live_wait_s(ctx.config))
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    totals = run_totals(rows, st)  # chosen by the series' stored roles (jouled.series)
    if not totals:  # markers, but not one finished window: "found nothing" (exit 1), not an empty table
        open_runs = ", ".join(st.runs()[:5])
        typer.echo(f"no run in {st.path} has a finished window yet (runs with markers: {open_runs}) — a run is "
                   "listed once it ends, or once one of its epochs ends", err=True)
        raise typer.Exit(1)
    if fmt == "json":
        _emit(run_rows(totals).to_dicts(), fmt, [])  # the Python API's rows: one contract (jouled.query)
        _say_runs_without_samples(totals, st.path)
        return
    if fmt == "csv":
        # the JSON's fields in its order, and its per-device energies as one column each (`energy_j:source:device`)
        devices = sorted({d for r in totals for d in r["energy_j_by_device"]})
        flat = [{**r, **{f"energy_j:{d}": v for d, v in r["energy_j_by_device"].items()}} for r in totals]
        keys = [k for k in totals[0] if not isinstance(totals[0][k], dict)] + [f"energy_j:{d}" for d in devices]
        _emit(flat, fmt, keys)
        _say_runs_without_samples(totals, st.path)
        return
    # like the epochs table: no column of dashes for a quantity no run has (no meter, no carbon intensity)
    has_wall = any(r.get("wall_j") is not None for r in totals)
    has_carbon = any(r.get("carbon_g") is not None for r in totals)
    cols = [
        Column("run"), Column("start (UTC)", 4), Column("duration", 3, "right"), Column("total", 0, "right"),
        Column("wall", 2, "right"), Column("carbon", 2, "right"), Column("per device", 1),
    ]
    cells = [
        [
            str(r.get("run")) + (" (not ended)" if OPEN in r.get("flags", ()) else ""), str(r.get("start", ""))[:19],
            f"{r.get('duration_s', 0):.1f} s",
            _j(r.get("energy_j")), _j(r.get("wall_j")),
            "—" if r.get("carbon_g") is None else f"{r['carbon_g']:.2f} g",
            # one device per line: a device name and its energy stay together and whole
            "\n".join(f"{k} {_j(v)}" for k, v in r["energy_j_by_device"].items()),
        ]
        for r in totals
    ]
    drop = {i for i, has in ((4, has_wall), (5, has_carbon)) if not has}
    cols = [c for i, c in enumerate(cols) if i not in drop]
    cells = [[v for i, v in enumerate(row) if i not in drop] for row in cells]
    print_table("runs", cols, cells, wide=wide)
    _say_runs_without_samples(totals, st.path)


def _say_runs_without_samples(totals: list[dict[str, Any]], store_path: Any) -> None:
    """A run with no sample in any of its windows has no total (not 0 J): say why; exit 1 when no run has one."""
    empty = [str(r["run"]) for r in totals if r.get("energy_j") is None]
    if not empty:
        return
    names = ", ".join(empty[:5]) + (f" (+{len(empty) - 5} more)" if len(empty) > 5 else "")
    typer.echo(
        f"{'' if len(empty) == len(totals) else 'warning: '}no samples for the windows of run(s) {names} in {store_path} "
        "— was the daemon running during the run? (`jouled status`)",
        err=True,
    )
    if len(empty) == len(totals):
        raise typer.Exit(1)
