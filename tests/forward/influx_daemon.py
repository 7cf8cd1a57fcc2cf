"""A real daemon process over the NVML shim that forwards to InfluxDB: `python -m tests.forward.influx_daemon`.

For the SIGKILL test and bench/forward.py: jouled's own daemon (build_daemon + run_daemon, the forwarder thread),
only the GPU layer is the shim."""

from __future__ import annotations

import argparse
import logging

from jouled.config import Config, NvmlConfig
from jouled.daemon.app import build_daemon, run_daemon
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import sqlite_url
from tests.sources.nvml_shim import make_shim


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--influx", default="", help="InfluxDB URL ('' = forwarding off)")
    ap.add_argument("--database", default="jouled")
    ap.add_argument("--host", default="fwd")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--status", default="", help="status file path ('' = the default)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = Config()
    cfg.daemon.host = a.host
    cfg.daemon.flush_interval_s = 0.2
    cfg.store.path = a.store
    cfg.daemon.status_path = a.status
    cfg.daemon.health_interval_s = 0.25
    cfg.influx.url = a.influx
    cfg.influx.database = a.database
    cfg.influx.batch_size = a.batch_size
    cfg.influx.max_retry_s = 1.0
    src = NvmlSource(NvmlConfig(), nvml_module=make_shim(a.devices))
    d = build_daemon(cfg, sqlite_url(a.store), rate_hz=a.rate, sources=[src], markers=False)
    run_daemon(d, a.duration)


if __name__ == "__main__":
    main()
