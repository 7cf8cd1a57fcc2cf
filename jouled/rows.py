"""Energy rows and run totals: windows × series → the rows of `jouled energy epochs` and `jouled energy runs`.

Pure (no I/O): the window math is `jouled.energy`, the windows come from `jouled.windows`, and `jouled.query` reads
the store and hands both in. Which rows make a run's total is chosen by the series' roles (`jouled.series`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from jouled.carbon.series import IntensitySeries
from jouled.energy import (
    F_HOST_WIDE,
    METHODS,
    NO_SAMPLES,
    SeriesArrays,
    flag_names,
    prepare,
    window_carbon_many,
    window_energy_many,
)
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


def _series_result(
    job: tuple[str, str, SeriesArrays, SeriesMeta, list[int], FloatArrays, IntensitySeries | None],
) -> _SeriesResult:
    """The numeric part for one series (numpy, no Python loop per window): what may run in a worker thread."""
    src, dev, s, meta, idx, (starts, ends), carbon = job
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
    """
    metas = {key: s.meta if s.meta is not None else default_meta(*key) for key, s in series.items()}
    gpu_devices = sorted({m.for_device(dev) for (src, dev), m in metas.items() if m.role == "gpu"})
    n_gpus = len(gpu_devices)
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
    # each series' rows are built as its numbers arrive (in series order), while the pool computes the next ones
    results = map_fn(_series_result, jobs)
    with gc_paused():  # 100,000 acyclic dicts: the cyclic collector's passes over them doubled the build
        return _assemble(windows, results, n_gpus, host_devices == "share", carbon is not None)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while many acyclic containers are built (they cannot leak a cycle), back on
    after (when it was on): each generation-0 pass otherwise walks the young rows, and the full passes all of them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _assemble(
    windows: Sequence[Window], results: Iterable[_SeriesResult], n_gpus: int, share_rows: bool, with_carbon: bool,
) -> list[dict[str, Any]]:
    """The row dicts, window by window and within a window in series order, from each series' columns.

    Built column-wise: each series' values are Python lists (from numpy), the window's own fields are gathered per
    series, and one dict display per row zips them (a dict literal in a comprehension is the cheapest dict CPython
    builds; the keys stay in the contract's order). `flags` is a tuple shared by the rows with the same flags (a list
    in the JSON): a row holding only scalars and the empty tuple is a dict the cyclic garbage collector never
    tracks, and a fresh list per row made every row one it walked (0.16 s of collection after 100,000 rows).
    """
    n = len(windows)
    win_start = format_times_ns([w.start_ns for w in windows])
    win_end = format_times_ns([w.end_ns for w in windows])
    cols: dict[str, list[Any]] = {
        "run": [w.run for w in windows], "scope": [w.scope for w in windows], "epoch": [w.epoch for w in windows],
        "phase": [w.phase for w in windows], "arch": [w.arch for w in windows], "host": [w.host for w in windows],
        "start": win_start, "end": win_end, "start_ns": [w.start_ns for w in windows],
        "end_ns": [w.end_ns for w in windows], "duration_s": [(w.end_ns - w.start_ns) * 1e-9 for w in windows],
    }
    per_series: list[tuple[list[int], list[dict[str, Any]]]] = []
    for res in results:
        idx = res.idx
        whole = len(idx) == n
        g = cols if whole else {k: [v[i] for i in idx] for k, v in cols.items()}
        src, dev, role = res.src, res.dev, res.meta.role
        names = {f: flag_names(f) for f in set(res.flags)}  # a handful of distinct masks per series
        if share_rows and role != "gpu":
            shares = [min(1.0, len(windows[i].gpus) / n_gpus) if windows[i].gpus and n_gpus else 1.0 for i in idx]
        else:
            shares = None
        energies = [None if e != e else e for e in res.energies]  # NaN: no usable samples
        if shares is not None:
            energies = [None if e is None else e * f for e, f in zip(energies, shares, strict=True)]
        rows = [
            {"run": r, "scope": sc, "epoch": ep, "phase": ph, "arch": ar, "host": ho, "source": src, "device": dev,
             "role": role, "start": st, "end": en, "start_ns": s_ns, "end_ns": e_ns, "duration_s": du,
             "energy_j": e, "method": me, "samples": sa, "max_gap_s": ga, "flags": names[fl]}
            for r, sc, ep, ph, ar, ho, st, en, s_ns, e_ns, du, e, me, sa, ga, fl in zip(
                g["run"], g["scope"], g["epoch"], g["phase"], g["arch"], g["host"], g["start"], g["end"],
                g["start_ns"], g["end_ns"], g["duration_s"], energies, res.methods, res.samples, res.gaps, res.flags,
                strict=True,
            )
        ]
        if shares is not None:
            for row, f in zip(rows, shares, strict=True):
                row["share"] = f
        if res.grams is not None:
            fs = shares if shares is not None else [1.0] * len(rows)
            for row, gr, f in zip(rows, res.grams, fs, strict=True):
                row["carbon_g"] = None if gr != gr else gr * f
        per_series.append((idx, rows))
    if per_series and all(len(idx) == n for idx, _ in per_series):  # the usual case: every series in every window
        return [row for at_window in zip(*(rows for _, rows in per_series), strict=True) for row in at_window]
    per_window: list[list[dict[str, Any]]] = [[] for _ in windows]
    for idx, rows in per_series:
        for i, row in zip(idx, rows, strict=True):
            per_window[i].append(row)
    out: list[dict[str, Any]] = []
    for i, w in enumerate(windows):
        rows_i = per_window[i]
        if rows_i:
            out.extend(rows_i)
        else:
            out.append(_no_samples_row(w, win_start[i], win_end[i], with_carbon))
    return out


def _no_samples_row(w: Window, start: str, end: str, with_carbon: bool) -> dict[str, Any]:
    """The row of a window without any device's samples: it says so, instead of vanishing from the table."""
    duration_s = (w.end_ns - w.start_ns) * 1e-9
    row: dict[str, Any] = {
        "run": w.run, "scope": w.scope, "epoch": w.epoch, "phase": w.phase, "arch": w.arch, "host": w.host,
        "source": "", "device": "", "role": "", "start": start, "end": end, "start_ns": w.start_ns, "end_ns": w.end_ns,
        "duration_s": duration_s, "energy_j": None, "method": "none", "samples": 0, "max_gap_s": duration_s,
        "flags": (NO_SAMPLES,),
    }
    if with_carbon:
        row["carbon_g"] = None
    return row


def has_samples(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any row has a measured (or estimated) energy: False means the log holds nothing for the windows."""
    return any(r.get("energy_j") is not None for r in rows)


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
