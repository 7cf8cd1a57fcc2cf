"""Reading one run for `assess`, `compare` and `report`: windows, energy rows and samples, through the query core."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from jouled.config import Config
from jouled.energy import SeriesArrays
from jouled.errors import NothingFound, UserError
from jouled.query import carbon_for, compute_rows, load_series, series_metas
from jouled.rows import energy_rows, run_totals
from jouled.series import choose_totals, meta_or_default
from jouled.store.reader import ReadStore
from jouled.store.sqlite import SeriesKey
from jouled.windows import windows_from_markers

from .assess import (
    Finding,
    coverage_findings,
    gpu_range_findings,
    samples_findings,
    smi_nvml_findings,
    totals_findings,
    wall_correlation_findings,
)
from .compare import Comparison, EpochWindow, Interval, compare
from .data import RunData, run_series

LIMIT_ATTRS = ("gpu_power_min_w", "gpu_power_max_w")  # a run marker's attrs may carry the GPUs' power limits


def parse_limits(text: str) -> tuple[float, float]:
    """`MIN:MAX` in watts (e.g. 100:350) → (min, max); UserError when malformed."""
    try:
        lo_s, hi_s = text.split(":")
        lo, hi = float(lo_s), float(hi_s)
    except ValueError:
        raise UserError(f"--gpu-limits {text!r}: give MIN:MAX in watts, e.g. 100:350") from None
    if not (0 <= lo < hi):
        raise UserError(f"--gpu-limits {text!r}: need 0 <= MIN < MAX (watts)")
    return lo, hi


class NoEpochs(NothingFound):
    """The run has no epoch to assess or compare (exit 1, as `energy epochs` gives for the same run)."""


def load_run(store: ReadStore, config: Config, run: str, limits: str | None = None) -> RunData:
    """Read everything about `run` the quality commands use. Errors are one-line UserErrors (the query core's)."""
    markers = store.read_markers(run)
    if not markers:
        compute_rows(store, config, run, ("epoch", "run"))  # raises the query core's error (no markers, unknown run)
    windows, marker_problems = windows_from_markers(markers)
    run_ws = [w for w in windows if w.scope == "run"]
    epoch_ws = sorted((w for w in windows if w.scope == "epoch"), key=lambda w: (w.start_ns, w.end_ns))
    if not epoch_ws:
        raise NoEpochs(f"run {run!r}: no complete epoch (start and end markers) in {store.path} — "
                       "assess and compare work per epoch")
    host = (run_ws or epoch_ws)[0].host
    start_ns = run_ws[0].start_ns if run_ws else epoch_ws[0].start_ns
    end_ns = run_ws[0].end_ns if run_ws else epoch_ws[-1].end_ns
    gpus = (run_ws or epoch_ws)[0].gpus
    mine = [w for w in windows if w.scope in ("epoch", "run") and w.host == host]
    lo, hi = min(w.start_ns for w in mine), max(w.end_ns for w in mine)
    series = load_series(store, host, lo, hi, config)
    if any(k.host == host and len(store.series_meta_history(k)) > 1 for k in store.series()):
        # a series re-declared (a restart with another rate): the query core splits the run where it changed
        table, problems = compute_rows(store, config, run, ("epoch", "run"))
        rows = [r for r in table if r["host"] == host]
    else:
        # the rows `energy epochs` prints (the same pure functions), from the samples read once for both
        rows = energy_rows(mine, series, carbon=carbon_for(store, config, lo, hi))
        problems = [str(p) for p in marker_problems]
    epoch_rows = [r for r in rows if r["scope"] == "epoch"]
    metas = {k: meta_or_default(s.meta, *k) for k, s in series.items()}
    avg: dict[tuple[str, str], SeriesArrays] = {}
    for key in store.series():
        if key.host != host or key.source != "nvml" or (key.source, key.device) not in series:
            continue
        d = store.read_series(SeriesKey(key.host, key.source, key.device), start_ns - 5_000_000_000,
                              end_ns + 5_000_000_000, extras=True)
        p = d.extras.get("power_avg_w")
        if p is not None and bool(np.isfinite(p).any()):
            ok = np.isfinite(p)
            avg[(key.source, key.device)] = SeriesArrays(d.time_ns[ok], p[ok], np.full(int(ok.sum()), np.nan),
                                                         key.source, key.device, float("nan"))
    totals = run_totals(rows, series_metas(store, host))
    run_total = next((t for t in totals if t["run"] == run), None)
    keys = [f"{src}:{dev}" for (src, dev) in series]
    total_keys = tuple(run_total["total_devices"]) if run_total else choose_totals(keys, metas).total
    data = RunData(run, host, start_ns, end_ns, tuple(gpus), [EpochWindow(w.epoch, w.phase, w.start_ns, w.end_ns)
                   for w in epoch_ws], epoch_rows, run_total, series, avg, metas, total_keys, problems=problems)
    declared = {m.for_device(dev): (float(m.power_min_w), float(m.power_max_w)) for (_src, dev), m in metas.items()
                if m.role == "gpu" and m.power_min_w is not None and m.power_max_w is not None}
    if limits:
        data.limits_w, data.limits_from = {"*": parse_limits(limits)}, "--gpu-limits"
    elif declared:
        data.limits_w, data.limits_from = declared, "the GPU source's declaration (NVML power-management limits)"
    else:
        attrs: dict[str, Any] = {}
        for m in markers:
            if m.scope == "run" and m.event == "start":
                attrs = m.attrs
        lim = _limits_from_attrs(attrs)
        if lim:
            data.limits_w, data.limits_from = lim, "the run's start marker (attrs gpu_power_min_w/gpu_power_max_w)"
    return data


def _limits_from_attrs(attrs: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """attrs {"gpu_power_min_w": 100, "gpu_power_max_w": 350} (every GPU) or per device {"gpu0": [100, 350]} under
    "gpu_power_limits_w"."""
    out: dict[str, tuple[float, float]] = {}
    per = attrs.get("gpu_power_limits_w")
    if isinstance(per, str):
        try:
            per = json.loads(per)
        except ValueError:
            per = None
    if isinstance(per, dict):
        for dev, v in per.items():
            if isinstance(v, list | tuple) and len(v) == 2:
                out[str(dev)] = (float(v[0]), float(v[1]))
    try:
        if all(k in attrs for k in LIMIT_ATTRS):
            out["*"] = (float(attrs[LIMIT_ATTRS[0]]), float(attrs[LIMIT_ATTRS[1]]))
    except (TypeError, ValueError):
        pass
    return out


def assess_run(data: RunData) -> list[Finding]:
    """Every check of the checklist, in the README's order."""
    series = run_series(data)
    return [
        *samples_findings(data.rows),
        *coverage_findings(series, data.start_ns, data.end_ns, data.rows),
        *smi_nvml_findings(data.rows, data.metas),
        *gpu_range_findings(series, data.start_ns, data.end_ns, data.limits_w),
        *wall_correlation_findings(data.rows, data.metas),
        *totals_findings(data.total_keys, data.metas),
    ]


def compare_run(data: RunData, codecarbon: dict[str, list[Interval]] | None = None) -> Comparison:
    return compare(data.windows, data.series, avg_power=data.avg_power, gpus=data.gpus, codecarbon=codecarbon)
