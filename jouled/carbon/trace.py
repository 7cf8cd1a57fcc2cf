"""Recorded carbon-intensity traces: a pure CSV loader (`load_trace`) and a provider that replays one on a clock."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from jouled.carbon.base import (
    CarbonReading,
    ManualClock,
    ProviderError,
    TimeSource,
    VirtualClock,
    dt_to_ns,
    parse_iso_ns,
)
from jouled.carbon.series import IntensitySeries
from jouled.errors import UserError
from jouled.userfile import read_user_text

COLUMNS = ("direct", "lca")
# Let's Wait Awhile names its files by country; map them to Electricity Maps zone keys.
_LWA_ZONES = {"ger": "DE", "de": "DE", "gb": "GB", "fr": "FR", "cal": "US-CAL-CISO"}


@dataclass(frozen=True, eq=False)
class Trace(IntensitySeries):
    """A recorded intensity series (jouled.carbon.series.IntensitySeries: ``time_ns`` UTC, start of each period,
    strictly increasing; ``g_per_kwh`` in force from that time until the next) with where it came from."""

    path: str = ""
    column: str = ""  # which column was read, in words ("direct", "lca", "Carbon Intensity (LWA) ...")
    zone: str = ""
    estimated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def intensity(self) -> np.ndarray:
        return self.g_per_kwh

    def between(self, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Samples with start_s ≤ time < end_s: (time_s, g_per_kwh)."""
        w = self.window(start_s, end_s)
        return w.time_s, w.g_per_kwh

    def is_estimated(self, i: int) -> bool:
        return bool(self.estimated[i]) if self.estimated.size else False


def _fix(path: Path, line: int, what: str, fix: str) -> UserError:
    return UserError(f"trace {path}, line {line}: {what} — {fix}")


def _norm(h: str) -> str:
    return h.strip().lower()


def load_trace(path: str | Path, column: str = "direct") -> Trace:
    """Read a trace CSV: an Electricity Maps export (``column`` = "direct" or "lca"), a Let's Wait Awhile
    file (``Time,Carbon Intensity``) or a plain ``time,intensity_g_per_kwh`` file (time RFC 3339 or integer
    ns; a ``time_s`` column in seconds also works). Bad rows → UserError naming the file, line and the fix."""
    p = Path(path)
    col = column.strip().lower()
    if col not in COLUMNS:
        raise UserError(f"trace column {column!r}: unknown — use one of {', '.join(COLUMNS)}")
    text = read_user_text(
        p, encoding="utf-8-sig",
        missing=f"trace {p}: file not found — pass an existing CSV trace file",
        not_utf8=f"trace {p}: not UTF-8 text — export the trace as UTF-8 CSV",
        unreadable=f"trace {p}: cannot read ({{strerror}}) — check the path and its permissions",
    )
    rows = csv.reader(text.splitlines())
    try:
        header = next(rows)
    except StopIteration:
        raise UserError(f"trace {p}: empty file — a trace needs a header row and at least one data row") from None
    names = [_norm(h) for h in header]
    if "datetime (utc)" in names:
        return _load_em(p, header, names, rows, col)
    if names[:2] == ["time", "carbon intensity"]:
        return _load_two_col(
            p,
            rows,
            0,
            1,
            f"Carbon Intensity (Let's Wait Awhile, production-based LCA; {col!r} ignored)",
            _LWA_ZONES.get(p.stem.split("_")[0].lower(), ""),
        )
    if "intensity_g_per_kwh" in names and ("time" in names or "time_s" in names):
        ti = names.index("time") if "time" in names else names.index("time_s")
        return _load_two_col(
            p,
            rows,
            ti,
            names.index("intensity_g_per_kwh"),
            "intensity_g_per_kwh",
            "",
            seconds=names[ti] == "time_s",
            zone_col=names.index("zone") if "zone" in names else None,
        )
    raise UserError(
        f"trace {p}, line 1: unrecognised header {','.join(header)[:80]!r} — use an Electricity Maps export, "
        "a Let's Wait Awhile CSV (Time,Carbon Intensity) or a CSV with header time,intensity_g_per_kwh"
    )


def _parse_time_ns(p: Path, line: int, raw: str, *, seconds: bool = False) -> int:
    s = raw.strip()
    try:
        if seconds:
            return round(float(s) * 1e9)
        if re.fullmatch(r"-?\d+", s):
            return int(s)  # integer ns since the epoch, as the import formats define it
        if re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", s):
            # spreadsheet-edited Electricity Maps exports write DD/MM/YYYY HH:MM (still UTC)
            return dt_to_ns(datetime.strptime(s, "%d/%m/%Y %H:%M").replace(tzinfo=UTC))
        return parse_iso_ns(s)  # RFC 3339 (naive = UTC) exact, other ISO 8601 shapes via datetime
    except (ValueError, OverflowError):  # OverflowError: round(inf)
        raise _fix(p, line, f"time {raw!r} is not a date", "write YYYY-MM-DD HH:MM:SS (UTC), RFC 3339 or integer ns") from None


def _parse_value(p: Path, line: int, raw: str, name: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise _fix(p, line, f"{name} {raw!r} is not a number", "write the intensity in gCO2eq/kWh as a number") from None
    if not math.isfinite(v) or v < 0:
        raise _fix(p, line, f"{name} {raw!r} is not a finite non-negative number", "remove the row or correct the value")
    return v


def _finish(
    p: Path,
    times: list[int],
    values: list[float],
    lines: list[int],
    column: str,
    zone: str,
    estimated: list[bool] | None,
) -> Trace:
    if not times:
        raise UserError(f"trace {p}: no data rows — a trace needs at least one row after the header")
    t = np.asarray(times, dtype=np.int64)
    bad = np.nonzero(np.diff(t) <= 0)[0]
    if bad.size:
        i = int(bad[0]) + 1
        raise _fix(
            p,
            lines[i],
            "time is not after the previous row's (duplicate or out of order)",
            "sort the rows by time and remove duplicates",
        )
    return Trace(
        time_ns=t,
        g_per_kwh=np.asarray(values, dtype=np.float64),
        path=str(p),
        column=column,
        zone=zone,
        estimated=np.asarray(estimated if estimated is not None else [], dtype=bool),
    )


def _load_em(p: Path, header: list[str], names: list[str], rows: Iterator[list[str]], col: str) -> Trace:
    want = "(direct)" if col == "direct" else "(lca)"
    vi = next((i for i, n in enumerate(names) if n.startswith("carbon intensity") and n.endswith(want)), None)
    if vi is None:
        raise UserError(
            f"trace {p}, line 1: no 'Carbon Intensity ... {want}' column — "
            f"choose a column the file has ({', '.join(COLUMNS)}) or use the full export"
        )
    ti = names.index("datetime (utc)")
    zi = names.index("zone id") if "zone id" in names else None
    ei = names.index("data estimated") if "data estimated" in names else None
    times: list[int] = []
    values: list[float] = []
    lines: list[int] = []
    est: list[bool] = []
    zone = ""
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, vi):
            raise _fix(p, n, f"{len(row)} fields, expected {len(header)}", "restore the missing fields or delete the row")
        times.append(_parse_time_ns(p, n, row[ti]))
        values.append(_parse_value(p, n, row[vi], header[vi].strip()))
        lines.append(n)
        if ei is not None and len(row) > ei:
            est.append(row[ei].strip().lower() == "true")
        if not zone and zi is not None and len(row) > zi:
            zone = row[zi].strip()
    return _finish(p, times, values, lines, col, zone, est if len(est) == len(times) else None)


def _load_two_col(
    p: Path,
    rows: Iterator[list[str]],
    ti: int,
    vi: int,
    column: str,
    zone: str,
    *,
    seconds: bool = False,
    zone_col: int | None = None,
) -> Trace:
    times: list[int] = []
    values: list[float] = []
    lines: list[int] = []
    need = max(ti, vi) + 1
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < need:
            raise _fix(p, n, f"{len(row)} field(s), expected at least {need}", "write time and intensity on every row")
        times.append(_parse_time_ns(p, n, row[ti], seconds=seconds))
        values.append(_parse_value(p, n, row[vi], "intensity"))
        lines.append(n)
        if zone_col is not None and not zone and len(row) > zone_col:
            zone = row[zone_col].strip()
    return _finish(p, times, values, lines, column, zone, None)


class TraceProvider:
    """Replays a trace on a clock: current() is the value in force at the clock's time; history() the trace
    before it; forecast() the trace after it (perfect foresight, flagged so in ``note``)."""

    def __init__(
        self,
        source: str | Path | Trace,
        clock: TimeSource | None = None,
        *,
        column: str = "direct",
        zone: str = "",
        name: str = "trace",
        history_s: float = 86400.0,
        horizon_s: float = 86400.0,
    ) -> None:
        self.trace = source if isinstance(source, Trace) else load_trace(source, column)
        # default: replay from the start of the trace in real time, so a 2022 trace works today
        self.clock: TimeSource = clock if clock is not None else VirtualClock(self.trace.start_s, 1.0)
        self.zone = zone or self.trace.zone
        self.name = name
        self.history_s = history_s
        self.horizon_s = horizon_s

    def _check_zone(self, zone: str) -> str:
        if zone and self.zone and zone.upper() != self.zone.upper():
            raise UserError(f"zone {zone!r}: this trace ({self.trace.path}) is for {self.zone} — pass --zone {self.zone}")
        return self.zone or zone

    def _reading(self, i: int, zone: str, now_s: float, *, forecast: bool) -> CarbonReading:
        tr = self.trace
        t_ns = int(tr.time_ns[i])
        nxt = float(tr.time_s[i + 1]) if i + 1 < len(tr) else float(tr.time_s[i]) + tr.step_s
        note = f"trace column {tr.column}" + ("; perfect foresight from the trace" if forecast else "")
        return CarbonReading(
            time_ns=t_ns,
            zone=zone,
            provider=self.name,
            intensity_g_per_kwh=float(tr.g_per_kwh[i]),
            forecast=forecast,
            age_s=0.0 if forecast else max(0.0, now_s - float(tr.time_s[i])),
            estimated=tr.is_estimated(i),
            fetched_at_ns=round(now_s * 1e9),
            duration_s=nxt - float(tr.time_s[i]),
            note=note,
        )

    def _now(self) -> float:
        return self.clock.now_s()

    def current(self, zone: str) -> CarbonReading:
        z = self._check_zone(zone)
        now = self._now()
        try:
            i = self.trace.index_at(now)
        except ValueError:
            raise ProviderError(
                f"trace {self.trace.path}: clock time {datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC is outside "
                f"the trace ({datetime.fromtimestamp(self.trace.start_s, UTC):%Y-%m-%d} … "
                f"{datetime.fromtimestamp(self.trace.end_s, UTC):%Y-%m-%d})"
            ) from None
        return self._reading(i, z, now, forecast=False)

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        z = self._check_zone(zone)
        now = self._now()
        end_s = now if end is None else min(now, dt_to_ns(end) / 1e9)  # never the future
        start_s = end_s - self.history_s if start is None else dt_to_ns(start) / 1e9
        lo = int(np.searchsorted(self.trace.time_s, start_s, side="left"))
        hi = int(np.searchsorted(self.trace.time_s, end_s, side="right"))
        return [self._reading(i, z, now, forecast=False) for i in range(lo, hi)]

    def forecast(self, zone: str) -> list[CarbonReading]:
        z = self._check_zone(zone)
        now = self._now()
        lo = int(np.searchsorted(self.trace.time_s, now, side="right"))
        hi = int(np.searchsorted(self.trace.time_s, now + self.horizon_s, side="right"))
        return [self._reading(i, z, now, forecast=True) for i in range(lo, hi)]


__all__ = ["COLUMNS", "ManualClock", "Trace", "TraceProvider", "VirtualClock", "load_trace"]
