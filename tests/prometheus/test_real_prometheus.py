"""A real Prometheus scrapes the daemon: PromQL sees each GPU's power and a rate() of energy at the shim's power."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jouled.config import NvmlConfig
from jouled.daemon.app import build_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import sqlite_url
from tests.brokers import free_port
from tests.daemon.harness import make_config
from tests.servers import prometheus_available, start_prometheus
from tests.sources.nvml_shim import FakeGpu, NvmlShim, old_gpu

pytestmark = [pytest.mark.influx, pytest.mark.skipif(not prometheus_available(), reason="needs the prometheus binary")]


def promql(url: str, query: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_power_and_energy_rate(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path)
    cfg.prometheus.listen = f"127.0.0.1:{port}"
    # two GPUs with energy counters (the counter path) and one without (the trapezoid path)
    shim = NvmlShim([FakeGpu(power_w=250.0), FakeGpu(power_w=250.0), old_gpu(power_w=100.0)])
    d = build_daemon(cfg, sqlite_url(cfg.store.path), rate_hz=20, sources=[NvmlSource(NvmlConfig(), nvml_module=shim)],
                     markers=False)
    bg = BackgroundDaemon(d).start()
    prom = start_prometheus([f"127.0.0.1:{port}"], scrape_interval_s=0.5)
    try:
        deadline = time.monotonic() + 60
        power: list[dict[str, Any]] = []
        rate: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            power = promql(prom.url, 'jouled_power_watts{host="testhost"}')
            # 20 s of 0.5 s scrapes: the energy in the log trails each scrape by a flush plus the store's delay,
            # which varies by up to a second on a busy machine (a scrape that finds no new chunk); over 20 s that is
            # 5 % of the rate (over Prometheus' usual rate()[5m] windows, well under 1 %)
            rate = promql(prom.url, "rate(jouled_energy_joules_total[20s])")
            # judged once the range is full of scrapes: over a range reaching back before the first scrape,
            # rate() extrapolates only to where the counter would be zero and reads low
            full = promql(prom.url, "count_over_time(jouled_energy_joules_total[20s]) >= 38")
            if len(power) == 3 and len(rate) == 3 and len(full) == 3:
                break
            time.sleep(0.25)
        raw = promql(prom.url, 'jouled_energy_joules_total{device="gpu0"}[20s]')  # for the failure message
    finally:
        prom.stop()
        bg.stop()
    assert len(power) == 3, power
    want = {"250": 250.0, "100": 100.0}
    for p in power:
        assert p["metric"]["source"] == "nvml" and p["metric"]["role"] == "gpu" and p["metric"]["job"] == "jouled"
        assert float(p["value"][1]) in want.values()
    assert len(rate) == 3, rate
    by_dev = {p["metric"]["device"]: float(p["value"][1]) for p in power}
    for r in rate:
        watts = by_dev[r["metric"]["device"]]
        # the log lags the scrape by up to a flush (0.1 s here) and rate() extrapolates: a few percent
        assert float(r["value"][1]) == pytest.approx(watts, rel=0.1), (r, watts, raw)
