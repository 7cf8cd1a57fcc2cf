"""Benchmark the daemon as an observer: its CPU and memory as a process, and what it costs the training it measures.

1. Observer cost: jouled's own daemon as its own process (`python -m tests.faults.shim_daemon`: build_daemon,
   sampler threads, asyncio loop, SQLite log; the GPUs are 8 NVML shims, RAPL 4 domains of a powercap tree in a temp
   dir — the only fakes; markers on, with the embedded MQTT broker, as `jouled run` has them) at 10 Hz and 100 Hz.
   CPU = the process's user+system time over a steady interval after a warm-up, divided by the wall time of that
   interval (% of one core); RSS (and USS, its private part) at the end. Goals: <= 0.5 % at 10 Hz, <= 2 % at 100 Hz,
   RSS <= 50 MB.
2. Training throughput: the NB201 cell of bench/train_throughput.py trained with torch on every core, with the daemon
   off and on (100 Hz), in alternating blocks (off, on, off, on, …) so drift of the machine hits both alike; the
   figure is median(on) / median(off). Goal >= 0.99.

Every figure comes from this one run on this machine; the load average is recorded (other work on the machine
inflates CPU figures and spreads the throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.brokers import free_port  # noqa: E402
from tests.sources.powercap import powercap_tree  # noqa: E402

RESULTS = REPO / "bench" / "results" / "observer.json"


def start_daemon(tmp: Path, rate_hz: float, gpus: int, rapl: int) -> subprocess.Popen[bytes]:
    root = powercap_tree(tmp / f"powercap-{rate_hz:g}", rapl)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_DATA_HOME=str(tmp / "data"))
    for k in ("JOULED_CONFIG", "JOULED_STORE", "RUNTIME_DIRECTORY"):
        env.pop(k, None)
    argv = [sys.executable, "-m", "tests.faults.shim_daemon", "--store", str(tmp / f"obs-{rate_hz:g}.db"),
            "--devices", str(gpus), "--rate", str(rate_hz), "--rapl-root", str(root), "--port", str(free_port())]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


def observer_cost(rate_hz: float, seconds: float, warmup_s: float, gpus: int, rapl: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        p = start_daemon(Path(d), rate_hz, gpus, rapl)
        try:
            proc = psutil.Process(p.pid)
            time.sleep(warmup_s)  # imports, sources opening, the first flushes
            c0, t0 = proc.cpu_times(), time.perf_counter()
            time.sleep(seconds)
            c1, t1 = proc.cpu_times(), time.perf_counter()
            mem = proc.memory_full_info()
            rss_mb, uss_mb = mem.rss / 1e6, mem.uss / 1e6
            threads = proc.num_threads()
        finally:
            stop(p)
    cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
    return {"rate_hz": rate_hz, "devices": gpus + rapl, "seconds": seconds,
            "cpu_pct_of_one_core": round(100 * cpu_s / (t1 - t0), 3), "rss_mb": round(rss_mb, 1),
            "uss_mb": round(uss_mb, 1), "threads": threads}


def jouled_run_memory(seconds: float) -> dict[str, Any]:
    """RSS/USS of `jouled run` itself (the command line loaded too: typer, rich), on this machine's own sources."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_DATA_HOME=str(tmp / "data"),
                   JOULED_MQTT_EMBEDDED_PORT=str(free_port()), JOULED_MQTT_URL="")
        for k in ("JOULED_CONFIG", "JOULED_STORE", "RUNTIME_DIRECTORY"):
            env.pop(k, None)
        p = subprocess.Popen([sys.executable, "-m", "jouled", "run", "--store", f"sqlite:///{tmp}/run.db"], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(seconds)
            mem = psutil.Process(p.pid).memory_full_info()
        finally:
            stop(p)
    return {"command": "jouled run (this machine's sources, embedded broker)", "after_s": seconds,
            "rss_mb": round(mem.rss / 1e6, 1), "uss_mb": round(mem.uss / 1e6, 1)}


def throughput(pairs: int, steps: int, rate_hz: float, gpus: int, rapl: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    import train_throughput as tt

    ns = argparse.Namespace(steps=steps, warmup=5, batch_size=64, channels=16, cells=1, image_size=32,
                            arch=tt.EXAMPLE_ARCH_STR, device="cpu", marker_every=10)
    tt.measure(ns, None)  # warm torch up before anything is timed
    off: list[float] = []
    on: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        for k in range(pairs):
            off.append(tt.measure(ns, None)["samples_per_s"])
            p = start_daemon(Path(d) / f"pair{k}", rate_hz, gpus, rapl)
            try:
                time.sleep(3.0)  # the daemon is up and sampling before the timed steps start
                on.append(tt.measure(ns, None)["samples_per_s"])
            finally:
                stop(p)
    return {"rate_hz": rate_hz, "pairs": pairs, "steps_per_block": steps, "torch_threads": torch.get_num_threads(),
            "samples_per_s_off": [round(x, 1) for x in off], "samples_per_s_on": [round(x, 1) for x in on],
            "ratio_on_off": round(statistics.median(on) / statistics.median(off), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="steady interval per rate")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--rapl", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=8, help="off/on blocks of the throughput part (0: skip it)")
    ap.add_argument("--steps", type=int, default=40, help="timed SGD steps per block")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    res: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        "daemon": "tests.faults.shim_daemon (jouled's daemon; NVML shim GPUs, RAPL powercap tree in a temp dir)",
        "goals": {"cpu_pct_10hz": 0.5, "cpu_pct_100hz": 2.0, "rss_mb": 50, "throughput_ratio": 0.99},
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "observer": [],
    }
    for rate in (10.0, 100.0):
        r = observer_cost(rate, a.seconds, a.warmup, a.gpus, a.rapl)
        print(json.dumps(r), flush=True)
        res["observer"].append(r)
    res["jouled_run_memory"] = jouled_run_memory(a.warmup + 5.0)
    print(json.dumps(res["jouled_run_memory"]), flush=True)
    if a.pairs:
        t = throughput(a.pairs, a.steps, 100.0, a.gpus, a.rapl)
        print(json.dumps(t), flush=True)
        res["throughput"] = t
    res["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
