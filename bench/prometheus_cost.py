"""Benchmark the Prometheus endpoint's cost: daemon CPU with /metrics scraped every second vs the endpoint off.

The daemon is a real one in a child process (sampler threads, asyncio loop, SQLite log) over the NVML shim
(8 GPUs at 10 Hz, the observer-cost budget's setting: <= 0.5 % of a core). The parent reads the child's CPU time
(user + system, psutil) over a measured window after a warm-up, scraping /metrics every second when it is on.
Off and on alternate, so drift in the machine's load hits both; the load average is recorded with each run.

    .venv/bin/python bench/prometheus_cost.py [--seconds 30] [--reps 2]   ->  bench/results/prometheus_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results" / "prometheus_cost.json"
GPUS = 8
RATE_HZ = 10.0
WARMUP_S = 5.0


def child(store: str, listen: str) -> None:
    """The daemon under test (runs until killed)."""
    from jouled.config import Config, NvmlConfig
    from jouled.daemon.app import build_daemon, run_daemon
    from jouled.sources.nvml import NvmlSource
    from jouled.store.sqlite import sqlite_url
    from tests.sources.nvml_shim import make_shim

    cfg = Config()
    cfg.daemon.host = "bench"
    cfg.store.path = store
    cfg.prometheus.listen = listen
    src = NvmlSource(NvmlConfig(), nvml_module=make_shim(GPUS))
    run_daemon(build_daemon(cfg, sqlite_url(store), rate_hz=RATE_HZ, sources=[src], markers=False))


def measure(seconds: float, scrape: bool) -> dict[str, Any]:
    import httpx
    import psutil

    from tests.brokers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="jouled-bench-prom-"))
    port = free_port()
    listen = f"127.0.0.1:{port}" if scrape else ""
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(tmp / "log.db"), listen],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(WARMUP_S)
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        # one client for the run: httpx.get() would build a client (and an SSL context) per scrape, ~80 ms here
        client = httpx.Client(timeout=5)
        c0, t0, load0 = ps.cpu_times(), time.monotonic(), os.getloadavg()
        scrapes, scrape_s, size = 0, 0.0, 0
        next_t = t0
        while time.monotonic() - t0 < seconds:
            if scrape:
                s0 = time.perf_counter()
                body = client.get(f"http://{listen}/metrics").text
                scrape_s += time.perf_counter() - s0
                scrapes += 1
                size = len(body)
            next_t += 1.0
            time.sleep(max(0.0, next_t - time.monotonic()))
        c1, t1, load1 = ps.cpu_times(), time.monotonic(), os.getloadavg()
        client.close()
    finally:
        proc.kill()
        proc.wait()
    cpu_s = (c1.user - c0.user) + (c1.system - c0.system)
    return {
        "prometheus": "scraped every 1 s" if scrape else "off",
        "seconds": round(t1 - t0, 2),
        "cpu_s": round(cpu_s, 3),
        "cpu_pct_of_core": round(100 * cpu_s / (t1 - t0), 3),
        "scrapes": scrapes,
        "scrape_ms_mean": round(1000 * scrape_s / scrapes, 2) if scrapes else None,
        "metrics_bytes": size or None,
        "loadavg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    runs = []
    for _ in range(a.reps):
        for scrape in (False, True):
            r = measure(a.seconds, scrape)
            print(json.dumps(r))
            runs.append(r)
    off = [r["cpu_pct_of_core"] for r in runs if r["prometheus"] == "off"]
    on = [r["cpu_pct_of_core"] for r in runs if r["prometheus"] != "off"]
    out = {
        "setup": f"{GPUS} shim GPUs at {RATE_HZ:g} Hz, real daemon in a child process; {a.seconds:g} s measured after "
                 f"{WARMUP_S:g} s warm-up; off/on alternated x{a.reps}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "cpu_pct_of_core_off_mean": round(sum(off) / len(off), 3),
        "cpu_pct_of_core_scraped_mean": round(sum(on) / len(on), 3),
        "added_pct_of_core": round(sum(on) / len(on) - sum(off) / len(off), 3),
        "runs": runs,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
