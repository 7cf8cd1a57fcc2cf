"""Flux query texts for the influx2:// reader (pure): every user value travels as a Flux parameter, never in the text.

Each builder returns (flux, params); `InfluxV2Store` passes params to `query_api().query(..., params=...)`, which
influxdb-client sends as an AST of extern options beside the query (`option jouled_host = "…"` as a string literal,
never text), and the query refers to them by name. The names carry the prefix `jouled_` so that none shadows a Flux
builtin or option (`now`, `location`, …). Times are integer ns (`time(v: jouled_start)`), and each row carries its
own time back as integer ns (`t_ns`), because the client's datetime has only microseconds.

Not exercised against a real server here (no Flux server is installable in this project's CI: InfluxDB 1.6 has no
Flux); the texts are tested as text, and their parameters are checked to be the only place user values appear.
"""

from __future__ import annotations

from typing import Any

# InfluxDB's representable time range (ns): its MinTime/MaxTime, one step inside int64
INFLUX_MIN_NS = -9_223_372_036_854_775_806
INFLUX_MAX_NS = 9_223_372_036_854_775_806

Params = dict[str, Any]
P = "jouled_"  # the prefix of every parameter name (see above)

_T_NS = '  |> map(fn: (r) => ({r with t_ns: int(v: r._time)}))\n'


def clamp_ns(t_ns: int | None, default: int) -> int:
    """A time bound InfluxDB accepts: None → `default`, else clipped to its range."""
    if t_ns is None:
        return default
    return max(INFLUX_MIN_NS, min(INFLUX_MAX_NS, int(t_ns)))


def _head(bucket: str, start_ns: int | None, end_ns: int | None) -> tuple[str, Params]:
    """`from |> range` over [start, end] (range's stop is exclusive: end + 1)."""
    start = clamp_ns(start_ns, 0)
    stop = min(clamp_ns(end_ns, INFLUX_MAX_NS - 1) + 1, INFLUX_MAX_NS)
    text = f"from(bucket: {P}bucket)\n  |> range(start: time(v: {P}start), stop: time(v: {P}stop))\n"
    return text, {f"{P}bucket": bucket, f"{P}start": start, f"{P}stop": stop}


def _tag_clause(tag: str, name: str, value: str, params: Params) -> str:
    """`r.<tag> == jouled_<name>`; an empty value means "tag absent" (InfluxDB stores no empty tags)."""
    if value == "":
        return f"not exists r.{tag}"
    params[P + name] = value
    return f"r.{tag} == {P}{name}"


def series_query(bucket: str) -> tuple[str, Params]:
    """The first point of every `power` series (one row per series and field): its tags and first time."""
    text, params = _head(bucket, None, None)
    text += (
        '  |> filter(fn: (r) => r._measurement == "power")\n'
        "  |> first()\n"
        + _T_NS
        + '  |> keep(columns: ["t_ns", "host", "source", "device", "role", "kind", "scope"])\n'
    )
    return text, params


def samples_query(
    bucket: str, host: str, source: str, device: str, start_ns: int | None, end_ns: int | None
) -> tuple[str, Params]:
    """One series' samples in [start, end], one row per time with columns power_w / energy_j (null: absent)."""
    text, params = _head(bucket, start_ns, end_ns)
    conds = " and ".join([
        'r._measurement == "power"',
        _tag_clause("host", "host", host, params),
        _tag_clause("source", "source", source, params),
        _tag_clause("device", "device", device, params),
        '(r._field == "power_w" or r._field == "energy_j")',
    ])
    text += (
        f"  |> filter(fn: (r) => {conds})\n"
        '  |> keep(columns: ["_time", "_field", "_value"])\n'
        "  |> group()\n"
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        '  |> sort(columns: ["_time"])\n'
        + _T_NS
    )
    return text, params


def time_range_query(bucket: str, which: str) -> tuple[str, Params]:
    """The first (`which` = "min") or last ("max") `power` sample time."""
    if which not in ("min", "max"):
        raise ValueError(which)
    text, params = _head(bucket, None, None)
    text += (
        '  |> filter(fn: (r) => r._measurement == "power")\n'
        '  |> keep(columns: ["_time"])\n'
        "  |> group()\n"
        f'  |> {which}(column: "_time")\n'
        + _T_NS
    )
    return text, params


def markers_query(bucket: str, run: str | None, host: str | None) -> tuple[str, Params]:
    """Markers (of `run`, on `host`), one row per marker: tags and fields as columns."""
    text, params = _head(bucket, None, None)
    conds = ['r._measurement == "marker"']
    if run is not None:
        conds.append(_tag_clause("run", "run", run, params))
    if host is not None:
        conds.append(_tag_clause("host", "host", host, params))
    text += (
        f"  |> filter(fn: (r) => {' and '.join(conds)})\n"
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        + _T_NS
    )
    return text, params


def runs_query(bucket: str) -> tuple[str, Params]:
    """The distinct `run` tags of `marker` (rows with `_value`)."""
    text, params = _head(bucket, None, None)
    text += (
        '  |> filter(fn: (r) => r._measurement == "marker")\n'
        '  |> keep(columns: ["run"])\n'
        "  |> group()\n"
        '  |> distinct(column: "run")\n'
    )
    return text, params


def carbon_query(bucket: str, zone: str | None, start_ns: int | None, end_ns: int | None, forecast: bool) -> tuple[str, Params]:
    """Carbon intensity points: rows with zone, provider, _value (g/kWh), t_ns."""
    text, params = _head(bucket, start_ns, end_ns)
    params[P + "forecast"] = "true" if forecast else "false"
    conds = ['r._measurement == "carbon"', 'r._field == "intensity_g_per_kwh"', f"r.forecast == {P}forecast"]
    if zone:
        conds.append(_tag_clause("zone", "zone", zone, params))
    text += f"  |> filter(fn: (r) => {' and '.join(conds)})\n" + _T_NS
    return text, params
