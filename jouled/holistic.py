"""Holistic energy per window (`jouled energy epochs|runs --holistic`): GPU + CPU + DRAM + modelled uncaptured power
(+ the PUE's overhead), each in its own column, the wall meter beside it, and the calibration used named.

The components come from the query core's rows (`jouled.query.compute_rows`: the same numbers `energy epochs`
prints); which series make each component is read from the series' stored roles (`jouled.series.choose_totals`:
each GPU once, RAPL packages, DRAM; the CPU estimate only without a measured package), never from source names. The
uncaptured term is `jouled.quality.calibfit.holistic_window` with the calibration of `jouled calibrate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jouled.config import Config
from jouled.energy import NO_SAMPLES
from jouled.errors import UserError
from jouled.quality.calibfit import Fit, holistic_window
from jouled.quality.calibstore import Calibration, calibration_path, pick
from jouled.query import compute_rows, series_metas, url_path
from jouled.series import SeriesMeta, choose_totals, meta_or_default
from jouled.store.reader import ReadStore
from jouled.store.sqlite import SeriesKey
from jouled.timefmt import format_time_ns

UTIL_EXTRA = "util_cpu_pct"  # the CPU estimate source logs the utilisation it modelled from


@dataclass
class WindowParts:
    """One window's measured energy by component (J; None: no samples), from the series' roles."""

    run: str
    scope: str
    epoch: int | None
    phase: str | None
    host: str
    start_ns: int
    end_ns: int
    gpu_j: float = 0.0
    cpu_j: float = 0.0
    dram_j: float = 0.0
    wall_j: float | None = None
    missing: list[str] = field(default_factory=list)  # devices in the total without samples in the window
    flags: set[str] = field(default_factory=set)  # the quality flags of the rows counted (total and wall)
    devices: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) * 1e-9


def window_parts(rows: Sequence[Mapping[str, Any]], metas: Mapping[tuple[str, str], SeriesMeta]) -> list[WindowParts]:
    """Group `energy epochs` rows by window and add them up by role (`choose_totals` picks the devices)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["run"], r["scope"], r["epoch"], r["phase"], r["host"], r["start_ns"], r["end_ns"]), []).append(r)
    out: list[WindowParts] = []
    for (run, scope, epoch, phase, host, s, e), rs in groups.items():
        by_key = {f"{r['source']}:{r['device']}": r for r in rs if r["source"]}
        choice = choose_totals(by_key, metas)
        wp = WindowParts(run, scope, epoch, phase, host, s, e, devices=list(choice.total))
        for key in (*choice.total, *choice.wall):
            wp.flags.update(f for f in by_key[key].get("flags", ()) if f != NO_SAMPLES)  # no-samples: by device below
        for key in choice.total:
            src, dev = key.split(":", 1)
            role = meta_or_default(metas.get((src, dev)), src, dev).role
            ej = by_key[key]["energy_j"]
            if ej is None:
                wp.missing.append(key)
                continue
            if role == "gpu":
                wp.gpu_j += ej
            elif role == "dram":
                wp.dram_j += ej
            else:  # package, or the CPU estimate where no package is measured
                wp.cpu_j += ej
        walls = [by_key[k]["energy_j"] for k in choice.wall]
        if walls and all(w is not None for w in walls):
            wp.wall_j = float(sum(walls))
        out.append(wp)
    return out


def util_series(store: ReadStore, host: str, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(time_ns, utilisation 0..1) of the host's logged CPU utilisation (the CPU estimate's extra), else None."""
    for key in store.series():
        if key.host != host or meta_or_default(key.meta, key.source, key.device).role != "cpu-estimate":
            continue
        d = store.read_series(SeriesKey(key.host, key.source, key.device), start_ns - 10_000_000_000,
                              end_ns + 10_000_000_000, extras=True)
        u = d.extras.get(UTIL_EXTRA)
        if u is None:
            continue
        ok = np.isfinite(u)
        if int(ok.sum()) >= 2:
            return d.time_ns[ok], u[ok] / 100.0
    return None


def mean_util(util: tuple[np.ndarray, np.ndarray] | None, start_ns: int, end_ns: int) -> float | None:
    """Time-weighted mean utilisation over [start, end] (linear between samples); None without samples near it."""
    if util is None:
        return None
    t, u = util
    if end_ns <= start_ns or t[0] > end_ns or t[-1] < start_ns:
        return None
    grid = np.linspace(float(start_ns), float(end_ns), 64)
    return float(np.interp(grid, t.astype(float), u).mean())


def load_calibration(config: Config, store_url: str, path: Path | None) -> tuple[Calibration | None, Path | None]:
    """The calibration to use: `path`, else `[holistic] calibration`, else the file beside a SQLite log."""
    where = path or (Path(config.holistic.calibration).expanduser() if config.holistic.calibration else None)
    if where is None:
        log = url_path(store_url)
        where = calibration_path(log) if log is not None else None
    if where is None:
        return None, None
    if path is not None and not where.exists():
        raise UserError(f"--calibration {where}: no such file — run `jouled calibrate` first or give another file")
    return pick(where), where


def holistic_rows(
    store: ReadStore, config: Config, run: str | None, scopes: Sequence[str], calibration: Calibration | None,
    *, correction: str = "time-varying",
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per window of `scopes` (epoch, phase, run) of `run` (None: every run): components, holistic total,
    wall meter and the error against it. Returns (rows, marker problems)."""
    rows, problems = compute_rows(store, config, run, tuple(scopes))
    pue = config.holistic.pue
    fit: Fit | None = calibration.fit if calibration is not None else None
    if calibration is None:
        label = "static fallback (no calibration: run `jouled calibrate`)"
    else:
        label = calibration.label
    calibrated = fit is not None and fit.calibrated
    out: list[dict[str, Any]] = []
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    for host, rs in by_host.items():
        parts = window_parts(rs, series_metas(store, host))
        util = None
        if calibrated and parts:
            util = util_series(store, host, min(p.start_ns for p in parts), max(p.end_ns for p in parts))
        for p in parts:
            u = mean_util(util, p.start_ns, p.end_ns)
            h = holistic_window(fit, p.duration_s, p.gpu_j, p.cpu_j, p.dram_j, u, pue,
                                correction if calibrated else "time-varying")
            flags = sorted(p.flags) + [f"no-samples:{k}" for k in p.missing]
            if calibration is not None and calibration.host and calibration.host != host:
                flags.append(f"calibrated-on:{calibration.host}")
            err = None if p.wall_j is None or not p.wall_j else (h.it_j - p.wall_j) / p.wall_j * 100.0
            out.append({
                "run": p.run, "scope": p.scope, "epoch": p.epoch, "phase": p.phase, "host": host,
                "start": format_time_ns(p.start_ns), "end": format_time_ns(p.end_ns),
                "start_ns": p.start_ns, "end_ns": p.end_ns, "duration_s": p.duration_s,
                "gpu_j": p.gpu_j, "cpu_j": p.cpu_j, "dram_j": p.dram_j, "uncaptured_j": h.uncaptured_j,
                "it_j": h.it_j, "pue": pue, "pue_overhead_j": h.pue_overhead_j, "holistic_j": h.total_j,
                "wall_j": p.wall_j, "error_vs_wall_pct": None if err is None or math.isnan(err) else err,
                "util_cpu": h.util_cpu,
                "util_from": ("logged" if u is not None else "rapl-line") if calibrated else "",
                "correction": (correction if calibrated else "static fallback"),
                "calibration": label, "devices": p.devices, "flags": flags,
            })
    return out, problems


# ---------------------------------------------------------------------------------------------- the command line's view

HOLISTIC_KEYS = ("run", "scope", "epoch", "phase", "host", "start", "end", "duration_s", "gpu_j", "cpu_j", "dram_j",
                 "uncaptured_j", "it_j", "pue", "pue_overhead_j", "holistic_j", "wall_j", "error_vs_wall_pct",
                 "util_cpu", "util_from", "correction", "calibration", "flags")


def print_holistic(rows: Sequence[Mapping[str, Any]], title: str, *, wide: bool = False) -> None:
    """The holistic table: one column per component, the wall meter and the error beside them (no empty columns)."""
    from jouled.tables import Column, print_table

    def j(v: float | None) -> str:
        if v is None:
            return "—"
        return f"{v / 1000:.3f} kJ" if abs(v) >= 10_000 else f"{v:.2f} J"

    has_wall = any(r["wall_j"] is not None for r in rows)
    has_pue = any(r["pue"] != 1.0 for r in rows)
    is_run = all(r["scope"] == "run" for r in rows)
    # phase windows are told apart by their phase: never hide it then; a GPU column of zeros goes before anything else
    has_phase = any(r["phase"] for r in rows)
    no_gpu = all(not r["gpu_j"] for r in rows)
    # run ids read left to right (as in `energy runs`), epoch numbers line up on the right
    cols = [Column("run", 0) if is_run else Column("epoch", 0, "right"), Column("phase", 0),
            Column("duration", 4, "right"), Column("GPU", 6 if no_gpu else 0, "right"), Column("CPU", 0, "right"),
            Column("DRAM", 1, "right"), Column("uncaptured", 0, "right")]
    if has_pue:
        cols.append(Column("PUE overhead", 2, "right"))
    cols.append(Column("holistic", 0, "right"))
    if has_wall:
        cols += [Column("wall", 0, "right"), Column("error", 1, "right")]
    cols.append(Column("flags", 5, fit="wrap"))
    cells: list[list[str]] = []
    for r in rows:
        line = [str(r["run"]) if is_run else ("" if r["epoch"] is None else str(r["epoch"])), r["phase"] or "",
                f"{r['duration_s']:.2f} s", j(r["gpu_j"]), j(r["cpu_j"]), j(r["dram_j"]), j(r["uncaptured_j"])]
        if has_pue:
            line.append(j(r["pue_overhead_j"]))
        line.append(j(r["holistic_j"]))
        if has_wall:
            e = r["error_vs_wall_pct"]
            line += [j(r["wall_j"]), "—" if e is None else f"{e:+.1f} %"]
        line.append(" ".join(r["flags"]))
        cells.append(line)
    if not has_phase:  # no window of these is a phase (epochs, runs): no column that is empty on every row
        cols.pop(1)
        cells = [line[:1] + line[2:] for line in cells]
    cal = rows[0]["calibration"] if rows else ""
    corr = rows[0]["correction"] if rows else ""
    util = {r["util_from"] for r in rows if r["util_from"]}
    caption = f"{cal}; correction: {corr}" + (f"; CPU utilisation: {', '.join(sorted(util))}" if util else "")
    if has_pue:
        caption += f"; PUE {rows[0]['pue']:g}"
    print_table(title, cols, cells, wide=wide, caption=caption)
