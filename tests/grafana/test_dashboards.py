"""The committed dashboards: regenerating them gives the same files; their structure is what Grafana loads; the Flux
queries (no Flux server here) are well formed and name the schema's measurements, fields and variables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from jouled.grafana import DASHBOARD_FILES, dashboard_files
from jouled.grafana_cli import DASHBOARDS
from tests.grafana.queries import targets

SCHEMA = {  # measurement → its fields (README: the InfluxDB schema)
    "power": {"power_w", "energy_j"},
    "marker": {"epoch", "phase", "arch", "gpus", "attrs"},
    "carbon": {"intensity_g_per_kwh"},
    "allocation": {"gpus_sampling", "gpus_evaluation", "lambda_s", "intensity_g_per_kwh"},
    "jouled_health": {"rate_hz", "jitter_s", "errors", "missed", "last_sample_age_s", "lag_s", "backlog_points"},
}


def load(name: str) -> dict[str, Any]:
    [f] = [f for f in dashboard_files() if f.name == name]
    return dict(json.loads(f.read_text(encoding="utf-8")))


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    generate = pytest.importorskip("jouled.grafana.generate", reason="grafana-foundation-sdk (extra dev) not installed")
    assert generate.main(["--out", str(tmp_path)]) == 0
    for name in DASHBOARD_FILES:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = next(f for f in dashboard_files() if f.name == name).read_text(encoding="utf-8")
        assert fresh == committed, f"{name} drifted: run python -m jouled.grafana.generate and commit"
    assert generate.main(["--check"]) == 0
    (tmp_path / DASHBOARD_FILES[0]).write_text("{}\n")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


def test_the_push_command_knows_every_dashboard() -> None:
    assert sorted(name for name, _ in DASHBOARDS.values()) == sorted(DASHBOARD_FILES)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_structure_grafana_loads(name: str) -> None:
    d = load(name)
    assert d["uid"] == name.removesuffix(".json") and d["title"].startswith("jouled")
    assert isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    ds_uid = DASHBOARDS[next(k for k, (f, _) in DASHBOARDS.items() if f == name)][1]
    for p in d["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), p["title"]
        assert p["datasource"]["uid"] == ds_uid
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), p["title"]
        assert all(t["datasource"]["uid"] == ds_uid for t in p["targets"])
    for v in d["templating"]["list"]:
        assert v["name"] and v["type"] in ("query", "textbox")
        if v["type"] == "query":
            assert v["datasource"]["uid"] == ds_uid and v["query"]
    assert d["annotations"]["list"], "markers as annotations"
    for a in d["annotations"]["list"]:
        assert a["datasource"]["uid"] == ds_uid and a["enable"] is True


def _balanced(text: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"|/\^[^/]*\$/', "", text):  # strings and regex literals may hold anything
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def test_flux_queries_are_well_formed_and_name_the_schema() -> None:
    """Untested against a Flux server (none here): check the pieces a typo would break."""
    d = load("jouled-flux.json")
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"bucket", "host", "device", "run"} <= names
    seen = set()
    for t in targets(d):
        q = t.query
        assert _balanced(q), f"{t.where}: unbalanced brackets: {q}"
        for var in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", q):
            assert (var[0] or var[1]) in names | {"__interval"}, f"{t.where}: unknown variable {var}"
        assert '"${bucket}"' in q, t.where
        if t.kind == "variable":
            assert q.startswith('import "influxdata/influxdb/schema"\nschema.tagValues(bucket: "${bucket}", tag: "')
            continue
        assert q.startswith('from(bucket: "${bucket}")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)')
        [m] = re.findall(r'r\._measurement == "(\w+)"', q)
        assert m in SCHEMA, f"{t.where}: unknown measurement {m}"
        seen.add(m)
        for f in re.findall(r'r\._field == "(\w+)"', q):
            assert f in SCHEMA[m], f"{t.where}: {m} has no field {f}"
        for line in q.splitlines()[1:]:
            assert line.startswith("  |> "), f"{t.where}: {line!r}"
        for tag in re.findall(r"r\.(\w+) =~", q):
            assert tag in {"host", "device", "run", "role", "search"}
    assert seen == set(SCHEMA), seen


def test_influxql_queries_name_only_schema_fields() -> None:
    d = load("jouled-influxql.json")
    for t in targets(d):
        for m in re.findall(r'FROM "(\w+)"', t.query):
            assert m in SCHEMA, f"{t.where}: unknown measurement {m}"
        for f in re.findall(r'(?:mean|max|last|integral|spread|count|elapsed|DISTINCT)\("(\w+)"', t.query):
            subquery_columns = re.findall(r'AS "(\w+)" FROM \(?"', t.query)  # max("gap_s") of a subquery's gap_s
            assert f in subquery_columns or any(f in fields for fields in SCHEMA.values()), f"{t.where}: unknown field {f}"


def test_provisioning_files_match_the_dashboards() -> None:
    """The datasource uids the dashboards refer to are the ones provisioned; URLs and secrets are ${...} placeholders."""
    yaml = pytest.importorskip("yaml")
    from jouled.grafana import data_dir

    prov = data_dir() / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "jouled.yaml").read_text(encoding="utf-8"))
    assert ds["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert set(by_uid) == {uid for _, uid in DASHBOARDS.values()}
    assert by_uid["jouled-flux"]["jsonData"]["version"] == "Flux"
    assert by_uid["jouled-prometheus"]["type"] == "prometheus"
    placeholder = re.compile(r"^\$\{JOULED_GRAFANA_[A-Z_]+\}$")
    for d in ds["datasources"]:
        assert placeholder.match(d["url"]), d["url"]
        for value in (d.get("secureJsonData") or {}).values():
            assert placeholder.match(value), "a secret written into the file"
    dash = yaml.safe_load((prov / "dashboards" / "jouled.yaml").read_text(encoding="utf-8"))
    [provider] = dash["providers"]
    assert provider["type"] == "file" and placeholder.match(provider["options"]["path"])
