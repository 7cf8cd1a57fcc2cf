"""A short daemon run exercising every part the service runs (for tests/service: MemoryDenyWriteExecute)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from jouled.config import Config, NvmlConfig
from jouled.daemon.app import build_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import sqlite_url
from tests.sources.nvml_shim import make_shim


def main(store: str, broker_port: int, metrics_port: int) -> None:
    from jouled.trainer.markers import MarkerClient

    cfg = Config()
    cfg.daemon.host = "mdwe"
    cfg.daemon.flush_interval_s = 0.1
    cfg.store.path = store
    cfg.mqtt.embedded_port = broker_port
    cfg.prometheus.listen = f"127.0.0.1:{metrics_port}"
    src = NvmlSource(NvmlConfig(), nvml_module=make_shim(2))
    bg = BackgroundDaemon(build_daemon(cfg, sqlite_url(store), rate_hz=20, sources=[src])).start()
    try:
        client = MarkerClient(f"mqtt://127.0.0.1:{broker_port}", spool_path=Path(store).with_suffix(".spool"))
        client.mark("run", "start", "r")
        client.close(5.0)
        deadline = time.monotonic() + 20
        while not bg.daemon.store.read_markers("r") and time.monotonic() < deadline:
            time.sleep(0.05)
        # the marker can be stored before the first power chunk is flushed (a loaded machine): poll /metrics
        body = ""
        while "jouled_power_watts{" not in body and time.monotonic() < deadline:
            body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            time.sleep(0.1)
    finally:
        bg.stop()
    assert bg.daemon.store.read_markers("r"), "marker not stored"
    assert "jouled_power_watts{" in body, body[:500]
    print("MDWE-OK")
