"""CodeCarbon's emissions.csv as energy intervals for `jouled compare` (parsing is pure; `read_emissions` reads the file).

CodeCarbon writes one row per tracker stop or flush (or per task): `timestamp` (when the row was written, ISO 8601,
usually without a zone: the machine's local time), `duration` (s) and the energies in kWh (`energy_consumed`,
`cpu_energy`, `gpu_energy`, `ram_energy`). Rows of one `run_id` whose duration and energy only grow are its running
totals: consecutive differences give the intervals. Any other row covers [timestamp − duration, timestamp].
"""

from __future__ import annotations

import csv
import io
import itertools
from datetime import datetime
from pathlib import Path

from jouled.errors import UserError
from jouled.quality.compare import Interval

J_PER_KWH = 3.6e6
NEEDED = ("timestamp", "duration", "energy_consumed")


def _time_ns(s: str) -> int:
    dt = datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.astimezone()  # CodeCarbon writes datetime.now(): local time of the machine that ran it
    return round(dt.timestamp() * 1e6) * 1000


def parse_emissions(text: str, name: str = "emissions.csv") -> dict[str, list[Interval]]:
    """`total`, `gpu` and `cpu` (cpu_energy + ram_energy) intervals in joules; UserError naming the row when bad."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise UserError(f"{name}: no rows — pass CodeCarbon's emissions.csv (save_to_file=True)")
    missing = [c for c in NEEDED if c not in rows[0]]
    if missing:
        raise UserError(f"{name}: column(s) {', '.join(missing)} missing — is this CodeCarbon's emissions.csv?")
    parsed: list[tuple[str, int, float, dict[str, float]]] = []
    for i, r in enumerate(rows, start=2):
        try:
            end_ns = _time_ns(r["timestamp"])
            dur = float(r["duration"])
            kwh = {k: float(r.get(c) or 0.0) for k, c in (("total", "energy_consumed"), ("gpu", "gpu_energy"),
                                                         ("cpu", "cpu_energy"), ("ram", "ram_energy"))}
        except (ValueError, TypeError) as e:
            raise UserError(f"{name} line {i}: {e} — timestamp must be ISO 8601, duration and energies numbers") from None
        parsed.append((r.get("run_id") or "", end_ns, dur, kwh))
    out: dict[str, list[Interval]] = {"total": [], "gpu": [], "cpu": []}
    by_run: dict[str, list[tuple[str, int, float, dict[str, float]]]] = {}
    for p in parsed:
        by_run.setdefault(p[0], []).append(p)
    for rs in by_run.values():
        rs.sort(key=lambda p: p[1])
        cumulative = len(rs) > 1 and all(
            b[2] >= a[2] and b[3]["total"] >= a[3]["total"] for a, b in itertools.pairwise(rs))
        prev: tuple[str, int, float, dict[str, float]] | None = None
        # running totals: the boundaries from the durations (µs) on one anchor, not from each row's timestamp
        # (CodeCarbon writes whole seconds: each row's end is up to 1 s early). The anchor is the latest start any
        # row allows; `jouled compare` then aligns the intervals with the run's markers (cccorrect.align_offset_ns).
        anchor_ns = max(p[1] - round(p[2] * 1e9) for p in rs) if cumulative else 0
        for p in rs:
            _run, end_ns, dur, kwh = p
            if cumulative:
                end_ns = anchor_ns + round(dur * 1e9)
            if cumulative and prev is not None:
                start_ns = end_ns - round((dur - prev[2]) * 1e9)
                d = {k: kwh[k] - prev[3][k] for k in kwh}
            else:
                start_ns, d = end_ns - round(dur * 1e9), kwh
            prev = p
            if end_ns <= start_ns:
                continue
            out["total"].append(Interval(start_ns, end_ns, d["total"] * J_PER_KWH))
            out["gpu"].append(Interval(start_ns, end_ns, d["gpu"] * J_PER_KWH))
            out["cpu"].append(Interval(start_ns, end_ns, (d["cpu"] + d["ram"]) * J_PER_KWH))
    if not any(iv.energy_j for iv in out["gpu"]):
        out["gpu"] = []  # CodeCarbon saw no GPU: no figure, not zeros
    return out


def read_emissions(path: Path) -> dict[str, list[Interval]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"--codecarbon {path}: cannot read it ({e.strerror}) — pass CodeCarbon's emissions.csv") from None
    return parse_emissions(text, str(path))
