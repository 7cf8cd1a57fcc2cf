"""Every query of the InfluxQL dashboard, as Grafana would send it, against a real InfluxDB 1.x holding schema data.

Panels, annotations and template variables: each query must run without error and return the series its panel
shows (non-empty; the columns its `AS` aliases name; the tags its legend alias names), for "All" selections and for
single values (an arch string full of regex characters included, as Grafana escapes it). The data is encoded by
the forwarder's own encoder (jouled.influxproto); test_daemon_data.py runs the same queries over what a real
daemon forwarded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jouled.grafana import dashboard_files
from tests.grafana import schema_data
from tests.grafana.queries import ALL, Target, alias_tags, influxql_aliases, interpolate, targets
from tests.servers import ServerHandle, influxd_available, start_influxd

pytestmark = [
    pytest.mark.influx,
    pytest.mark.skipif(not influxd_available(), reason="influxd not installed (.ci/system-deps installs it)"),
]

DB = "jouled"
SELECTIONS: dict[str, dict[str, object]] = {
    "all": {"host": ALL, "device": ALL, "run": ALL, "arch": ALL, "search": ALL},
    "one": {"host": "node-a", "device": "gpu0", "run": schema_data.RUN, "arch": schema_data.ARCH,
            "search": schema_data.SEARCH},
    "several": {"host": ["node-a", "node-b"], "device": ["gpu0", "package-0"], "run": [schema_data.RUN, "run-2"],
                "arch": [schema_data.ARCH], "search": [schema_data.SEARCH]},
}


def _dashboard() -> dict[str, Any]:
    [influxql] = [f for f in dashboard_files() if f.name == "jouled-influxql.json"]
    return dict(json.loads(influxql.read_text(encoding="utf-8")))


DASHBOARD = _dashboard()
TARGETS = targets(DASHBOARD)


@pytest.fixture(scope="module")
def influx() -> Iterator[tuple[ServerHandle, int, int]]:
    server = start_influxd()
    try:
        server.create_database(DB)
        now_ns = time.time_ns()
        body = "\n".join(schema_data.lines(now_ns)).encode()
        r = httpx.post(f"{server.url}/write", params={"db": DB, "precision": "ns"}, content=body, timeout=60.0)
        assert r.status_code == 204, r.text
        yield server, now_ns // 1_000_000 - 700_000, now_ns // 1_000_000 + 5_000
    finally:
        server.stop()


def test_the_dashboard_covers_what_the_issue_asks() -> None:
    names = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"host", "device", "run", "arch"} <= names
    measurements = " ".join(t.query for t in TARGETS)
    for m in ("power", "marker", "carbon", "allocation", "jouled_health"):
        assert f'FROM "{m}"' in measurements, m
    assert any(t.kind == "annotation" and 'FROM "marker"' in t.query for t in TARGETS)


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
@pytest.mark.parametrize("target", TARGETS, ids=[t.where for t in TARGETS])
def test_query_returns_its_series(influx: tuple[ServerHandle, int, int], target: Target, selection: str) -> None:
    server, from_ms, to_ms = influx
    q = interpolate(target.query, "influxql", SELECTIONS[selection], from_ms=from_ms, to_ms=to_ms)
    series = server.influxql(q, DB)  # raises on an InfluxQL error, with the query in the message
    assert series, f"{target.where}: no data for {q}"
    assert all(s.get("values") for s in series), f"{target.where}: an empty series for {q}"
    columns = set(series[0]["columns"])
    if target.kind == "variable":
        values = {str(v[-1]) for s in series for v in s["values"]}  # SHOW TAG VALUES: (key, value); SELECT: (time, value)
        assert values and "" not in values, values
        return
    missing = [a for a in influxql_aliases(target.query) if a not in columns]
    assert not missing, f"{target.where}: columns {sorted(columns)} lack {missing}"
    for tag in alias_tags(target.legend):
        assert all(tag in (s.get("tags") or {}) for s in series), f"{target.where}: series without tag {tag}: {q}"
    # a value column holding nothing but nulls draws nothing: each aliased column must hold a value somewhere
    for alias in influxql_aliases(target.query):
        i = series[0]["columns"].index(alias)
        assert any(row[i] is not None for s in series for row in s["values"]), f"{target.where}: {alias} all null"


def test_selections_narrow_what_comes_back(influx: tuple[ServerHandle, int, int]) -> None:
    """A single host/device/run selection returns only that one (the regex escaping is right, not just permissive)."""
    server, from_ms, to_ms = influx
    [power] = [t for t in TARGETS if t.where.startswith("panel 'Every power series")]
    one = server.influxql(interpolate(power.query, "influxql", SELECTIONS["one"], from_ms=from_ms, to_ms=to_ms), DB)
    assert {(s["tags"]["host"], s["tags"]["device"]) for s in one} == {("node-a", "gpu0")}
    every = server.influxql(interpolate(power.query, "influxql", SELECTIONS["all"], from_ms=from_ms, to_ms=to_ms), DB)
    assert len(every) == len(schema_data.DEVICES) + 1  # node-b has one GPU
    [epochs] = [t for t in TARGETS if t.where.startswith("panel 'Epoch markers")]
    rows = server.influxql(interpolate(epochs.query, "influxql", SELECTIONS["one"], from_ms=from_ms, to_ms=to_ms), DB)
    assert {s["tags"]["run"] for s in rows} == {schema_data.RUN}
    assert sum(len(s["values"]) for s in rows) == 8  # 4 epochs x start/end
    [arch] = [t for t in TARGETS if t.where.startswith("panel 'Runs by architecture")]
    rows = server.influxql(interpolate(arch.query, "influxql", SELECTIONS["one"], from_ms=from_ms, to_ms=to_ms), DB)
    assert [s["tags"]["run"] for s in rows] == [schema_data.RUN]


def test_energy_per_interval_adds_up_to_the_range_energy(influx: tuple[ServerHandle, int, int]) -> None:
    """The bars' buckets sum to the energy over the whole range (what a user reads off the two panels agrees)."""
    server, from_ms, to_ms = influx
    sel = SELECTIONS["one"]
    [bars] = [t for t in TARGETS if t.where.startswith("panel 'Energy per interval")]
    [total] = [t for t in TARGETS if t.where.startswith("panel 'Energy over the selected")]
    b = server.influxql(interpolate(bars.query, "influxql", sel, from_ms=from_ms, to_ms=to_ms, interval="60s"), DB)
    bucket_sum_j = sum(v[1] for v in b[0]["values"] if v[1] is not None)
    t = server.influxql(interpolate(total.query, "influxql", sel, from_ms=from_ms, to_ms=to_ms), DB)
    cols = t[0]["columns"]
    whole_j = t[0]["values"][0][cols.index("energy_integral_j")]
    # the buckets lose the trapezoid between the last sample of one bucket and the first of the next: 1 s of 10
    # (none when every bucket edge falls on a sample: then the sums agree up to float rounding)
    assert whole_j * 0.97 < bucket_sum_j <= whole_j * (1 + 1e-12)
    assert whole_j == pytest.approx(250.0 * 1.05 * 600, rel=0.06)  # 250 W with a +10 % square wave, 600 s
