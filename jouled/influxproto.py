"""InfluxDB line protocol for jouled's schema (power, marker, carbon, allocation, jouled_health): pure encoding, no I/O.

The schema is a contract shared by the forwarder (daemon/forward), the InfluxDB reader (jouled/store/influx*) and
the Grafana dashboards; names here are that contract (``docs/architecture.md``, "Forwarding to InfluxDB").

Escaping (InfluxDB 1.x line protocol, checked against a real ``influxd`` by tests/forward/test_influxproto_server.py):

- measurement: ``,`` and space are backslash-escaped.
- tag keys, tag values, field keys: ``,``, ``=`` and space are backslash-escaped. InfluxDB 1.x has no escape for a
  backslash in a tag, so a backslash is written as is; a backslash *directly before* ``,``, ``=``, space or at the
  *end* of a tag value cannot be represented (the server would read it as an escape), nor can a newline or carriage
  return (the line would end). Such a tag value raises ``LineProtocolError`` — decided: refuse rather than silently
  rewrite a host/device/run name, because a rewritten name would no longer match the local log. The forwarder
  quarantines what it cannot encode (with this reason) and forwards the rest.
- an empty tag value is left out (InfluxDB has no empty tags); readers treat a missing tag as "".
- string field values: ``"`` and ``\\`` are backslash-escaped; any other character (newlines included) is written
  as is, inside the quotes — InfluxDB accepts it.
- floats are written with Python's shortest round-trip repr (so the value read back is bit-identical); NaN and
  ±inf are never written (a field that is not finite is left out; a point left with no field is skipped).
- integer fields end in ``i``; timestamps are nanoseconds (``precision=ns``).

Same measurement + tag set + timestamp = the same point: a retried batch overwrites itself (idempotent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

import numpy as np

from jouled.model import Allocation, CarbonPoint, Marker
from jouled.series import SeriesMeta, meta_or_default

POWER = "power"
MARKER = "marker"
CARBON = "carbon"
ALLOCATION = "allocation"
HEALTH = "jouled_health"

# jouled_health fields that are integers in the schema (any other health field is a float)
HEALTH_INT_FIELDS = frozenset({"errors", "missed", "backlog_points", "points_sent", "quarantined"})

FieldValue = float | int | str | bool | np.integer | np.floating


class LineProtocolError(ValueError):
    """A value the line protocol cannot carry (a tag with a newline, a lone surrogate, …); the message says which."""


_TAG_TRANS = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEAS_TRANS = str.maketrans({",": r"\,", " ": r"\ "})
_STR_TRANS = str.maketrans({'"': r"\"", "\\": "\\\\"})
_TAG_SPECIAL = (",", "=", " ")


def _check_text(what: str, s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise LineProtocolError(f"{what} {s!r}: not valid Unicode (a lone surrogate)") from None


def escape_tag(s: str, what: str = "tag value") -> str:
    """Escape a tag key, tag value or field key; raise LineProtocolError for what InfluxDB cannot represent."""
    if "\n" in s or "\r" in s:
        raise LineProtocolError(f"{what} {s!r}: contains a newline, which InfluxDB tags cannot hold")
    if "\\" in s:
        if s.endswith("\\") or any(f"\\{c}" in s for c in _TAG_SPECIAL):
            raise LineProtocolError(
                f"{what} {s!r}: a backslash at the end or before ',', '=' or a space cannot be written to InfluxDB 1.x"
            )
    _check_text(what, s)
    return s.translate(_TAG_TRANS)


def escape_measurement(s: str) -> str:
    if not s or "\n" in s or "\r" in s:
        raise LineProtocolError(f"measurement {s!r}: empty or contains a newline")
    _check_text("measurement", s)
    return s.translate(_MEAS_TRANS)


def escape_string_field(s: str) -> str:
    """A string field value, quotes included."""
    _check_text("string field", s)
    return '"' + s.translate(_STR_TRANS) + '"'


def tag_set(tags: Mapping[str, str | None]) -> str:
    """``,k=v,k2=v2`` sorted by key (InfluxDB's preferred order), empty/None values left out; '' when none."""
    parts = [
        f",{escape_tag(k, 'tag key')}={escape_tag(v, f'tag {k}')}" for k, v in sorted(tags.items()) if v
    ]
    return "".join(parts)


def format_field(value: FieldValue) -> str | None:
    """One field value in line protocol, or None when it must be left out (a NaN/inf float)."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return f"{int(value)}i"
    if isinstance(value, float | np.floating):
        f = float(value)
        return repr(f) if math.isfinite(f) else None
    if isinstance(value, str):
        return escape_string_field(value)
    raise LineProtocolError(f"field value {value!r}: unsupported type {type(value).__name__}")


def field_set(fields: Mapping[str, FieldValue | None]) -> str:
    """``k=v,k2=v2`` (None and non-finite floats left out); '' when no field is left."""
    parts = []
    for k, v in fields.items():
        if v is None:
            continue
        s = format_field(v)
        if s is not None:
            parts.append(f"{escape_tag(k, 'field key')}={s}")
    return ",".join(parts)


def encode_point(
    measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue | None], time_ns: int
) -> str | None:
    """One line (no trailing newline), or None when no field is left to write."""
    fs = field_set(fields)
    if not fs:
        return None
    return f"{escape_measurement(measurement)}{tag_set(tags)} {fs} {int(time_ns)}"


# -- power samples ---------------------------------------------------------------------------------------------


def sample_tags(host: str, source: str, device: str, meta: SeriesMeta | None) -> dict[str, str]:
    """The `power` tags of one series: host, source, device (the stored device name), role, kind, scope.

    role/kind come from the series' declaration (`SeriesMeta`, or `default_meta` when none); scope is `host` for a
    host-wide series (SeriesMeta.host_wide: the CPU estimate) and `device` otherwise.
    """
    m = meta_or_default(meta, source, device)
    return {
        "host": host, "source": source, "device": device, "role": m.role, "kind": m.kind,
        "scope": "host" if m.host_wide else "device",
    }


def power_prefix(tags: Mapping[str, str]) -> str:
    """``power,<tags> `` — the constant start of every line of one series (escaped once per chunk)."""
    return f"{POWER}{tag_set(tags)} "


def encode_samples(prefix: str, time_ns: np.ndarray, power_w: np.ndarray, energy_j: np.ndarray) -> list[str]:
    """Lines for one series' column arrays (the prefix from `power_prefix`); non-finite fields left out.

    Vectorised where it matters: the masks are numpy, and the common shapes (every sample has both fields, or
    only one field) are one list comprehension over Python floats, about 1 µs a line. Rows where neither field
    is finite are skipped.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    p = np.asarray(power_w, dtype=np.float64)
    e = np.asarray(energy_j, dtype=np.float64)
    if t.size == 0:
        return []
    p_ok = np.isfinite(p)
    e_ok = np.isfinite(e)
    tl = t.tolist()
    if bool(p_ok.all()):
        pl = p.tolist()
        if bool(e_ok.all()):
            return [f"{prefix}power_w={a!r},energy_j={b!r} {c}" for a, b, c in zip(pl, e.tolist(), tl, strict=True)]
        if not bool(e_ok.any()):
            return [f"{prefix}power_w={a!r} {c}" for a, c in zip(pl, tl, strict=True)]
    elif not bool(p_ok.any()) and bool(e_ok.all()):
        return [f"{prefix}energy_j={b!r} {c}" for b, c in zip(e.tolist(), tl, strict=True)]
    # mixed: per-row choice, non-finite values masked to None first
    pl2: list[float | None] = np.where(p_ok, p, np.nan).tolist()
    el2: list[float | None] = np.where(e_ok, e, np.nan).tolist()
    pm, em = p_ok.tolist(), e_ok.tolist()
    out: list[str] = []
    for a, ao, b, bo, c in zip(pl2, pm, el2, em, tl, strict=True):
        if ao and bo:
            out.append(f"{prefix}power_w={a!r},energy_j={b!r} {c}")
        elif ao:
            out.append(f"{prefix}power_w={a!r} {c}")
        elif bo:
            out.append(f"{prefix}energy_j={b!r} {c}")
    return out


def encode_series(
    host: str, source: str, device: str, meta: SeriesMeta | None,
    time_ns: np.ndarray, power_w: np.ndarray, energy_j: np.ndarray,
) -> list[str]:
    """`power` lines for one series' samples (tags from `sample_tags`). Raises LineProtocolError for a bad tag."""
    return encode_samples(power_prefix(sample_tags(host, source, device, meta)), time_ns, power_w, energy_j)


# -- markers, carbon, allocations, health -----------------------------------------------------------------------


def encode_marker(m: Marker) -> str:
    """A `marker` line: tags host, run, scope, event, seq; fields epoch (int), phase, arch, gpus, attrs (JSON)."""
    tags = {"host": m.host, "run": m.run, "scope": m.scope, "event": m.event,
            "seq": None if m.seq is None else str(m.seq)}
    fields: dict[str, FieldValue | None] = {
        "epoch": None if m.epoch is None else int(m.epoch),
        "phase": m.phase, "arch": m.arch, "gpus": " ".join(m.gpus),
        "attrs": json.dumps(m.attrs, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    }
    line = encode_point(MARKER, tags, fields, m.time_ns)
    assert line is not None  # gpus and attrs are always there
    return line


def encode_carbon(c: CarbonPoint) -> str | None:
    """A `carbon` line (tags zone, provider, forecast=true|false; field intensity_g_per_kwh), None if not finite."""
    tags = {"zone": c.zone, "provider": c.provider, "forecast": "true" if c.forecast else "false"}
    return encode_point(CARBON, tags, {"intensity_g_per_kwh": float(c.intensity_g_per_kwh)}, c.time_ns)


def encode_allocation(a: Allocation) -> str | None:
    """An `allocation` line: tag search; fields gpus_sampling, gpus_evaluation (int), lambda_s, intensity (float)."""
    fields: dict[str, FieldValue | None] = {
        "gpus_sampling": int(a.gpus_sampling), "gpus_evaluation": int(a.gpus_evaluation),
        "lambda_s": float(a.lambda_s), "intensity_g_per_kwh": float(a.intensity_g_per_kwh),
    }
    return encode_point(ALLOCATION, {"search": a.search}, fields, a.time_ns)


def encode_health(host: str, source: str, fields: Mapping[str, float | int | None], time_ns: int) -> str | None:
    """A `jouled_health` line. Fields in HEALTH_INT_FIELDS are written as integers, all others as floats, so one
    field never changes type between points (InfluxDB would refuse the later one)."""
    typed: dict[str, FieldValue | None] = {}
    for k, v in fields.items():
        if v is None:
            continue
        typed[k] = int(v) if k in HEALTH_INT_FIELDS else float(v)
    return encode_point(HEALTH, {"host": host, "source": source}, typed, time_ns)


def join_lines(lines: Iterable[str]) -> bytes:
    """A write body: lines joined by newlines, UTF-8."""
    return "\n".join(lines).encode("utf-8")

