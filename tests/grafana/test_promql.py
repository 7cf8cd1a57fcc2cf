"""Every PromQL query of the Prometheus dashboard against a real Prometheus scraping metrics in the documented names.

The exposition server here serves jouled's metric names and labels (DESIGN.md: Prometheus, and the metrics of
issue 11) in the text format, with counters that grow between scrapes; Prometheus scrapes it twice a second. Each
panel, annotation and variable query, as Grafana interpolates it, must parse and return data carrying the labels
its legend names. test_daemon_data.py runs them against the daemon's own /metrics too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from jouled.grafana import dashboard_files
from tests.grafana.queries import ALL, Target, interpolate, legend_labels, targets
from tests.servers import ServerHandle, prometheus_available, start_prometheus

pytestmark = pytest.mark.skipif(not prometheus_available(), reason="prometheus not installed (.ci/system-deps)")

HOSTS = ("node-a", "node-b")
POWER = (("nvml", "gpu0", "gpu", 250.0), ("nvml", "gpu1", "gpu", 180.0), ("rapl", "package-0", "package", 65.0),
         ("rapl", "dram-0", "dram", 8.0), ("visa", "wall", "wall", 520.0))
SELECTIONS: dict[str, dict[str, object]] = {
    "all": {"host": ALL, "device": ALL, "search": ALL},
    "one": {"host": "node-a", "device": "package-0", "search": "search-1"},
    "several": {"host": list(HOSTS), "device": ["gpu0", "dram-0"], "search": ["search-1"]},
}


def exposition(elapsed_s: float) -> str:
    """jouled's metrics at `elapsed_s` after the exporter started: gauges steady, counters growing."""
    out = []

    def metric(name: str, kind: str, rows: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {value}")

    metric("jouled_power_watts", "gauge", [
        ({"host": h, "source": s, "device": d, "role": r}, p) for h in HOSTS for s, d, r, p in POWER])
    metric("jouled_energy_joules_total", "counter", [
        ({"host": h, "source": s, "device": d, "role": r}, p * elapsed_s) for h in HOSTS for s, d, r, p in POWER])
    sources = ("nvml", "rapl", "visa")
    metric("jouled_sample_rate_hz", "gauge", [({"host": h, "source": s}, 10.0) for h in HOSTS for s in sources])
    per_source = [{"host": h, "source": s} for h in HOSTS for s in sources]
    metric("jouled_read_errors_total", "counter", [(lab, int(elapsed_s)) for lab in per_source])
    metric("jouled_missed_ticks_total", "counter", [(lab, int(elapsed_s / 2)) for lab in per_source])
    metric("jouled_last_sample_age_seconds", "gauge", [({"host": h, "source": s}, 0.1) for h in HOSTS for s in sources])
    metric("jouled_markers_total", "counter", [
        ({"host": h, "result": r}, int(elapsed_s * k)) for h in HOSTS for r, k in (("stored", 2), ("duplicate", 0.5))])
    metric("jouled_forwarder_lag_seconds", "gauge", [({"host": h}, 1.5) for h in HOSTS])
    metric("jouled_carbon_intensity_g_per_kwh", "gauge", [({"zone": "DE", "provider": "electricitymaps"}, 312.0)])
    metric("jouled_cenas_gpus", "gauge", [({"search": "search-1", "role": "sampling"}, 3.0),
                                          ({"search": "search-1", "role": "evaluation"}, 5.0)])
    metric("jouled_cenas_lambda_s", "gauge", [({"search": "search-1"}, 0.375)])
    return "\n".join(out) + "\n"


class _Exporter(BaseHTTPRequestHandler):
    started = time.monotonic()

    def do_GET(self) -> None:
        body = exposition(time.monotonic() - self.started).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _dashboard() -> dict[str, Any]:
    [prom] = [f for f in dashboard_files() if f.name == "jouled-prometheus.json"]
    return dict(json.loads(prom.read_text(encoding="utf-8")))


DASHBOARD = _dashboard()
TARGETS = targets(DASHBOARD)


def _api(server: ServerHandle, path: str, **params: Any) -> Any:
    r = httpx.get(server.url + path, params=params, timeout=10.0)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[ServerHandle]:
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    server = start_prometheus([f"127.0.0.1:{exporter.server_address[1]}"], scrape_interval_s=0.5)
    try:
        deadline = time.monotonic() + 60
        while True:  # a few scrapes: increase() needs two samples in its window, the annotation's [1m] too
            res = _api(server, "/api/v1/query", query='min_over_time(up{job="jouled"}[1m]) * count_over_time(up[1m])')
            if res["result"] and float(res["result"][0]["value"][1]) >= 12:  # 12 scrapes, every one a success
                break
            assert time.monotonic() < deadline, f"Prometheus did not scrape the exporter: {res}"
            time.sleep(0.5)
        yield server
    finally:
        server.stop()
        exporter.shutdown()


def test_the_dashboard_covers_the_documented_metrics() -> None:
    text = " ".join(t.query for t in TARGETS)
    for name in ("jouled_power_watts", "jouled_energy_joules_total", "jouled_sample_rate_hz", "jouled_read_errors_total",
                 "jouled_missed_ticks_total", "jouled_last_sample_age_seconds", "jouled_markers_total",
                 "jouled_forwarder_lag_seconds", "jouled_carbon_intensity_g_per_kwh", "jouled_cenas_gpus",
                 "jouled_cenas_lambda_s"):
        assert name in text, name
    assert {"host", "device"} <= {v["name"] for v in DASHBOARD["templating"]["list"]}


def _label_values(server: ServerHandle, query: str) -> set[str]:
    """Grafana's label_values(selector, label): the values of `label` on the series matching `selector`."""
    inner = query.removeprefix("label_values(").removesuffix(")")
    selector, _, label = inner.rpartition(",")
    now = time.time()
    series = _api(server, "/api/v1/series", **{"match[]": selector.strip(), "start": now - 300, "end": now})
    return {s[label.strip()] for s in series if label.strip() in s}


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
@pytest.mark.parametrize("target", TARGETS, ids=[t.where for t in TARGETS])
def test_query_returns_data(prometheus: ServerHandle, target: Target, selection: str) -> None:
    q = interpolate(target.query, "promql", SELECTIONS[selection], from_ms=0, to_ms=0,
                    interval="5s", rate_interval="10s", range_="20s")
    if target.kind == "variable":
        assert _label_values(prometheus, q), f"{target.where}: no values for {q}"
        return
    now = time.time()
    if target.instant:
        data = _api(prometheus, "/api/v1/query", query=q, time=now)
    else:
        data = _api(prometheus, "/api/v1/query_range", query=q, start=now - 20, end=now, step=1)
    result = data["result"]
    assert result, f"{target.where}: no data for {q}"
    for label in legend_labels(target.legend):
        assert all(label in r["metric"] for r in result), f"{target.where}: a series without {label}: {result[:2]}"
    values = [float(v[1]) for r in result for v in (r.get("values") or [r["value"]])]
    assert any(v > 0 for v in values), f"{target.where}: nothing but zeros for {q}"


def test_a_single_device_selection_returns_only_that_device(prometheus: ServerHandle) -> None:
    [power] = [t for t in TARGETS if t.where.startswith("panel 'Every power series")]
    q = interpolate(power.query, "promql", SELECTIONS["one"], from_ms=0, to_ms=0)
    result = _api(prometheus, "/api/v1/query", query=q)["result"]
    assert {(r["metric"]["host"], r["metric"]["device"]) for r in result} == {("node-a", "package-0")}
