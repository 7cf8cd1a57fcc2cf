"""Grafana dashboards as code (grafana-foundation-sdk): `python -m jouled.grafana.generate` writes grafana/dashboards/.

Three dashboards over the one InfluxDB schema (README: Grafana) and the Prometheus metrics, one per datasource
flavour: InfluxQL (InfluxDB 1.x, and the v1 endpoints of 2.x/3.x), Flux (InfluxDB 2.x: the main panels) and PromQL.
The queries live in plain data (`Query`, `PanelSpec`) so the tests run each of them against real servers; the SDK
turns them into dashboard JSON. The SDK is a dev-time dependency (extra `dev`): the JSON is committed, and a test
checks that regenerating gives the committed files, so they never drift. `--check` does the same from a shell.

What the energy panels can and cannot say: InfluxQL cannot join a marker pair to the samples between them, so no
query here gives the energy of an epoch exactly. The dashboards show energy per time bucket (the integral of
power_w in each $__interval, or the counter's increase in PromQL) with the run's epoch markers as annotations, and
the energy over the selected time range; the exact per-epoch figures are `jouled energy epochs --run R`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

Flavour = Literal["influxql", "flux", "promql"]

# Datasource uids: the provisioning file creates datasources with exactly these; `jouled grafana push
# --datasource-uid flavour=UID` rewrites them for a Grafana whose datasources already exist under other uids.
DATASOURCE_UIDS: dict[Flavour, str] = {"influxql": "jouled-influxql", "flux": "jouled-flux", "promql": "jouled-prometheus"}
DATASOURCE_TYPES: dict[Flavour, str] = {"influxql": "influxdb", "flux": "influxdb", "promql": "prometheus"}
DASHBOARD_UIDS: dict[Flavour, str] = {"influxql": "jouled-influxql", "flux": "jouled-flux", "promql": "jouled-prometheus"}
TITLES: dict[Flavour, str] = {
    "influxql": "jouled — energy (InfluxDB 1.x, InfluxQL)",
    "flux": "jouled — energy (InfluxDB 2.x, Flux)",
    "promql": "jouled — energy (Prometheus)",
}
# roles that do not overlap one another, so their power may be stacked into a sum: wall, psys, core, uncore and
# cpu-estimate cover (parts of) the same watts as these and are shown unstacked
STACK_ROLES = "gpu|package|dram"
CARBON_UNIT = "suffix: g/kWh"


@dataclass(frozen=True)
class Query:
    """One panel target: the query text and how Grafana names its series."""

    expr: str
    legend: str = ""  # InfluxQL alias ($tag_x, $col), PromQL legendFormat ({{x}}); Flux names series itself
    table: bool = False  # InfluxQL resultFormat table; PromQL an instant query in table format


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: Literal["lines", "bars", "table", "stat"] = "lines"
    unit: str = "short"
    stacked: bool = False
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Variable:
    name: str
    query: str
    label: str = ""
    multi: bool = True  # multi-select with "All" (allValue .* : the regex forms =~ /^$x$/ and =~"$x" match every value)
    textbox_default: str | None = None  # a free-text variable (the Flux bucket) instead of a query


@dataclass(frozen=True)
class Annotation:
    name: str
    query: str
    color: str
    text_column: str = ""  # InfluxQL: the columns Grafana shows as the annotation's text and tags
    tags_columns: str = ""
    title_format: str = ""  # PromQL


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True)
class DashboardSpec:
    flavour: Flavour
    description: str
    variables: tuple[Variable, ...]
    annotations: tuple[Annotation, ...]
    rows: tuple[Row, ...] = field(default_factory=tuple)


# -- InfluxQL -------------------------------------------------------------------------------------------------------

_H = '"host" =~ /^$host$/'
_D = '"device" =~ /^$device$/'
_R = '"run" =~ /^$run$/'
_S = '"search" =~ /^$search$/'
_ROLES = f'"role" =~ /^({STACK_ROLES})$/'
_T = "$timeFilter"


def influxql_spec() -> DashboardSpec:
    power = Row("Power", (
        PanelSpec(
            "Power per device, stacked by source (GPU, CPU package, DRAM)",
            "Mean power_w per $__interval of the device-level roles that do not overlap (gpu, package, dram), "
            "stacked: the top of the stack is their sum. Wall, psys, core and uncore are in the next panel.",
            (Query(f'SELECT mean("power_w") AS "power_w" FROM "power" WHERE {_H} AND {_D} AND {_ROLES} AND {_T} '
                   'GROUP BY time($__interval), "host", "source", "device" fill(none)',
                   "$tag_source $tag_device"),),
            unit="watt", stacked=True,
        ),
        PanelSpec(
            "Every power series (not stacked)",
            "Mean power_w per $__interval of every source and role, measured and estimated. Wall, psys, core "
            "and uncore overlap the stacked roles, so these lines are not summed.",
            (Query(f'SELECT mean("power_w") AS "power_w" FROM "power" WHERE {_H} AND {_D} AND {_T} '
                   'GROUP BY time($__interval), "host", "source", "device", "role", "kind" fill(none)',
                   "$tag_source $tag_device ($tag_role, $tag_kind)"),),
            unit="watt",
        ),
    ))
    energy = Row("Energy", (
        PanelSpec(
            "Energy per interval (J), with the epochs of $run as annotations",
            "Not energy per epoch: the integral of power_w inside each $__interval bucket (InfluxQL cannot "
            "split at the markers), stacked over gpu, package and dram. Zoom to one epoch's annotations, or use "
            "`jouled energy epochs --run R` for exact per-epoch energy (counter-first, edges interpolated).",
            (Query(f'SELECT integral("power_w", 1s) AS "energy_j" FROM "power" WHERE {_H} AND {_D} AND {_ROLES} '
                   f'AND {_T} GROUP BY time($__interval), "host", "device" fill(none)',
                   "$tag_device"),),
            kind="bars", unit="joule", stacked=True,
        ),
        PanelSpec(
            "Energy over the selected time range (J)",
            "Per device over the dashboard's time range (zoom to a run or an epoch to read its energy): "
            "energy_integral_j integrates power_w (no interpolation at the range's edges); energy_counter_j is "
            "the counter's increase (spread of energy_j) where the source has a counter.",
            (Query(f'SELECT integral("power_w", 1s) AS "energy_integral_j", spread("energy_j") AS "energy_counter_j", '
                   f'count("power_w") AS "samples" FROM "power" WHERE {_H} AND {_D} AND {_T} '
                   'GROUP BY "host", "source", "device"', table=True),),
            kind="table", unit="joule",
        ),
        PanelSpec(
            "Epoch markers of $run",
            "The start and end markers of each epoch of the selected run(s): the windows `jouled energy epochs` "
            "measures.",
            (Query(f'SELECT "epoch" AS "epoch", "phase" AS "phase", "arch" AS "arch", "gpus" AS "gpus" FROM "marker" '
                   f"WHERE {_H} AND {_R} AND \"scope\" = 'epoch' AND {_T} GROUP BY \"run\", \"event\"", table=True),),
            kind="table",
        ),
        PanelSpec(
            "Runs by architecture ($arch)",
            "Runs whose start marker names an architecture matching $arch (markers without arch are not listed).",
            (Query(f'SELECT "arch" AS "arch", "gpus" AS "gpus" FROM "marker" WHERE {_H} AND "scope" = \'run\' '
                   f"AND \"event\" = 'start' AND \"arch\" =~ /^$arch$/ AND {_T} GROUP BY \"run\"", table=True),),
            kind="table",
        ),
    ))
    health = Row("Measurement health", (
        PanelSpec(
            "Sample rate per source (Hz)",
            "Achieved sampling rate each source reported (jouled_health rate_hz).",
            (Query(f'SELECT mean("rate_hz") AS "rate_hz" FROM "jouled_health" WHERE {_H} AND "source" != \'forwarder\' '
                   f'AND {_T} GROUP BY time($__interval), "host", "source" fill(none)', "$tag_source"),),
            unit="hertz",
        ),
        PanelSpec(
            "Largest gap between samples (s)",
            "Per device, the longest time between two consecutive samples in each $__interval, from the raw "
            "samples themselves: a gap here is a hole in the data, whatever the source reported.",
            (Query(f'SELECT max("gap_s") AS "max_gap_s" FROM (SELECT elapsed("power_w", 1s) AS "gap_s" FROM "power" '
                   f'WHERE {_H} AND {_D} AND {_T} GROUP BY "host", "source", "device") WHERE {_T} '
                   'GROUP BY time($__interval), "host", "source", "device" fill(none)', "$tag_source $tag_device"),),
            unit="s",
        ),
        PanelSpec(
            "Read errors and missed ticks per interval",
            "New read errors and missed sampling ticks per source in each $__interval (the difference of the "
            "cumulative errors and missed counts jouled_health carries).",
            (Query(f'SELECT non_negative_difference(last("errors")) AS "errors", '
                   f'non_negative_difference(last("missed")) AS "missed" FROM "jouled_health" WHERE {_H} '
                   f"AND \"source\" != 'forwarder' AND {_T} GROUP BY time($__interval), \"host\", \"source\" fill(none)",
                   "$tag_source $col"),),
            kind="bars",
        ),
        PanelSpec(
            "Jitter and last sample age (s)",
            "Sampling jitter and the age of each source's newest sample when the health point was written.",
            (Query(f'SELECT mean("jitter_s") AS "jitter_s", max("last_sample_age_s") AS "last_sample_age_s" '
                   f"FROM \"jouled_health\" WHERE {_H} AND \"source\" != 'forwarder' AND {_T} "
                   'GROUP BY time($__interval), "host", "source" fill(none)', "$tag_source $col"),),
            unit="s",
        ),
        PanelSpec(
            "Forwarder lag (s) and backlog (points)",
            "How far InfluxDB is behind the daemon's local log: nothing is lost while it is behind.",
            (Query(f'SELECT max("lag_s") AS "lag_s", max("backlog_points") AS "backlog_points" FROM "jouled_health" '
                   f"WHERE {_H} AND \"source\" = 'forwarder' AND {_T} GROUP BY time($__interval), \"host\" fill(none)",
                   "$tag_host $col"),),
            width=24,
        ),
    ))
    carbon = Row("Carbon and CE-NAS", (
        PanelSpec(
            "Grid carbon intensity (g/kWh)",
            "Intensity per zone and provider; forecast=true series are forecasts (widen the time range into the "
            "future to see them).",
            (Query(f'SELECT mean("intensity_g_per_kwh") AS "intensity_g_per_kwh" FROM "carbon" WHERE {_T} '
                   'GROUP BY time($__interval), "zone", "provider", "forecast" fill(none)',
                   "$tag_zone $tag_provider forecast=$tag_forecast"),),
            unit=CARBON_UNIT,
        ),
        PanelSpec(
            "CE-NAS GPU split: sampling vs evaluation",
            "GPUs the carbon-aware search gives to sampling (cheap supernet estimates) and to evaluation (full "
            "training), stacked: the top is the GPUs in use.",
            (Query(f'SELECT last("gpus_sampling") AS "gpus_sampling", last("gpus_evaluation") AS "gpus_evaluation" '
                   f'FROM "allocation" WHERE {_S} AND {_T} GROUP BY time($__interval), "search" fill(previous)',
                   "$tag_search $col"),),
            kind="bars", stacked=True,
        ),
        PanelSpec(
            "CE-NAS λs and the intensity it was computed from",
            "λs = (C − Cmin)/(Cmax − Cmin): the share of GPUs given to sampling.",
            (Query(f'SELECT last("lambda_s") AS "lambda_s", last("intensity_g_per_kwh") AS "intensity_g_per_kwh" '
                   f'FROM "allocation" WHERE {_S} AND {_T} GROUP BY time($__interval), "search" fill(previous)',
                   "$tag_search $col"),),
        ),
    ))
    return DashboardSpec(
        "influxql",
        "Power, energy per interval, markers, measurement health, carbon and the CE-NAS split from the jouled "
        "schema in InfluxDB 1.x (InfluxQL). Exact per-epoch energy: `jouled energy epochs --run R`.",
        (
            Variable("host", 'SHOW TAG VALUES FROM "power" WITH KEY = "host"'),
            Variable("device", f'SHOW TAG VALUES FROM "power" WITH KEY = "device" WHERE {_H}'),
            Variable("run", f'SHOW TAG VALUES FROM "marker" WITH KEY = "run" WHERE {_H}'),
            Variable("arch", f'SELECT DISTINCT("arch") FROM "marker" WHERE {_H} AND {_R} AND {_T}'),
            Variable("search", 'SHOW TAG VALUES FROM "allocation" WITH KEY = "search"'),
        ),
        (
            Annotation(
                "Markers of $run",
                f'SELECT "phase" AS "phase", "epoch" AS "epoch", "arch" AS "arch", "gpus" AS "gpus", "attrs" AS "attrs", '
                f'"scope"::tag AS "scope", "event"::tag AS "event" FROM "marker" WHERE {_H} AND {_R} AND {_T}',
                "#F2CC0C", text_column="phase", tags_columns="scope,event,epoch,arch",
            ),
        ),
        (power, energy, health, carbon),
    )


# -- Flux (InfluxDB 2.x): the main panels -----------------------------------------------------------------------

def _flux(measurement: str, *filters: str, fields: Sequence[str] = ()) -> str:
    """`from |> range |> filter` for one measurement, the field filter and the tag filters given."""
    lines = ['from(bucket: "${bucket}")', "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)"]
    cond = [f'r._measurement == "{measurement}"']
    if fields:
        cond.append("(" + " or ".join(f'r._field == "{f}"' for f in fields) + ")")
    lines.append(f"  |> filter(fn: (r) => {' and '.join(cond)})")
    if filters:
        lines.append(f"  |> filter(fn: (r) => {' and '.join(filters)})")
    return "\n".join(lines)


_FH = "r.host =~ /^${host:regex}$/"
_FD = "r.device =~ /^${device:regex}$/"
_FR = "r.run =~ /^${run:regex}$/"
_FS = "r.search =~ /^${search:regex}$/"
_FROLES = f"r.role =~ /^({STACK_ROLES})$/"


def flux_spec() -> DashboardSpec:
    main = Row("Power, energy, health, carbon", (
        PanelSpec(
            "Power per device, stacked by source (GPU, CPU package, DRAM)",
            "Mean power_w per window of the device-level roles that do not overlap (gpu, package, dram), stacked.",
            (Query(_flux("power", _FH, _FD, _FROLES, fields=["power_w"])
                   + '\n  |> group(columns: ["host", "source", "device"])'
                   + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"),),
            unit="watt", stacked=True,
        ),
        PanelSpec(
            "Energy per interval (J), with the epochs of $run as annotations",
            "Not energy per epoch: the integral of power_w inside each window, stacked over gpu, package and "
            "dram. Exact per-epoch energy: `jouled energy epochs --run R`.",
            (Query(_flux("power", _FH, _FD, _FROLES, fields=["power_w"])
                   + '\n  |> group(columns: ["host", "device"])'
                   + "\n  |> aggregateWindow(every: v.windowPeriod,"
                   + " fn: (column, tables=<-) => tables |> integral(unit: 1s, column: column), createEmpty: false)"),),
            kind="bars", unit="joule", stacked=True,
        ),
        PanelSpec(
            "Sample rate per source (Hz)",
            "Achieved sampling rate each source reported (jouled_health rate_hz).",
            (Query(_flux("jouled_health", _FH, 'r.source != "forwarder"', fields=["rate_hz"])
                   + '\n  |> group(columns: ["host", "source"])'
                   + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"),),
            unit="hertz",
        ),
        PanelSpec(
            "Read errors and missed ticks",
            "Cumulative read errors and missed ticks per source (jouled_health errors, missed).",
            (Query(_flux("jouled_health", _FH, 'r.source != "forwarder"', fields=["errors", "missed"])
                   + '\n  |> group(columns: ["host", "source", "_field"])'
                   + "\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)"),),
        ),
        PanelSpec(
            "Grid carbon intensity (g/kWh)",
            "Intensity per zone and provider (forecast=true: forecasts).",
            (Query(_flux("carbon", fields=["intensity_g_per_kwh"])
                   + '\n  |> group(columns: ["zone", "provider", "forecast"])'
                   + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"),),
            unit=CARBON_UNIT,
        ),
        PanelSpec(
            "CE-NAS GPU split: sampling vs evaluation",
            "GPUs given to sampling and to evaluation by the carbon-aware search, stacked.",
            (Query(_flux("allocation", _FS, fields=["gpus_sampling", "gpus_evaluation"])
                   + '\n  |> group(columns: ["search", "_field"])'
                   + "\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)"),),
            kind="bars", stacked=True,
        ),
    ))
    bucket_tags = 'import "influxdata/influxdb/schema"\nschema.tagValues(bucket: "${bucket}", tag: "%s"%s)'
    return DashboardSpec(
        "flux",
        "The main jouled panels for InfluxDB 2.x (Flux). Not tested against a Flux server: see the README.",
        (
            Variable("bucket", "", label="bucket", multi=False, textbox_default="jouled"),
            Variable("host", bucket_tags % ("host", ', predicate: (r) => r._measurement == "power"')),
            Variable("device", bucket_tags % ("device", f', predicate: (r) => r._measurement == "power" and {_FH}')),
            Variable("run", bucket_tags % ("run", f', predicate: (r) => r._measurement == "marker" and {_FH}')),
            Variable("search", bucket_tags % ("search", ', predicate: (r) => r._measurement == "allocation"')),
        ),
        (
            Annotation(
                "Markers of $run",
                _flux("marker", _FH, _FR)
                + '\n  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
                + '\n  |> group()',
                "#F2CC0C", text_column="phase", tags_columns="scope,event,epoch,arch",
            ),
        ),
        (main,),
    )


# -- PromQL ---------------------------------------------------------------------------------------------------------

_PH = 'host=~"$host"'
_PD = 'device=~"$device"'
_PROLES = f'role=~"{STACK_ROLES}"'


def promql_spec() -> DashboardSpec:
    power = Row("Power and energy", (
        PanelSpec(
            "Power per device, stacked by source (GPU, CPU package, DRAM)",
            "jouled_power_watts of the device-level roles that do not overlap (gpu, package, dram), stacked.",
            (Query(f"sum by (host, source, device) (jouled_power_watts{{{_PH}, {_PD}, {_PROLES}}})",
                   "{{source}} {{device}}"),),
            unit="watt", stacked=True,
        ),
        PanelSpec(
            "Every power series (not stacked)",
            "jouled_power_watts of every source and role; wall, psys, core and uncore overlap the stacked roles.",
            (Query(f"jouled_power_watts{{{_PH}, {_PD}}}", "{{source}} {{device}} ({{role}})"),),
            unit="watt",
        ),
        PanelSpec(
            "Energy per interval (J)",
            "Not energy per epoch (Prometheus has no run or epoch labels): the increase of "
            "jouled_energy_joules_total in each $__interval, stacked over gpu, package and dram. Per-epoch "
            "energy: the InfluxDB dashboards' markers, or `jouled energy epochs --run R`.",
            (Query(f"sum by (host, device) (increase(jouled_energy_joules_total{{{_PH}, {_PD}, {_PROLES}}}[$__interval]))",
                   "{{device}}"),),
            kind="bars", unit="joule", stacked=True,
        ),
        PanelSpec(
            "Energy over the selected time range (J)",
            "The increase of jouled_energy_joules_total per device over the dashboard's time range.",
            (Query(f"sum by (host, source, device) (increase(jouled_energy_joules_total{{{_PH}, {_PD}}}[$__range]))",
                   "{{source}} {{device}}", table=True),),
            kind="table", unit="joule",
        ),
    ))
    health = Row("Measurement health", (
        PanelSpec("Sample rate per source (Hz)", "Achieved sampling rate per source (jouled_sample_rate_hz).",
                  (Query(f"jouled_sample_rate_hz{{{_PH}}}", "{{source}}"),), unit="hertz"),
        PanelSpec(
            "Read errors and missed ticks per interval",
            "Increase of jouled_read_errors_total and jouled_missed_ticks_total per source.",
            (Query(f"sum by (host, source) (increase(jouled_read_errors_total{{{_PH}}}[$__rate_interval]))",
                   "{{source}} errors"),
             Query(f"sum by (host, source) (increase(jouled_missed_ticks_total{{{_PH}}}[$__rate_interval]))",
                   "{{source}} missed")),
            kind="bars",
        ),
        PanelSpec("Last sample age (s)", "Age of each source's newest sample (jouled_last_sample_age_seconds).",
                  (Query(f"jouled_last_sample_age_seconds{{{_PH}}}", "{{source}}"),), unit="s"),
        PanelSpec(
            "Markers and forwarder lag",
            "Markers handled per interval by result (stored, duplicate, rejected…) and how far InfluxDB is "
            "behind the local log (s).",
            (Query(f"sum by (result) (increase(jouled_markers_total{{{_PH}}}[$__rate_interval]))", "markers {{result}}"),
             Query(f"jouled_forwarder_lag_seconds{{{_PH}}}", "forwarder lag (s)")),
        ),
    ))
    carbon = Row("Carbon and CE-NAS", (
        PanelSpec("Grid carbon intensity (g/kWh)", "jouled_carbon_intensity_g_per_kwh per zone and provider.",
                  (Query("jouled_carbon_intensity_g_per_kwh", "{{zone}} ({{provider}})"),), unit=CARBON_UNIT),
        PanelSpec(
            "CE-NAS GPU split: sampling vs evaluation",
            "GPUs given to sampling and to evaluation by the carbon-aware search (jouled_cenas_gpus), stacked.",
            (Query('sum by (search, role) (jouled_cenas_gpus{search=~"$search"})', "{{search}} {{role}}"),),
            kind="bars", stacked=True,
        ),
        PanelSpec("CE-NAS λs", "The share of GPUs given to sampling (jouled_cenas_lambda_s).",
                  (Query('jouled_cenas_lambda_s{search=~"$search"}', "{{search}}"),), width=24),
    ))
    return DashboardSpec(
        "promql",
        "Live power, energy per interval, measurement health, carbon and the CE-NAS split from jouled's "
        "Prometheus endpoint ([prometheus] listen). Prometheus has no run labels: per-run views are in the "
        "InfluxDB dashboards.",
        (
            Variable("host", "label_values(jouled_power_watts, host)"),
            Variable("device", 'label_values(jouled_power_watts{host=~"$host"}, device)'),
            Variable("search", "label_values(jouled_cenas_gpus, search)"),
        ),
        (
            Annotation(
                "Markers stored",
                f'sum by (host) (increase(jouled_markers_total{{{_PH}, result="stored"}}[1m])) > 0',
                "#F2CC0C", title_format="markers stored on {{host}}",
            ),
        ),
        (power, health, carbon),
    )


def specs() -> dict[Flavour, DashboardSpec]:
    return {"influxql": influxql_spec(), "flux": flux_spec(), "promql": promql_spec()}


# -- the SDK: specs → dashboard JSON --------------------------------------------------------------------------------


class _Target(cogvariants.Dataquery):
    """An InfluxDB target (InfluxQL in raw mode, or Flux): the SDK has builders for Prometheus, not for InfluxDB."""

    def __init__(self, payload: dict[str, object]) -> None:
        self.payload = payload

    def to_json(self) -> dict[str, object]:
        return self.payload


class _Built(cogbuilder.Builder[Any]):
    """A builder for an object made already."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def build(self) -> Any:
        return self.obj


class _InfluxAnnotation(dash_m.AnnotationQuery):
    """An InfluxDB annotation: the SDK's AnnotationQuery has no field for the query and its columns."""

    def __init__(self, extra: dict[str, object], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra = extra

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), **self.extra}


def _ds(flavour: Flavour) -> dash_m.DataSourceRef:
    return dash_m.DataSourceRef(type_val=DATASOURCE_TYPES[flavour], uid=DATASOURCE_UIDS[flavour])


def _target(flavour: Flavour, q: Query, ref_id: str) -> cogbuilder.Builder[Any]:
    ds = _ds(flavour)
    if flavour == "promql":
        t = prom_b.Dataquery().expr(q.expr).ref_id(ref_id).datasource(ds).legend_format(q.legend or "__auto")
        return t.instant().format(prom_m.PromQueryFormat.TABLE) if q.table else t.range()
    payload: dict[str, object] = {"refId": ref_id, "datasource": ds, "query": q.expr}
    if flavour == "influxql":
        payload.update(rawQuery=True, resultFormat="table" if q.table else "time_series")
        if q.legend:
            payload["alias"] = q.legend
    return _Built(_Target(payload))


def _panel(flavour: Flavour, p: PanelSpec, panel_id: int) -> cogbuilder.Builder[dash_m.Panel]:
    b: Any
    if p.kind == "table":
        b = table_b.Panel()
    elif p.kind == "stat":
        b = stat_b.Panel()
    else:
        b = ts_b.Panel()
        b.draw_style(common_m.GraphDrawStyle.BARS if p.kind == "bars" else common_m.GraphDrawStyle.LINE)
        b.fill_opacity(80 if p.kind == "bars" else (30 if p.stacked else 0))
        b.line_width(1)
        b.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL if p.stacked else common_m.StackingMode.NONE))
        b.legend(common_b.VizLegendOptions().display_mode(common_m.LegendDisplayMode.TABLE)
                 .placement(common_m.LegendPlacement.BOTTOM).show_legend(True).calcs(["mean", "max", "lastNotNull"]))
    b.id(panel_id).title(p.title).description(p.description).datasource(_ds(flavour)).unit(p.unit)
    b.span(p.width).height(p.height)
    for i, q in enumerate(p.queries):
        b.with_target(_target(flavour, q, chr(ord("A") + i)))
    return b  # type: ignore[no-any-return]


def _variable(flavour: Flavour, v: Variable) -> cogbuilder.Builder[dash_m.VariableModel]:
    if v.textbox_default is not None:
        return dash_b.TextBoxVariable(v.name).label(v.label or v.name).default_value(v.textbox_default)
    b = (dash_b.QueryVariable(v.name).label(v.label or v.name).query(v.query).datasource(_ds(flavour))
         .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dash_m.VariableSort.ALPHABETICAL_ASC))
    if v.multi:
        b.multi(True).include_all(True).all_value(".*").current(
            dash_m.VariableOption(selected=True, text="All", value="$__all"))
    return b


def _annotation(flavour: Flavour, a: Annotation) -> cogbuilder.Builder[dash_m.AnnotationQuery]:
    common: dict[str, Any] = {"name": a.name, "datasource": _ds(flavour), "enable": True, "icon_color": a.color}
    if flavour == "promql":
        ann = _InfluxAnnotation({"step": "60s", "titleFormat": a.title_format, "useValueForTime": False},
                                expr=a.query, **common)
        return _Built(ann)
    target: dict[str, object] = {"refId": "Anno", "query": a.query, "fromAnnotations": True,
                                 "textColumn": a.text_column, "tagsColumn": a.tags_columns}
    if flavour == "influxql":
        target.update(rawQuery=True, resultFormat="table")
    return _Built(_InfluxAnnotation({"target": target, "textColumn": a.text_column, "tagsColumn": a.tags_columns},
                                    **common))


def build(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard JSON (a dict) for one spec."""
    f = spec.flavour
    d = (dash_b.Dashboard(TITLES[f]).uid(DASHBOARD_UIDS[f]).description(spec.description).tags(["jouled", f])
         .time("now-1h", "now").refresh("30s").timezone("browser").editable())
    for v in spec.variables:
        d.with_variable(_variable(f, v))
    for a in spec.annotations:
        d.annotation(_annotation(f, a))
    panel_id = 1
    for row in spec.rows:
        d.with_row(dash_b.Row(row.title).id(panel_id))
        panel_id += 1
        for p in row.panels:
            d.with_panel(_panel(f, p, panel_id))
            panel_id += 1
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return out


def render(dashboard: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, one trailing newline (stable diffs)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name → text of every dashboard."""
    return {f"{DASHBOARD_UIDS[f]}.json": render(build(s)) for f, s in specs().items()}


def default_out_dir() -> Path:
    return Path(__file__).resolve().parent / "dashboards"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jouled.grafana.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=default_out_dir(), help="folder to write the JSON into")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file differs")
    args = ap.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)} — run python -m jouled.grafana.generate and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
