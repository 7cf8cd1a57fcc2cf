"""The dashboards over data jouled's own daemon wrote: a shim-GPU daemon forwards its log into a real InfluxDB 1.x and
serves /metrics to a real Prometheus; every InfluxQL and PromQL query of the dashboards must return data from it.

Markers, carbon intensity and a CE-NAS allocation go into the daemon's log (as the recorder, the carbon poller and
the scheduler put them there) and reach InfluxDB through the forwarder, like everything else. Only the GPUs are a
shim (tests/sources/nvml_shim.py); there is no RAPL or wall meter here, so the selections are the GPUs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from jouled.config import NvmlConfig
from jouled.daemon.app import build_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.grafana import dashboard_files
from jouled.model import Allocation, CarbonPoint, Marker
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import SqliteStore, sqlite_url
from tests.brokers import free_port
from tests.daemon.harness import make_config
from tests.grafana.queries import ALL, influxql_aliases, interpolate, legend_labels, targets
from tests.servers import influxd_available, prometheus_available, start_influxd, start_prometheus
from tests.sources.nvml_shim import FakeGpu, NvmlShim

pytestmark = [
    pytest.mark.influx,
    pytest.mark.skipif(not (influxd_available() and prometheus_available()), reason="needs influxd and prometheus"),
]
DB = "jouled"
ARCH = "nb201-|nor_conv_3x3~0|+|skip_connect~0|"


def _load(name: str) -> dict[str, Any]:
    [f] = [f for f in dashboard_files() if f.name == name]
    return dict(json.loads(f.read_text(encoding="utf-8")))


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _count(influx: Any, q: str) -> int:
    series = influx.influxql(q, DB)
    return int(series[0]["values"][0][1]) if series else 0


def _prom(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(url + path, params=params, timeout=10.0)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", body
    return body["data"]


def _log_run(store_path: str, host: str, t0_ns: int) -> None:
    """A run with two epochs, carbon intensity and an allocation, written into the daemon's log."""
    s = 1_000_000_000
    gpus = ("gpu0", "gpu1")
    marks = [Marker(t0_ns, host, "run-1", "run", "start", 1, arch=ARCH, gpus=gpus)]
    for e in range(2):
        marks.append(Marker(t0_ns + (1 + 2 * e) * s // 2, host, "run-1", "epoch", "start", 2 + 2 * e, epoch=e,
                            phase="train", arch=ARCH, gpus=gpus, attrs={"lr": 0.1}))
        marks.append(Marker(t0_ns + (3 + 2 * e) * s // 2, host, "run-1", "epoch", "end", 3 + 2 * e, epoch=e,
                            phase="train", arch=ARCH, gpus=gpus))
    marks.append(Marker(t0_ns + 3 * s, host, "run-1", "run", "end", 6, arch=ARCH, gpus=gpus))
    store = SqliteStore(store_path)
    try:
        store.write_markers(marks)
        store.write_carbon([CarbonPoint(t0_ns + i * s, "DE", "electricitymaps", 300.0 + i) for i in range(4)])
        store.write_allocations([Allocation(t0_ns + i * s, "search-1", i % 3, 8 - i % 3, (i % 3) / 8, 300.0 + i)
                                 for i in range(4)])
    finally:
        store.close()


def test_every_query_over_what_the_daemon_wrote(tmp_path: Path) -> None:
    influx = start_influxd()
    metrics_port = free_port()
    prom = start_prometheus([f"127.0.0.1:{metrics_port}"], scrape_interval_s=0.5)
    bg = None
    try:
        influx.create_database(DB)
        cfg = make_config(tmp_path)
        cfg.influx.url, cfg.influx.database, cfg.influx.max_retry_s = influx.url, DB, 1.0
        cfg.prometheus.listen = f"127.0.0.1:{metrics_port}"
        shim = NvmlShim([FakeGpu(power_w=250.0), FakeGpu(power_w=lambda t: 150.0 + 50.0 * (int(t) % 2))])
        d = build_daemon(cfg, sqlite_url(cfg.store.path), rate_hz=20, markers=False,
                         sources=[NvmlSource(NvmlConfig(), nvml_module=shim)])
        bg = BackgroundDaemon(d).start()
        t0_ns = time.time_ns()
        _log_run(cfg.store.path, cfg.daemon.host, t0_ns)
        time.sleep(4.0)  # the run's 3 s and some: the windows hold samples
        _wait("the forwarder's markers, power and health in InfluxDB", lambda: (
            _count(influx, 'SELECT count("gpus") FROM "marker"') == 6
            and _count(influx, 'SELECT count("power_w") FROM "power"') > 100
            and _count(influx, "SELECT count(\"lag_s\") FROM \"jouled_health\" WHERE \"source\" = 'forwarder'") >= 2
            and _count(influx, "SELECT count(\"rate_hz\") FROM \"jouled_health\" WHERE \"source\" = 'nvml'") >= 4
            and _count(influx, 'SELECT count("intensity_g_per_kwh") FROM "carbon"') == 4
            and _count(influx, 'SELECT count("lambda_s") FROM "allocation"') == 4))
        _wait("a few scrapes of /metrics", lambda: bool(_prom(
            prom.url, "/api/v1/query", query="count_over_time(jouled_power_watts[1m]) >= 8")["result"]))
        now_ms = time.time_ns() // 1_000_000
        for sel in ({"host": ALL, "device": ALL, "run": ALL, "arch": ALL, "search": ALL},
                    {"host": cfg.daemon.host, "device": "gpu1", "run": "run-1", "arch": ARCH, "search": "search-1"}):
            for t in targets(_load("jouled-influxql.json")):
                q = interpolate(t.query, "influxql", sel, from_ms=now_ms - 120_000, to_ms=now_ms + 1000, interval="1s")
                series = influx.influxql(q, DB)
                assert series and all(s.get("values") for s in series), f"{t.where}: no data for {q}"
                if t.kind == "variable":
                    continue
                cols = series[0]["columns"]
                for alias in influxql_aliases(t.query):
                    assert alias in cols, f"{t.where}: no column {alias} in {cols}"
                    i = cols.index(alias)
                    # the counter's spread is null for a window of one sample only; everything else must hold values
                    assert any(r[i] is not None for s in series for r in s["values"]), f"{t.where}: {alias} all null"
        metrics_served = {"jouled_power_watts", "jouled_energy_joules_total", "jouled_sample_rate_hz",
                          "jouled_read_errors_total", "jouled_missed_ticks_total", "jouled_last_sample_age_seconds",
                          "jouled_forwarder_lag_seconds", "jouled_carbon_intensity_g_per_kwh", "jouled_cenas_gpus",
                          "jouled_cenas_lambda_s"}
        checked = 0
        for t in targets(_load("jouled-prometheus.json")):
            if not any(m in t.query for m in metrics_served):
                continue  # markers: this daemon takes none over MQTT (markers=False), so jouled_markers_total is absent
            q = interpolate(t.query, "promql", {"host": ALL, "device": ALL, "search": ALL}, from_ms=0, to_ms=0,
                            interval="2s", rate_interval="4s", range_="10s")
            if t.kind == "variable":
                inner = q.removeprefix("label_values(").removesuffix(")")
                selector, _, label = inner.rpartition(",")
                series = _prom(prom.url, "/api/v1/series", **{"match[]": selector.strip()})
                assert {s.get(label.strip()) for s in series} - {None}, f"{t.where}: no values"
                checked += 1
                continue
            now = time.time()
            data = _prom(prom.url, "/api/v1/query_range", query=q, start=now - 10, end=now, step=1)
            assert data["result"], f"{t.where}: no data for {q}"
            for label in legend_labels(t.legend):
                assert all(label in r["metric"] for r in data["result"]), f"{t.where}: no label {label}"
            checked += 1
        assert checked >= 12
    finally:
        if bg is not None:
            bg.stop()
        prom.stop()
        influx.stop()
