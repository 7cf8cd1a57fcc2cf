"""Energy rows and run totals: windows × series → the rows of `jouled energy epochs` and `jouled energy runs`.

Pure (no I/O): the window math is `jouled.energy`, the windows come from `jouled.windows`, and `jouled.query` reads
the store and hands both in. Which rows make a run's total is chosen by the series' roles (`jouled.series`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from jouled.carbon.series import IntensitySeries
from jouled.energy import (
    F_HOST_WIDE,
    METHODS,
    SeriesArrays,
    flag_names,
    prepare,
    window_carbon_many,
    window_energy_many,
)
from jouled.rowtable import RowTable, SeriesColumns, WindowColumns, column
from jouled.series import SeriesMeta, choose_totals, default_meta
from jouled.timefmt import format_time_ns, format_times_ns
from jouled.windows import Window

HostDevicesPolicy = Literal["total", "exclude", "share"]
FloatArrays = tuple[np.ndarray, np.ndarray]  # window starts and ends, ns


def normalise_gpu(name: str) -> str:
    """`0`, `cuda:0`, `gpu0` all name the device the NVML source calls `gpu0`."""
    s = name.strip().lower()
    if s.startswith("cuda:"):
        s = s[5:]
    if s.isdigit():
        return f"gpu{int(s)}"
    return s


MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True, slots=True)
class _SeriesResult:
    """One series' energy over the windows it counts for (``idx`` into the windows)."""

    src: str
    dev: str
    meta: SeriesMeta
    idx: list[int]
    energies: list[float]
    samples: list[int]
    gaps: list[float]
    methods: list[str]
    flags: list[int]
    grams: list[float] | None


@dataclass(frozen=True, slots=True)
class PendingSeries:
    """A series whose samples are still being read (`arrays`: None when the span has none), with what it is."""

    meta: SeriesMeta
    arrays: Future[SeriesArrays | None]


def _series_result(
    job: tuple[str, str, SeriesArrays | PendingSeries, SeriesMeta, list[int], FloatArrays, IntensitySeries | None],
) -> _SeriesResult | None:
    """The numeric part for one series (numpy, no Python loop per window): what may run in a worker thread.
    None for a pending series whose span had no samples."""
    src, dev, pending, meta, idx, (starts, ends), carbon = job
    if isinstance(pending, PendingSeries):
        got = pending.arrays.result()
        if got is None:
            return None
        s = got
    else:
        s = pending
    sel = np.asarray(idx, dtype=np.int64)
    a, b = starts[sel], ends[sel]
    prep = prepare(s)
    batch = window_energy_many(prep, a, b)
    extra = F_HOST_WIDE if meta.host_wide else 0
    grams = window_carbon_many(prep, carbon, a, b, batch.method).tolist() if carbon is not None else None
    return _SeriesResult(
        src, dev, meta, idx, batch.energy_j.tolist(), batch.samples.tolist(), batch.max_gap_s.tolist(),
        [METHODS[m] for m in batch.method.tolist()], (batch.flags | extra).tolist(), grams,
    )


def energy_rows(
    windows: Sequence[Window],
    series: Mapping[tuple[str, str], SeriesArrays],
    *,
    carbon: IntensitySeries | None = None,
    host_devices: HostDevicesPolicy = "total",
    map_fn: MapFn = map,
) -> list[dict[str, Any]]:
    """One row per (window, device): the JSON contract of `jouled energy epochs` (`flags` a tuple of names).

    `energy_table`'s rows as one list of dicts; see there.
    """
    return energy_table(windows, series, carbon=carbon, host_devices=host_devices, map_fn=map_fn).rows()


def energy_table(
    windows: Sequence[Window],
    series: Mapping[tuple[str, str], SeriesArrays | PendingSeries],
    *,
    carbon: IntensitySeries | None = None,
    host_devices: HostDevicesPolicy = "total",
    map_fn: MapFn = map,
) -> RowTable:
    """One row per (window, device), held as columns (`jouled.rowtable`: a row's dict is built when it is read).

    GPU sources (nvml, smi) count only the devices in the window's `gpus` (all GPUs when it
    names none). Host-wide sources are host totals: `total` reports them whole, `exclude`
    leaves them out, `share` gives the run the fraction of the host's GPUs it uses
    (len(gpus)/GPU count; the whole when either is unknown) and adds `share` to the row.
    What a series is comes from its `meta` (else `default_meta(source, device)`): role `gpu` is attributed
    through `gpus`, every other role is a host device; `host_wide` series are flagged `host-wide`; each row
    carries its series' `role`. A window no device has samples for
    (the daemon was not running) still gets one row: no source or device, energy_j null,
    flagged `no-samples` — never a silent gap or a 0.

    ``map_fn``: how the per-series numeric work is mapped (``map``; `jouled.query` passes a thread pool's, since
    numpy releases the GIL for the heavy parts). Rows come out in window order, devices sorted, either way.
    A `PendingSeries` (its samples still being read: `jouled.query`) is computed once its read is done, so the
    math of the series read first overlaps the reads of the others; one without samples gives no rows.
    """
    metas = {key: s.meta if s.meta is not None else default_meta(*key) for key, s in series.items()}

    def n_gpus() -> int:  # the GPUs with samples (a pending series' read is done by the time this is asked)
        with_data = [(k, m) for k, m in metas.items() if not _empty(series[k])]
        return len({m.for_device(dev) for (_src, dev), m in with_data if m.role == "gpu"})

    bounds = (np.array([w.start_ns for w in windows], dtype=np.int64), np.array([w.end_ns for w in windows], dtype=np.int64))
    # per-window work done once, not once per device
    win_gpus = [frozenset(normalise_gpu(g) for g in w.gpus) for w in windows]
    any_gpus = any(win_gpus)
    all_idx = list(range(len(windows)))
    jobs = []
    for (src, dev), s in sorted(series.items()):
        meta = metas[(src, dev)]
        is_gpu = meta.role == "gpu"
        if not is_gpu and host_devices == "exclude":
            continue
        idx = [i for i in all_idx if not win_gpus[i] or dev in win_gpus[i]] if is_gpu and any_gpus else all_idx
        if idx:
            jobs.append((src, dev, s, meta, idx, bounds, carbon))
    # each series' columns are gathered as its numbers arrive (in series order), while the pool computes the next ones
    results = (r for r in map_fn(_series_result, jobs) if r is not None)
    return _assemble(windows, results, n_gpus() if host_devices == "share" else 0, host_devices == "share",
                     carbon is not None)


def _empty(s: SeriesArrays | PendingSeries) -> bool:
    return isinstance(s, PendingSeries) and s.arrays.result() is None


def _assemble(
    windows: Sequence[Window], results: Iterable[_SeriesResult], n_gpus: int, share_rows: bool, with_carbon: bool,
) -> RowTable:
    """The table's columns, from the windows and each series' results; no row dict is built here.

    `flags` become one tuple per distinct flag set (a list in the JSON), shared by the rows that have it: a row
    holding only scalars and that tuple is a dict the cyclic garbage collector never tracks (a fresh list per row
    made every row one it walked: 0.16 s of collection after 100,000 rows).
    """
    n = len(windows)
    win = WindowColumns(
        run=[w.run for w in windows], scope=[w.scope for w in windows], epoch=[w.epoch for w in windows],
        phase=[w.phase for w in windows], arch=[w.arch for w in windows], host=[w.host for w in windows],
        start=format_times_ns([w.start_ns for w in windows]), end=format_times_ns([w.end_ns for w in windows]),
        start_ns=[w.start_ns for w in windows], end_ns=[w.end_ns for w in windows],
        duration_s=[(w.end_ns - w.start_ns) * 1e-9 for w in windows],
    )
    cols: list[SeriesColumns] = []
    for res in results:
        idx = res.idx
        role = res.meta.role
        names = {f: flag_names(f) for f in set(res.flags)}  # a handful of distinct masks per series
        if share_rows and role != "gpu":
            shares = [min(1.0, len(windows[i].gpus) / n_gpus) if windows[i].gpus and n_gpus else 1.0 for i in idx]
        else:
            shares = None
        energies: list[float | None] = [None if e != e else e for e in res.energies]  # NaN: no usable samples
        grams: list[float | None] | None = None
        if res.grams is not None:
            grams = [None if g != g else g for g in res.grams]
        if shares is not None:
            energies = [None if e is None else e * f for e, f in zip(energies, shares, strict=True)]
            if grams is not None:
                grams = [None if g is None else g * f for g, f in zip(grams, shares, strict=True)]
        cols.append(SeriesColumns(
            res.src, res.dev, role, None if len(idx) == n else idx, energies, res.methods, res.samples, res.gaps,
            [names[f] for f in res.flags], shares, grams,
        ))
    if cols and all(c.idx is None for c in cols):  # the usual case: every series in every window
        return RowTable(win, cols, with_carbon=with_carbon)
    # else: per window, the series counting in it (in series order), or its no-samples row
    at_window: list[list[tuple[int, int]]] = [[] for _ in windows]
    for s, c in enumerate(cols):
        for p, i in enumerate(c.idx if c.idx is not None else range(n)):
            at_window[i].append((s, p))
    row_win: list[int] = []
    row_ser: list[int] = []
    row_pos: list[int] = []
    for i, there in enumerate(at_window):
        for s, p in there or ((-1, 0),):
            row_win.append(i)
            row_ser.append(s)
            row_pos.append(p)
    return RowTable(win, cols, with_carbon=with_carbon, order=(row_win, row_ser, row_pos))


def has_samples(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any row has a measured (or estimated) energy: False means the log holds nothing for the windows."""
    return any(e is not None for e in column(rows, "energy_j"))


# Which rows make up a run's total is chosen by role (jouled.series.choose_totals): each GPU once (NVML preferred
# to nvidia-smi), CPU packages and DRAM (a model estimate only without them); core/uncore lie inside the package
# and psys contains it, so neither is added; a wall meter measures all of it plus PSU losses and is reported
# beside the total (`wall_j`), never added to it.


@dataclass
class _RunAcc:
    start_ns: int
    end_ns: int
    basis: str
    by_device: dict[str, float] = field(default_factory=dict)
    carbon_by_device: dict[str, float] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)


def run_totals(
    rows: Sequence[Mapping[str, Any]], metas: Mapping[tuple[str, str], SeriesMeta] | None = None
) -> list[dict[str, Any]]:
    """One row per run: start, end, duration, energy per device (`source:device`) and total, carbon.

    A run's figures come from its `run`-scope window when there is one, else from the sum
    of its epoch windows (else its phase windows); `basis` says which. `metas` (by (source, device))
    says what each series is; a series without one takes its row's `role` over the default from its name.
    """
    metas = _metas_with_row_roles(rows, metas)
    scopes_by_run: dict[str, set[str]] = {}
    for r in rows:
        scopes_by_run.setdefault(str(r["run"]), set()).add(str(r["scope"]))
    acc: dict[str, _RunAcc] = {}
    for r in rows:
        run = str(r["run"])
        avail = scopes_by_run[run]
        basis = next((s for s in ("run", "epoch", "phase") if s in avail), str(r["scope"]))
        if r["scope"] != basis:
            continue
        a = acc.get(run)
        if a is None:
            a = acc[run] = _RunAcc(int(r["start_ns"]), int(r["end_ns"]), basis)
        a.start_ns = min(a.start_ns, int(r["start_ns"]))
        a.end_ns = max(a.end_ns, int(r["end_ns"]))
        a.flags.update(r.get("flags", ()))
        if not r["source"]:  # a window with no device's samples: only its flag counts
            continue
        key = f"{r['source']}:{r['device']}"
        if r["energy_j"] is None:
            a.unknown.add(key)
            a.by_device.setdefault(key, 0.0)
            continue
        a.by_device[key] = a.by_device.get(key, 0.0) + float(r["energy_j"])
        if r.get("carbon_g") is not None:
            a.carbon_by_device[key] = a.carbon_by_device.get(key, 0.0) + float(r["carbon_g"])
    out = []
    for run, a in acc.items():
        choice = choose_totals(a.by_device, metas)
        total_keys = list(choice.total)
        known = [k for k in total_keys if k not in a.unknown]
        carbon_known = bool(a.carbon_by_device) and all(k in a.carbon_by_device for k in total_keys)
        wall = list(choice.wall)
        out.append(
            {
                "run": run,
                "basis": a.basis,
                "start": format_time_ns(a.start_ns),
                "end": format_time_ns(a.end_ns),
                "start_ns": a.start_ns,
                "end_ns": a.end_ns,
                "duration_s": (a.end_ns - a.start_ns) * 1e-9,
                "energy_j_by_device": {k: (None if k in a.unknown else v) for k, v in sorted(a.by_device.items())},
                # null, not 0, when no device of the total has a single usable sample
                "energy_j": sum(a.by_device[k] for k in known) if known else None,
                "total_devices": total_keys,
                "wall_j": sum(a.by_device[k] for k in wall) if wall else None,
                "carbon_g": sum(a.carbon_by_device[k] for k in total_keys) if carbon_known else None,
                "flags": sorted(a.flags),
            }
        )
    out.sort(key=lambda r: (r["start_ns"], r["run"]))
    return out


def _metas_with_row_roles(
    rows: Sequence[Mapping[str, Any]], metas: Mapping[tuple[str, str], SeriesMeta] | None
) -> dict[tuple[str, str], SeriesMeta]:
    out = dict(metas or {})
    for r in rows:
        key = (str(r["source"]), str(r["device"]))
        role = r.get("role")
        if key not in out and key[0] and role:
            d = default_meta(*key)
            out[key] = d if d.role == role else dataclasses.replace(d, role=str(role))
    return out
