"""A real daemon process over the NVML shim, for fault tests and benchmarks: `python -m tests.faults.shim_daemon`.

The daemon is jouled's own (build_daemon + run_daemon: sampler threads, asyncio loop, SQLite log, marker
recorder); only the GPU layer is the shim (tests/sources/nvml_shim.py). Killed with SIGKILL by the callers.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from jouled.config import Config, NvmlConfig, RaplConfig
from jouled.daemon.app import build_daemon, run_daemon
from jouled.sources.nvml import NvmlSource
from jouled.sources.rapl import RaplSource
from jouled.store.sqlite import sqlite_url
from tests.sources.nvml_shim import make_shim


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--port", type=int, default=0, help="embedded broker port (0: markers off)")
    ap.add_argument("--mqtt-url", default="")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--flush-interval", type=float, default=None, help="[daemon] flush_interval_s (default: the config's)")
    ap.add_argument("--rapl-root", default="", help="also sample RAPL from this powercap tree (tests/sources/powercap.py)")
    ap.add_argument("--influx-url", default="", help="[influx] url: forward the log to this InfluxDB")
    ap.add_argument("--prometheus-listen", default="", help="[prometheus] listen: serve /metrics here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = Config()
    cfg.daemon.host = "faults"
    if a.flush_interval is not None:
        cfg.daemon.flush_interval_s = a.flush_interval
    cfg.store.path = a.store
    cfg.mqtt.url = a.mqtt_url
    cfg.influx.url = a.influx_url
    cfg.prometheus.listen = a.prometheus_listen
    if a.port:
        cfg.mqtt.embedded_port = a.port
    srcs: list[Any] = [NvmlSource(NvmlConfig(), nvml_module=make_shim(a.devices))]
    if a.rapl_root:
        srcs.append(RaplSource(RaplConfig(root=a.rapl_root)))
    d = build_daemon(cfg, sqlite_url(a.store), rate_hz=a.rate, sources=srcs, markers=bool(a.port or a.mqtt_url))
    run_daemon(d, a.duration)


if __name__ == "__main__":
    main()
