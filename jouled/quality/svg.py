"""Small hand-written SVG charts for `jouled report` (pure: numbers in, SVG text out; no plotting library needed).

Line and scatter charts (optionally log x), shaded bands (epochs), vertical reference lines (power limits) and bar
charts (histograms, carbon per epoch), each with axes, nice ticks, axis labels and a legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


@dataclass
class Trace:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = ""
    mode: str = "line"  # line | points | both


@dataclass
class Layout:
    title: str
    xlabel: str
    ylabel: str
    width: int = 1040
    height: int = 340
    logx: bool = False
    bands: Sequence[tuple[float, float]] = ()  # shaded x ranges (every other one drawn darker)
    band_labels: Sequence[str] = ()  # written at the top of each band when they fit
    vlines: Sequence[tuple[float, str]] = ()  # (x, label)
    hline_zero: bool = False
    margin: tuple[int, int, int, int] = (58, 24, 56, 72)  # top, right, bottom, left (the legend sits under the title)
    integer_x: bool = False  # ticks on whole numbers only (epoch numbers)
    xlim: tuple[float, float] | None = None  # the x range (default: the data's)
    notes: list[str] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About n round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 × 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)):  # equal, or apart by float rounding only: a step would not advance
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out: list[float] = []
    v = first
    while v <= hi + step * 1e-9 and len(out) <= 10 * n:  # bounded: a step below float resolution cannot hang
        out.append(round(v, 12))
        v += step
    return out


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.6g}"


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def xy_chart(traces: Sequence[Trace], lay: Layout) -> str:
    """A line/scatter chart. Points that are NaN break a line; log x drops x <= 0."""
    top, right, bottom, left = lay.margin
    w, h = lay.width, lay.height
    legend_rows = _legend_rows([t.label for t in traces], w - left - right)
    top += LEGEND_ROW_PX * (len(legend_rows) - 1)  # a long legend wraps: the plot moves down, the chart keeps its size
    pw, ph = w - left - right, h - top - bottom
    fx = (lambda v: math.log10(v)) if lay.logx else (lambda v: v)
    xs = [fx(x) for t in traces for x, y in zip(t.xs, t.ys, strict=True) if _finite(x) and _finite(y) and (x > 0 or not lay.logx)]
    ys = [y for t in traces for x, y in zip(t.xs, t.ys, strict=True) if _finite(x) and _finite(y) and (x > 0 or not lay.logx)]
    for a, b in lay.bands:
        xs += [fx(a), fx(b)] if not lay.logx or a > 0 else []
    if lay.hline_zero:
        ys.append(0.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="{escape(lay.title)}" style="{FONT};font-size:12px">',
             f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>',
             f'<text x="{left}" y="22" style="font-size:15px;font-weight:600">{escape(lay.title)}</text>']
    if not xs or not ys:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#777">no data</text></svg>')
        return "".join(parts)
    x0, x1 = (fx(lay.xlim[0]), fx(lay.xlim[1])) if lay.xlim is not None else (min(xs), max(xs))
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    flat = y1 - y0 <= 1e-9 * max(abs(y0), abs(y1))  # equal values, or equal but for float rounding
    pad = (abs(y1) * 0.1 or 1.0) if flat else (y1 - y0) * 0.06
    y0, y1 = (y0 - pad if y0 < 0 else max(0.0, y0 - pad)), y1 + pad
    if y0 > 0 and y0 < 0.25 * y1:
        y0 = 0.0  # start at zero when zero is near: bars and powers read truer

    def px(v: float) -> float:
        return left + (fx(v) - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>')
    for i, (a, b) in enumerate(lay.bands):
        if lay.logx and a <= 0:
            continue
        xa, xb = max(left, px(a)), min(left + pw, px(b))
        if xb > xa:
            parts.append(f'<rect x="{xa:.2f}" y="{top}" width="{xb - xa:.2f}" height="{ph}" '
                         f'fill="{"#d6e4f5" if i % 2 == 0 else "#edf2f9"}"/>')
            label = lay.band_labels[i] if i < len(lay.band_labels) else ""
            if label and xb - xa >= 7.0 * len(label) + 4:  # above the plot: no line crosses it
                parts.append(f'<text x="{(xa + xb) / 2:.2f}" y="{top - 4}" text-anchor="middle" fill="#4a5d78" '
                             f'style="font-size:11px">{escape(label)}</text>')
    # y grid and ticks
    for v in nice_ticks(y0, y1):
        if y0 <= v <= y1:
            y = py(v)
            parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.2f}" y2="{y:.2f}" stroke="#e0e0e0"/>'
                         f'<text x="{left - 6}" y="{y + 4:.2f}" text-anchor="end" fill="#333">{fmt_tick(v)}</text>')
    # x ticks
    if lay.logx:
        ticks = [10.0 ** k for k in range(math.floor(x0), math.ceil(x1) + 1)]
        ticks += [m * 10.0 ** k for k in range(math.floor(x0), math.ceil(x1) + 1) for m in (2, 5)]
        ticks = sorted(t for t in ticks if x0 <= math.log10(t) <= x1)
    else:
        ticks = [t for t in nice_ticks(x0, x1, 8) if x0 <= t <= x1 and (not lay.integer_x or t == int(t))]
    for v in ticks:
        x = px(v)
        parts.append(f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{top}" y2="{top + ph}" stroke="#ececec"/>'
                     f'<text x="{x:.2f}" y="{top + ph + 16}" text-anchor="middle" fill="#333">{fmt_tick(v)}</text>')
    if lay.hline_zero and y0 < 0 < y1:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(0):.2f}" y2="{py(0):.2f}" stroke="#555"/>')
    for x, label in lay.vlines:
        if (lay.logx and x <= 0) or not x0 <= fx(x) <= x1:
            continue
        xx = px(x)
        parts.append(f'<line x1="{xx:.2f}" x2="{xx:.2f}" y1="{top}" y2="{top + ph}" stroke="#444" stroke-dasharray="5 4"/>'
                     f'<text x="{xx + 4:.2f}" y="{top + 14}" fill="#222">{escape(label)}</text>')
    for i, t in enumerate(traces):
        color = t.color or PALETTE[i % len(PALETTE)]
        pts = [(px(x), py(y)) if _finite(x) and _finite(y) and (x > 0 or not lay.logx) else None
               for x, y in zip(t.xs, t.ys, strict=True)]
        if t.mode in ("line", "both"):
            runs: list[list[tuple[float, float]]] = [[]]
            for p in pts:
                if p is None:
                    runs.append([])
                else:
                    runs[-1].append(p)
            for r in runs:
                if len(r) >= 2:
                    d = " ".join(f"{x:.1f},{y:.1f}" for x, y in r)
                    parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{d}"/>')
        if t.mode in ("points", "both"):
            for p in pts:
                if p is not None:
                    parts.append(f'<circle cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="3.2" fill="{color}" fill-opacity="0.8"/>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 12}" text-anchor="middle" fill="#222">{escape(lay.xlabel)}</text>')
    parts.append(f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#222">'
                 f'{escape(lay.ylabel)}</text>')
    colors = [t.color or PALETTE[i % len(PALETTE)] for i, t in enumerate(traces)]
    parts.append(_legend(legend_rows, [t.label for t in traces], colors, left, 42))
    parts.append("</svg>")
    return "".join(parts)


LEGEND_ROW_PX = 16


def _item_px(label: str) -> float:
    return 7.0 * len(label) + 34


def _legend_rows(labels: Sequence[str], width: float) -> list[list[int]]:
    """Trace indices per legend row, wrapped to `width` pixels."""
    rows: list[list[int]] = [[]]
    used = 0.0
    for i, label in enumerate(labels):
        if rows[-1] and used + _item_px(label) > width:
            rows.append([])
            used = 0.0
        rows[-1].append(i)
        used += _item_px(label)
    return rows


def _legend(rows: Sequence[Sequence[int]], labels: Sequence[str], colors: Sequence[str], left_x: float, y: float) -> str:
    """Swatches under the title, from the plot's left edge, one row per entry of `rows`."""
    out = []
    for r, row in enumerate(rows):
        x = left_x
        yy = y + r * LEGEND_ROW_PX
        for i in row:
            label = labels[i]
            out.append(f'<rect x="{x:.1f}" y="{yy - 9}" width="12" height="10" fill="{colors[i]}"/>'
                       f'<text x="{x + 16:.1f}" y="{yy}" fill="#222">{escape(label)}</text>')
            x += _item_px(label)
    return "".join(out)


def bar_chart(labels: Sequence[str], values: Sequence[float], lay: Layout, *, color: str = PALETTE[0],
              vlines_at: Sequence[tuple[float, str]] = (), x_range: tuple[float, float] | None = None) -> str:
    """Bars over categories (`labels`), or — with `x_range` — a histogram over a numeric x axis whose bins split
    x_range evenly; `vlines_at` are then drawn at their x values."""
    top, right, bottom, left = lay.margin
    w, h = lay.width, lay.height
    pw, ph = w - left - right, h - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="{escape(lay.title)}" style="{FONT};font-size:12px">',
             f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>',
             f'<text x="{left}" y="22" style="font-size:15px;font-weight:600">{escape(lay.title)}</text>']
    vals = [v if _finite(v) else 0.0 for v in values]
    if not vals:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#777">no data</text></svg>')
        return "".join(parts)
    y1 = max(vals) * 1.08 or 1.0
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>')
    for v in nice_ticks(0.0, y1):
        y = top + ph - v / y1 * ph
        if v <= y1:
            parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.2f}" y2="{y:.2f}" stroke="#e0e0e0"/>'
                         f'<text x="{left - 6}" y="{y + 4:.2f}" text-anchor="end" fill="#333">{fmt_tick(v)}</text>')
    n = len(vals)
    bw = pw / n
    for i, v in enumerate(vals):
        bh = v / y1 * ph
        parts.append(f'<rect x="{left + i * bw + bw * 0.08:.2f}" y="{top + ph - bh:.2f}" width="{max(bw * 0.84, 0.8):.2f}" '
                     f'height="{bh:.2f}" fill="{color}"><title>{escape(labels[i])}: {v:.4g}</title></rect>')
    if x_range is not None:
        lo, hi = x_range

        def px(x: float) -> float:
            return left + (x - lo) / (hi - lo) * pw

        for t in nice_ticks(lo, hi, 8):
            if lo <= t <= hi:
                parts.append(f'<text x="{px(t):.2f}" y="{top + ph + 16}" text-anchor="middle" fill="#333">{fmt_tick(t)}</text>')
        for x, label in vlines_at:
            xx = px(x)
            parts.append(f'<line x1="{xx:.2f}" x2="{xx:.2f}" y1="{top}" y2="{top + ph}" stroke="#d62728" '
                         f'stroke-width="1.5" stroke-dasharray="6 4"/>'
                         f'<text x="{xx + (4 if xx < left + pw - 120 else -4):.2f}" y="{top + 14}" fill="#b01e1e" '
                         f'text-anchor="{"start" if xx < left + pw - 120 else "end"}">{escape(label)}</text>')
    else:
        every = max(1, math.ceil(n / 30))
        for i in range(0, n, every):
            parts.append(f'<text x="{left + (i + 0.5) * bw:.2f}" y="{top + ph + 16}" text-anchor="middle" fill="#333">'
                         f'{escape(labels[i])}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 12}" text-anchor="middle" fill="#222">{escape(lay.xlabel)}</text>')
    parts.append(f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#222">'
                 f'{escape(lay.ylabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)
