"""`jouled report`: one self-contained HTML page about a run's measurements (pure: data in, HTML text out).

Inline SVG only (jouled.quality.svg), inline CSS, no script, no network, no external asset: the file opens anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np
import numpy.typing as npt

from jouled.energy import SeriesArrays
from jouled.series import meta_or_default

from .assess import Finding, worst
from .calibfit import Fit
from .compare import NAN, TOOL_GROUP, Comparison
from .data import RunData, run_series
from .svg import PALETTE, Layout, Trace, bar_chart, xy_chart

MAX_POINTS = 1200  # per series in the power chart: bins of the run, mean power per bin (an empty bin breaks the line)
MAX_BANDS = 400  # epoch bands drawn; more would be a grey wash
HIST_BINS = 40
MAX_EPOCH_POINTS = 2000  # per tool in the per-epoch charts: every k-th epoch beyond that (the tables have them all)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f3f4f6;color:#111}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px}
.sub{color:#555;margin-bottom:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px 16px;margin:12px 0;overflow-x:auto}
.kpis{display:flex;gap:12px;flex-wrap:wrap}
.kpi{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:140px}
.kpi b{display:block;font-size:20px} .kpi span{color:#555;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e5e5e5;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f7f7f7} td:nth-child(-n+3){white-space:nowrap} td.num{text-align:right;font-variant-numeric:tabular-nums}
.v{font-weight:600;border-radius:4px;padding:1px 6px;display:inline-block}
.v-ok{background:#dcfce7;color:#166534} .v-warn{background:#fef3c7;color:#92400e}
.v-fail{background:#fee2e2;color:#991b1b} .v-na{background:#e5e7eb;color:#374151}
.note{color:#555;font-size:13px} td{overflow-wrap:anywhere} svg{max-width:100%;height:auto}
"""


def _esc(v: Any) -> str:
    return escape(str(v))


def _verdict(v: str) -> str:
    return f'<span class="v v-{"na" if v == "n/a" else v}">{_esc(v)}</span>'


def _j(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    if abs(v) >= 1e7:
        return f"{v / 1e6:.2f} MJ"
    return f"{v / 1000:.2f} kJ" if abs(v) >= 10_000 else f"{v:.1f} J"


def _duration(s: float) -> str:
    if s >= 2 * 3600:
        return f"{s / 3600:.2f} h"
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.1f} s"


def binned_power(s: SeriesArrays, start_ns: int, end_ns: int, bins: int) -> tuple[list[float], list[float]]:
    """(bin centre s since start, mean power W) over [start, end]; power from the counter's steps where the series
    has no power field; NaN in bins without a reading (the line breaks there: gaps stay visible)."""
    t = s.time_ns
    p = s.power_w
    ok = np.isfinite(p)
    if not bool(ok.any()):
        e = s.energy_j
        ok_e = np.isfinite(e)
        te, ee = t[ok_e], e[ok_e]
        if te.size < 2:
            return [], []
        dt = np.diff(te).astype(np.float64) * 1e-9
        de = np.diff(ee)
        good = (dt > 0) & (de >= 0)
        t = ((te[1:] + te[:-1]) // 2)[good]
        p = (de / np.where(dt > 0, dt, 1.0))[good]
        ok = np.ones(t.shape, dtype=bool)
    t, p = t[ok], p[ok]
    inside = (t >= start_ns) & (t <= end_ns)
    t, p = t[inside], p[inside]
    dur = max(end_ns - start_ns, 1)
    if t.size >= 2:  # a bin is at least 1.5 sampling periods wide: only a real hole leaves one empty
        spacing = float(np.median(np.diff(t)))
        if spacing > 0:
            bins = max(1, min(bins, int(dur / (1.5 * spacing))))
    idx = np.minimum(((t - start_ns) * bins) // dur, bins - 1).astype(np.int64)
    sums = np.bincount(idx, weights=p, minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    centres = (np.arange(bins) + 0.5) * dur / bins * 1e-9
    return [float(x) for x in centres], [float(y) for y in mean]


def _gpu_power(data: RunData) -> tuple[npt.NDArray[np.float64], str]:
    """Power readings of the run's GPUs (the direct series where NVML and nvidia-smi both ran) and their names."""
    best: dict[str, tuple[tuple[int, str], SeriesArrays]] = {}
    for (src, dev), s in run_series(data).items():
        m = meta_or_default(s.meta, src, dev)
        if m.role == "gpu":
            rank = (int(m.comparison) + int(m.estimated), src)
            phys = m.for_device(dev)
            if phys not in best or rank < best[phys][0]:
                best[phys] = (rank, s)
    vals = [s.power_w[(s.time_ns >= data.start_ns) & (s.time_ns <= data.end_ns) & np.isfinite(s.power_w)]
            for _r, s in best.values()]
    allp = np.concatenate(vals) if vals else np.empty(0)
    names = [f"{s.source}:{d}" for d, (_r, s) in sorted(best.items())]
    return allp, ", ".join(names) if len(names) <= 3 else f"{len(names)} GPUs: {names[0]} … {names[-1]}"


def _power_chart(data: RunData) -> str:
    dur_s = (data.end_ns - data.start_ns) * 1e-9
    unit, per = ("h", 3600.0) if dur_s >= 4 * 3600 else ("min", 60.0) if dur_s >= 600 else ("s", 1.0)
    traces = []
    for i, ((src, dev), s) in enumerate(sorted(run_series(data).items())):
        xs, ys = binned_power(s, data.start_ns, data.end_ns, MAX_POINTS)
        if xs:
            traces.append(Trace(f"{src}:{dev}", [x / per for x in xs], ys, PALETTE[i % len(PALETTE)]))
    ws = data.windows if len(data.windows) <= MAX_BANDS else []  # thousands of bands would be one grey wash
    bands = [((w.start_ns - data.start_ns) * 1e-9 / per, (w.end_ns - data.start_ns) * 1e-9 / per) for w in ws]
    title = "Power over time" + (" (epochs shaded)" if ws else "")
    return xy_chart(traces, Layout(title, f"time since run start ({unit})", "power (W)", xlim=(0.0, dur_s / per),
                                   bands=bands, height=380,
                                   band_labels=[f"epoch {w.epoch}" if w.epoch is not None else "" for w in ws]))


def _stride(n: int) -> int:
    return max(1, math.ceil(n / MAX_EPOCH_POINTS))


def _per_series_energy(data: RunData, c: Comparison) -> dict[str, list[float]]:
    """Per-epoch energy of every series as `jouled energy epochs` gives it (source:device → per window)."""
    index: dict[tuple[Any, Any], int] = {(w.start_ns, w.end_ns): i for i, w in enumerate(c.windows)}
    out: dict[str, list[float]] = {}
    for r in data.rows:
        i = index.get((r.get("start_ns"), r.get("end_ns")))
        if i is None or not r.get("source"):
            continue
        e = r.get("energy_j")
        out.setdefault(f"{r['source']}:{r['device']}", [NAN] * len(c.windows))[i] = NAN if e is None else float(e)
    return out


def _energy_chart(data: RunData, c: Comparison) -> str:
    k = _stride(len(c.windows))
    labels = [float(w.epoch if w.epoch is not None else i) for i, w in enumerate(c.windows)][::k]
    # the tools compared (NVML counter, instant, averaged, smi, RAPL, CodeCarbon, wall); a run with none of them
    # (a CPU estimate only) still shows its energy per epoch, series by series
    by, what = (c.energy_j, "tool") if c.energy_j else (_per_series_energy(data, c), "series")
    traces = [Trace(t, labels, list(v)[::k], PALETTE[i % len(PALETTE)], "both" if len(labels) <= 80 else "line")
              for i, (t, v) in enumerate(by.items())]
    title = f"Energy per epoch, by {what}" + (f" (every {k}th epoch)" if k > 1 else "")
    return xy_chart(traces, Layout(title, "epoch", "energy (J)", integer_x=True))


def _error_chart(c: Comparison) -> str:
    k = _stride(len(c.windows))
    dur = [w.duration_s for w in c.windows][::k]
    traces = []
    for i, t in enumerate(c.energy_j):
        truth = c.truth.get(TOOL_GROUP[t])
        if truth is None or truth == t:
            continue
        traces.append(Trace(f"{t} vs {truth}", dur, c.error_pct(t)[::k], PALETTE[i % len(PALETTE)], "points"))
    return xy_chart(traces, Layout("Error against the truth vs epoch length", "epoch length (s, log scale)",
                                   "error (%)", logx=True, hline_zero=True, vlines=[(0.5, ""), (1.0, ""), (5.0, ""),
                                                                                   (30.0, "")]))


def _histogram(data: RunData) -> tuple[str, str]:
    p, names = _gpu_power(data)
    if p.size == 0:
        return "", "No GPU power readings in this run."
    lim = data.limits_w.get("*") if data.limits_w else None
    if lim is None and data.limits_w:
        lim = next(iter(data.limits_w.values()))
    lo = min(float(p.min()), lim[0] if lim else float(p.min()))
    hi = max(float(p.max()), lim[1] if lim else float(p.max()))
    pad = (hi - lo) * 0.04 or 1.0
    lo, hi = max(0.0, lo - pad), hi + pad
    counts, edges = np.histogram(p, bins=HIST_BINS, range=(lo, hi))
    share = counts / max(1, p.size) * 100.0
    labels = [f"{edges[i]:.0f}–{edges[i + 1]:.0f} W" for i in range(len(counts))]
    vl = [(lim[0], f"min limit {lim[0]:.0f} W"), (lim[1], f"max limit {lim[1]:.0f} W")] if lim else []
    svg = bar_chart(labels, [float(x) for x in share], Layout(f"GPU power histogram ({names})", "GPU power (W)",
                                                              "share of readings (%)"),
                    color=PALETTE[2], vlines_at=vl, x_range=(lo, hi))
    note = (f"Limits from {escape(data.limits_from)}." if lim else
            "The GPU's power limits are unknown: pass --gpu-limits MIN:MAX (nvidia-smi -q -d POWER) to see the range used.")
    return svg, note


def _carbon(data: RunData, c: Comparison) -> tuple[str, str]:
    total = set(data.total_keys)
    per: dict[tuple[Any, ...], float] = {}
    for r in data.rows:
        if r["source"] and f"{r['source']}:{r['device']}" in total and r.get("carbon_g") is not None:
            k = (r["epoch"], r["phase"], int(r["start_ns"]))
            per[k] = per.get(k, 0.0) + float(r["carbon_g"])
    if not per:
        return "", "Carbon intensity unknown for this run (no [carbon] provider or constant configured)."
    labels, vals = [], []
    for i, w in enumerate(c.windows):
        labels.append(str(w.epoch if w.epoch is not None else i))
        vals.append(per.get((w.epoch, w.phase, w.start_ns), float("nan")))
    return bar_chart(labels, vals, Layout("Carbon per epoch (the run's total devices)", "epoch", "CO₂e (g)"),
                     color=PALETTE[4]), f"Total {sum(v for v in vals if math.isfinite(v)):.3f} g CO₂e."


def _findings_table(findings: Sequence[Finding]) -> str:
    rows = []
    for f in findings:
        nums = "; ".join(f"{k}={_fmt(v)}" for k, v in f.numbers.items())
        rows.append(f"<tr><td>{_esc(f.check)}</td><td>{_esc(f.subject)}</td><td>{_verdict(f.verdict)}</td>"
                    f"<td>{_esc(f.why)}</td><td class='note'>{_esc(nums)}</td></tr>")
    # fixed widths: a long list of device names in `numbers` wraps instead of squeezing `why`
    return ("<table style='table-layout:fixed'><colgroup><col style='width:14%'><col style='width:13%'>"
            "<col style='width:7%'><col style='width:33%'><col style='width:33%'></colgroup>"
            "<tr><th>check</th><th>subject</th><th>verdict</th><th>why</th><th>numbers</th></tr>"
            + "".join(rows) + "</table>")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "—"
    return "—" if v is None else str(v)


def _bucket_table(c: Comparison) -> str:
    if not c.buckets:
        return "<p class='note'>Only one tool per group measured this run: nothing to compare.</p>"
    rows = "".join(
        f"<tr><td>{_esc(b['bucket'])}</td><td>{_esc(b['tool'])}</td><td>{_esc(b['truth'])}</td>"
        f"<td class='num'>{b['epochs']}</td><td class='num'>{_fmt(b['mean_abs_error_pct'])} %</td>"
        f"<td class='num'>{_fmt(b['max_abs_error_pct'])} %</td><td class='num'>{_fmt(b['pearson'])}</td></tr>"
        for b in c.buckets)
    return ("<table><tr><th>epoch length</th><th>tool</th><th>truth</th><th>epochs</th><th>mean |error|</th>"
            "<th>max |error|</th><th>Pearson r</th></tr>" + rows + "</table>")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _calibration_section(cal: tuple[str, Fit, Sequence[Mapping[str, Any]]] | None) -> str:
    """The calibration in force: each phase's wall power beside what the time-varying and the static model predict,
    the fit's numbers, and the residuals."""
    if cal is None:
        return ("<h2>Calibration</h2><div class='card'><p class='note'>No calibration: run <code>jouled calibrate</code> "
                "with a wall meter to model the uncaptured power (board, fans, power supply).</p></div>")
    label, fit, points = cal
    if not fit.calibrated or fit.model is None:
        return (f"<h2>Calibration</h2><div class='card'><p class='note'>{_esc(label)}: no wall meter, so P_idle, P_busy "
                f"and the uncaptured power were not calibrated; CPU {fit.cpu_idle_w:.1f} W idle, {fit.cpu_busy_w:.1f} W "
                "busy (RAPL).</p></div>")
    res = {r.phase: r for r in fit.residuals}
    xs = [float(i) for i in range(len(points))]
    wall = [float(p["wall_w"]) if p.get("wall_w") is not None else math.nan for p in points]
    tv = [res[p["phase"]].time_varying_w if p["phase"] in res else math.nan for p in points]
    st = [res[p["phase"]].static_w if p["phase"] in res else math.nan for p in points]
    chart = xy_chart([Trace("wall meter", xs, wall, PALETTE[0], "points"),
                      Trace("time-varying model", xs, tv, PALETTE[1], "points"),
                      Trace("static model (P_idle/P_busy)", xs, st, PALETTE[2], "points")],
                     Layout("Calibration phases: wall power and the models", "phase (see the table)", "power (W)",
                            integer_x=True))
    m = fit.model
    def num(v: float | None, spec: str) -> str:
        return "—" if v is None or not math.isfinite(v) else format(v, spec)

    rows = "".join(
        f"<tr><td>{i}</td><td>{_esc(p['phase'])}</td><td>{p['util_cpu'] * 100:.0f} %</td><td>{p['gpu_w']:.1f}</td>"
        f"<td>{p['cpu_w'] + p['dram_w']:.1f}</td><td>{num(p.get('wall_w'), '.1f')}</td>"
        f"<td>{num(res[p['phase']].time_varying_err_w if p['phase'] in res else None, '+.2f')}</td>"
        f"<td>{num(res[p['phase']].static_err_w if p['phase'] in res else None, '+.2f')}</td></tr>"
        for i, p in enumerate(points))
    busy = ", ".join(f"{_esc(k)} {v:.1f} W" for k, v in sorted(fit.busy_by_load_w.items()))
    note = (f"{_esc(label)}. P_idle {fit.p_idle_w:.1f} W, P_busy {fit.p_busy_w:.1f} W (machine without GPUs; per load: "
            f"{busy}; best bound: {_esc(fit.best_load or '—')}). Uncaptured = {m.intercept_w:.2f} W + "
            f"{m.per_util_w:.2f} W·u + {m.per_gpu_w:.4f}·P_gpu + {m.per_util_gpu_w:.5f}·u·P_gpu.")
    return ("<h2>Calibration</h2><div class='card'>" + chart + f"<p class='note'>{note}</p>"
            "<table><tr><th>#</th><th>phase</th><th>CPU util</th><th>GPU W</th><th>CPU+DRAM W</th><th>wall W</th>"
            "<th>time-varying − wall</th><th>static − wall</th></tr>" + rows + "</table></div>")


def render_report(data: RunData, findings: Sequence[Finding], c: Comparison,
                  calibration: tuple[str, Fit, Sequence[Mapping[str, Any]]] | None = None) -> str:
    """The whole page. `calibration`: (its label, the fit, its phase points) when one is in force."""
    overall = worst(findings)
    rt = data.run_total or {}
    dur_s = (data.end_ns - data.start_ns) * 1e-9
    kpis = [
        ("verdict", _verdict(overall)), ("duration", _duration(dur_s)), ("epochs", str(len(data.windows))),
        ("energy (total)", _j(rt.get("energy_j"))), ("wall meter", _j(rt.get("wall_j"))),
        ("carbon", "—" if rt.get("carbon_g") is None else f"{rt['carbon_g']:.2f} g"),
    ]
    hist_svg, hist_note = _histogram(data)
    carbon_svg, carbon_note = _carbon(data, c)
    truth = ", ".join(f"{g}: {t}" for g, t in c.truth.items()) or "none"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>jouled report — run {_esc(data.run)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Measurement report — run {_esc(data.run)}</h1>",
        f"<div class='sub'>host {_esc(data.host)} · {_iso(data.start_ns)} → {_iso(data.end_ns)}"
        f" · series: {_esc(', '.join(f'{s}:{d}' for s, d in sorted(run_series(data))))}"
        f" · total of {_esc(', '.join(data.total_keys) or '—')}</div>",
        "<div class='kpis'>" + "".join(f"<div class='kpi'><span>{_esc(k)}</span><b>{v}</b></div>" for k, v in kpis)
        + "</div>",
        "<h2>Findings</h2><div class='card'>" + _findings_table(findings) + "</div>",
        "<h2>Power</h2><div class='card'>" + _power_chart(data)
        + (f"<p class='note'>{len(data.windows)} epochs: too many to shade (at most {MAX_BANDS}). Each line is the mean "
           f"power per bin of the run, at most {MAX_POINTS} bins; a break is a hole in the samples.</p>"
           if len(data.windows) > MAX_BANDS else
           f"<p class='note'>Each line is the mean power per bin of the run (at most {MAX_POINTS} bins); a break is a "
           "hole in the samples.</p>") + "</div>",
        "<h2>Energy per epoch</h2><div class='card'>" + _energy_chart(data, c) + "</div>",
        f"<h2>Tools against the truth</h2><div class='card'><p class='note'>Truth per group — {_esc(truth)}. "
        "GPU tools are held against the NVML counter, host totals against the wall meter.</p>"
        + _error_chart(c) + _bucket_table(c) + "</div>",
        "<h2>GPU power range</h2><div class='card'>" + hist_svg + f"<p class='note'>{hist_note}</p></div>",
        "<h2>Carbon per epoch</h2><div class='card'>" + carbon_svg + f"<p class='note'>{_esc(carbon_note)}</p></div>",
        _calibration_section(calibration),
        f"<p class='note'>Written by jouled report on {_iso(int(datetime.now(tz=UTC).timestamp() * 1e9))}.</p>",
        "</main></body></html>",
    ]
    return "".join(parts)
