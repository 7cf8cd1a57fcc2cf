"""Benchmark the sampler: delivered/scheduled and jitter at 10/100/1000 Hz (8 shim GPUs + 4 RAPL domains), observer cost.

The GPUs are the NVML shim (real pynvml function names, no driver here) and the RAPL domains a powercap tree in a
temp dir; the sampler threads, asyncio loop and SQLite log are the real ones. On a real GPU run it with --real-nvml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jouled.config import Config, NvmlConfig, RaplConfig
from jouled.daemon.service import Daemon
from jouled.sources.nvml import NvmlSource
from jouled.sources.rapl import RaplSource
from jouled.store.sqlite import SqliteStore
from tests.sources.powercap import powercap_tree

RESULTS = Path(__file__).parent / "results" / "sampler.json"


def make_sources(tmp: Path, gpus: int, rapl_domains: int, real_nvml: bool) -> list[Any]:
    srcs: list[Any] = []
    if gpus:
        if real_nvml:
            srcs.append(NvmlSource(NvmlConfig()))
        else:
            from tests.sources.nvml_shim import make_shim

            srcs.append(NvmlSource(NvmlConfig(), nvml_module=make_shim(gpus)))
    if rapl_domains:
        srcs.append(RaplSource(RaplConfig(root=str(powercap_tree(tmp / "powercap", rapl_domains)))))
    return srcs


def run_once(rate_hz: float, seconds: float, gpus: int, rapl_domains: int, real_nvml: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = Config()
        cfg.daemon.host = "bench"
        srcs = make_sources(tmp, gpus, rapl_domains, real_nvml)
        daemon = Daemon(cfg, [(s, 1.0 / rate_hz) for s in srcs], SqliteStore(tmp / "log.db"), tmp / "status.json")
        proc = psutil.Process(os.getpid())
        cpu0 = proc.cpu_times()
        t0 = time.perf_counter()
        final = asyncio.run(daemon.run(duration_s=seconds))
        wall = time.perf_counter() - t0
        cpu1 = proc.cpu_times()
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        per_source = {
            s["name"]: {
                "devices": len(s["devices"]),
                "delivered_ratio": round(s["delivered_ratio"], 5),
                "scheduled": s["scheduled"],
                "delivered": s["delivered"],
                "missed": s["missed"],
                "jitter_p50_ms": round(s["jitter_p50_ms"], 4),
                "jitter_p99_ms": round(s["jitter_p99_ms"], 4),
                "errors": s["errors"],
            }
            for s in final["sources"]
        }
        return {
            "rate_hz": rate_hz,
            "seconds": seconds,
            "sources": per_source,
            "samples_written": final["store"]["written"],
            "cpu_pct_of_one_core": round(100 * cpu_s / wall, 3),
            "rss_mb": round(proc.memory_info().rss / 1e6, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="per rate")
    ap.add_argument("--rates", default="10,100,1000")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--rapl", type=int, default=4)
    ap.add_argument("--observer-seconds", type=float, default=600.0, help="observer-cost run at 10 Hz × 10 devices")
    ap.add_argument("--real-nvml", action="store_true", help="use the real NVML (on a GPU machine)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        "gpus": f"{args.gpus} {'real NVML' if args.real_nvml else 'NVML shim'}",
        "rapl_domains": args.rapl,
        "goal": ">= 99 % delivered at 100 Hz, p99 jitter < 2 ms; observer <= 1 % of one core at 10 Hz x 10 devices",
        "rates": [],
    }
    for r in [float(x) for x in args.rates.split(",")]:
        res = run_once(r, args.seconds, args.gpus, args.rapl, args.real_nvml)
        print(json.dumps(res), flush=True)
        results["rates"].append(res)
    if args.observer_seconds > 0:
        # 10 devices: 8 GPUs + 2 RAPL domains at 10 Hz, the daemon's defaults
        obs = run_once(10.0, args.observer_seconds, 8 if args.gpus else 0, 2, args.real_nvml)
        results["observer"] = {"devices": 10, **obs}
        print(json.dumps(results["observer"]), flush=True)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
