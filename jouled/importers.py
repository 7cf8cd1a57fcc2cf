"""Parse sample and marker logs (CSV per DESIGN.md, or InfluxDB line protocol), validating every row (pure)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from jouled.model import EVENTS, SCOPES, Marker, Sample
from jouled.timefmt import TimeFormatError, parse_rfc3339_ns

SAMPLE_COLUMNS = ("time", "host", "source", "device", "power_w", "energy_j")
MARKER_COLUMNS = ("time", "host", "run", "scope", "event", "epoch", "phase", "arch", "gpus")
T = TypeVar("T")
OnProgress = Callable[[int, int], None]  # (lines done, lines in the file)
PROGRESS_EVERY = 10_000  # lines between progress calls: cheap next to parsing them
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Parsed(Generic[T]):
    items: list[T]
    errors: list[RowError]
    rows: int
    # a problem with the file as a whole (no header, wrong columns): no row can be read, so --skip-bad
    # cannot help; empty when the file's shape is right
    fatal: str = ""


def parse_time_ns(value: str) -> int:
    """RFC 3339 (ns-exact; naive means UTC) or integer nanoseconds since the epoch (jouled.timefmt)."""
    v = value.strip()
    if re.fullmatch(r"-?\d+", v):
        return _int64(v, "time")
    try:
        return parse_rfc3339_ns(v, naive_utc=True)
    except TimeFormatError as e:
        raise ValueError(f"time {e}") from None


def _int64(value: str | int, name: str, *, min_value: int = INT64_MIN) -> int:
    """An integer the store can hold (int64), checked before conversion so a 5,000-digit string is cheap to refuse."""
    if isinstance(value, str) and len(value.strip().lstrip("+-")) > 19:
        raise ValueError(f"{name} {value[:30]!r}… does not fit in 64 bits")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an integer") from None
    if not min_value <= n <= INT64_MAX:
        raise ValueError(f"{name} {n} is out of range ({min_value}..{INT64_MAX})")
    return n


def _opt_float(value: str | None, name: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        f = float(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} {value!r} is not finite")
    return f


def sniff_format(text: str) -> str:
    """'lp' when the first non-empty line looks like line protocol (has '=' and a space), else 'csv'."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            return "lp" if "=" in line and " " in line.strip() else "csv"
    return "csv"


# -- samples -------------------------------------------------------------------------------------


def parse_samples(text: str, *, default_host: str, fmt: str = "auto", on_progress: OnProgress | None = None) -> Parsed[Sample]:
    """Samples from a log; `on_progress(lines done, lines)` now and then (a bar for big files)."""
    fmt = sniff_format(text) if fmt == "auto" else fmt
    if fmt == "csv":
        return _parse_csv(text, SAMPLE_COLUMNS, ("time", "source", "device"), lambda r: _sample_row(r, default_host),
                          on_progress)
    return _parse_lp(text, "power", lambda p: _sample_lp(p, default_host), on_progress)


def _sample_row(r: dict[str, str], default_host: str) -> Sample:
    p = _opt_float(r.get("power_w"), "power_w")
    e = _opt_float(r.get("energy_j"), "energy_j")
    if p is None and e is None:
        raise ValueError("power_w and energy_j are both empty: give at least one")
    if not r["source"].strip() or not r["device"].strip():
        raise ValueError("source and device must not be empty")
    return Sample(
        parse_time_ns(r["time"]), (r.get("host") or "").strip() or default_host, r["source"].strip(),
        r["device"].strip(), p, e,
    )


def _sample_lp(p: LpPoint, default_host: str) -> Sample:
    if "source" not in p.tags or "device" not in p.tags:
        raise ValueError("power points need tags source and device")
    pw = p.fields.get("power_w")
    en = p.fields.get("energy_j")
    if pw is None and en is None:
        raise ValueError("power points need a power_w or energy_j field")
    extras = {k: _num(v, k) for k, v in p.fields.items() if k not in ("power_w", "energy_j") and _is_num(v)}
    return Sample(
        p.time_ns, p.tags.get("host", default_host), p.tags["source"], p.tags["device"],
        None if pw is None else _num(pw, "power_w"), None if en is None else _num(en, "energy_j"), extras,
    )


# -- markers -------------------------------------------------------------------------------------


def parse_markers(text: str, *, default_host: str, fmt: str = "auto", on_progress: OnProgress | None = None) -> Parsed[Marker]:
    """Markers from a log. Rows carry no seq in CSV: it is assigned per run in file order."""
    fmt = sniff_format(text) if fmt == "auto" else fmt
    parsed: Parsed[Marker]
    if fmt == "csv":
        parsed = _parse_csv(text, MARKER_COLUMNS, ("time", "run", "scope", "event"), lambda r: _marker_row(r, default_host),
                            on_progress)
    else:
        parsed = _parse_lp(text, "marker", lambda p: _marker_lp(p, default_host))
    seqs: dict[str, int] = {}
    out = []
    for m in parsed.items:
        if m.seq >= 0:
            seqs[m.run] = max(seqs.get(m.run, -1), m.seq)
            out.append(m)
            continue
        seq = seqs.get(m.run, -1) + 1
        seqs[m.run] = seq
        out.append(Marker(m.time_ns, m.host, m.run, m.scope, m.event, seq, m.epoch, m.phase, m.arch, m.gpus, m.attrs))
    parsed.items = out
    return parsed


def _check_marker(scope: str, event: str, epoch: int | None, phase: str | None) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    if event not in EVENTS:
        raise ValueError(f"event {event!r} is not one of {', '.join(EVENTS)}")
    if scope in ("epoch", "phase") and epoch is None:
        raise ValueError(f"scope {scope} needs an epoch")
    if scope == "phase" and not phase:
        raise ValueError("scope phase needs a phase")


def _marker_row(r: dict[str, str], default_host: str) -> Marker:
    epoch_s = (r.get("epoch") or "").strip()
    epoch = _int64(epoch_s, "epoch", min_value=0) if epoch_s else None
    scope, event = r["scope"].strip(), r["event"].strip()
    phase = (r.get("phase") or "").strip() or None
    _check_marker(scope, event, epoch, phase)
    if not r["run"].strip():
        raise ValueError("run must not be empty")
    return Marker(
        time_ns=parse_time_ns(r["time"]), host=(r.get("host") or "").strip() or default_host, run=r["run"].strip(),
        scope=scope, event=event, seq=-1, epoch=epoch, phase=phase, arch=(r.get("arch") or "").strip() or None,
        gpus=tuple((r.get("gpus") or "").split()),
    )


def _marker_lp(p: LpPoint, default_host: str) -> Marker:
    for t in ("run", "scope", "event"):
        if t not in p.tags:
            raise ValueError(f"marker points need tag {t}")
    epoch = p.fields.get("epoch")
    phase = p.fields.get("phase") or p.tags.get("phase")
    seq = p.fields.get("seq")
    ep = None if epoch is None else _int64(int(_num(epoch, "epoch")), "epoch", min_value=0)
    _check_marker(p.tags["scope"], p.tags["event"], ep, None if phase is None else str(phase))
    gpus = p.fields.get("gpus") or p.tags.get("gpus") or ""
    return Marker(
        time_ns=p.time_ns, host=p.tags.get("host", default_host), run=p.tags["run"], scope=p.tags["scope"],
        event=p.tags["event"], seq=-1 if seq is None else _int64(int(_num(seq, "seq")), "seq", min_value=0), epoch=ep,
        phase=None if phase is None else str(phase), arch=None if p.fields.get("arch") is None else str(p.fields["arch"]),
        gpus=tuple(str(gpus).split()),
    )


# -- CSV and line-protocol readers ---------------------------------------------------------------


def _parse_csv(
    text: str, known: tuple[str, ...], required: tuple[str, ...], row_fn: Any, on_progress: OnProgress | None = None
) -> Parsed[T]:
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": the csv module handles \r and \r\n itself
    total_lines = text.count("\n") + 1
    items: list[T] = []
    errors: list[RowError] = []
    expected = f"the header row must name the columns {','.join(known)} (required: {','.join(required)})"
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return Parsed(items, [], 0, f"empty file — {expected}")
    except csv.Error as e:
        return Parsed(items, [], 0, f"line 1: not CSV ({e}) — {expected}")
    missing = [c for c in required if c not in header]
    if missing:
        return Parsed(items, [], 0, f"line 1: header lacks column(s) {', '.join(missing)} — {expected}")
    unknown = [c for c in header if c not in known]
    if unknown:
        return Parsed(items, [], 0, f"line 1: unknown column(s) {', '.join(unknown)} — {expected}")
    rows = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a NUL byte, or a quote left open: the rest cannot be split into rows
            rows += 1
            errors.append(RowError(reader.line_num, f"not CSV ({e})"))
            break
        line = reader.line_num
        if on_progress is not None and line % PROGRESS_EVERY == 0:
            on_progress(line, total_lines)
        if not fields or all(not f.strip() for f in fields):
            continue
        rows += 1
        if len(fields) != len(header):
            errors.append(RowError(line, f"{len(fields)} fields, header has {len(header)}"))
            continue
        try:
            items.append(row_fn(dict(zip(header, fields, strict=True))))
        except ValueError as e:
            errors.append(RowError(line, str(e)))
    return Parsed(items, errors, rows)


@dataclass
class LpPoint:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ns: int


_LP_SPLIT = re.compile(r"(?<!\\) ")


def parse_lp_line(line: str) -> LpPoint:
    """One InfluxDB line-protocol point: measurement[,tag=v...] field=v[,field=v...] [timestamp_ns]."""
    parts = _split_unquoted(line.strip())
    if len(parts) < 2 or len(parts) > 3:
        raise ValueError("expected 'measurement,tags fields timestamp'")
    head = _split_escaped(parts[0], ",")
    meas = _unescape(head[0])
    tags = {}
    for kv in head[1:]:
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"tag {kv!r} has no '='")
        tags[_unescape(k)] = _unescape(v)
    fields: dict[str, Any] = {}
    for kv in _split_escaped(parts[1], ",", quotes=True):
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"field {kv!r} has no '='")
        fields[_unescape(k)] = _lp_value(v)
    if len(parts) < 3:
        raise ValueError("a timestamp (ns) is required")
    ts = _int64(parts[2], "timestamp (ns)")
    return LpPoint(meas, tags, fields, ts)


def _parse_lp(text: str, measurement: str, point_fn: Any, on_progress: OnProgress | None = None) -> Parsed[T]:
    items: list[T] = []
    errors: list[RowError] = []
    rows = 0
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        if on_progress is not None and i % PROGRESS_EVERY == 0:
            on_progress(i, len(lines))
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rows += 1
        try:
            p = parse_lp_line(line)
            if p.measurement != measurement:
                raise ValueError(f"measurement {p.measurement!r}, expected {measurement!r}")
            items.append(point_fn(p))
        except ValueError as e:
            errors.append(RowError(i, str(e)))
    return Parsed(items, errors, rows)


def _split_unquoted(s: str) -> list[str]:
    out, cur, q, esc = [], [], False, False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
            continue
        if ch == "\\":
            cur.append(ch)
            esc = True
            continue
        if ch == '"':
            q = not q
        if ch == " " and not q:
            if cur:
                out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _split_escaped(s: str, sep: str, quotes: bool = False) -> list[str]:
    out, cur, q, esc = [], [], False, False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif quotes and ch == '"':
            q = not q
            cur.append(ch)
        elif ch == sep and not q:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _lp_value(v: str) -> Any:
    if v.startswith('"') and v.endswith('"') and len(v) >= 2:
        return v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if v in ("t", "T", "true", "True", "TRUE"):
        return True
    if v in ("f", "F", "false", "False", "FALSE"):
        return False
    if v.endswith(("i", "u")):
        try:
            return int(v[:-1])
        except ValueError:
            raise ValueError(f"field value {v!r} is not an integer") from None
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"field value {v!r} is not a number, boolean or quoted string") from None


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _num(v: Any, name: str) -> float:
    try:
        f = float(v) if _is_num(v) else math.nan
    except OverflowError:  # an integer field too large for a float
        f = math.nan
    if not math.isfinite(f):
        raise ValueError(f"{name} {str(v)[:30]!r} is not a finite number")
    return f


def summarize_errors(errors: Iterable[RowError], path: str) -> str:
    errs = list(errors)
    shown = "; ".join(str(e) for e in errs[:3])
    more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
    return f"{path}: {len(errs)} bad row(s): {shown}{more} — fix them, or pass --skip-bad to import the good rows"
