"""Benchmark the InfluxDB forwarder against a real InfluxDB 1.x (tests/servers.py) → bench/results/forward.json.

1. catch-up: a log holding a 10-minute outage at 100 Hz × 10 devices (6 M samples, in the 50-sample chunks a
   0.5 s flush leaves — maintenance does not merge unsent chunks), drained by the forwarder; points/s (goal >= 100k).
2. steady-state lag: a shim-GPU daemon process (10 devices at 100 Hz, flush every 0.2 s) forwarding for --run-s;
   lag (newest stored sample − newest forwarded, from the log and the persisted cursor) sampled every 0.25 s, and
   the delivery delay (a batch's newest sample time → InfluxDB's 2xx, from the status file); p50/p99/max.
3. daemon CPU with forwarding on vs off: the same run shape, CPU seconds of the daemon process over the run
   after a warm-up (utime + stime from /proc).
Load average is recorded with each part (the machine is shared: numbers are only comparable within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jouled.config import Config  # noqa: E402
from jouled.daemon.forward import build_forwarder  # noqa: E402
from jouled.daemon.forward.writers import target_id  # noqa: E402
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore  # noqa: E402
from tests.servers import ServerHandle, start_influxd  # noqa: E402

RESULTS = REPO / "bench" / "results" / "forward.json"
NS = 1_000_000_000


def fill_outage(path: Path, devices: int, rate_hz: int, seconds: int, flush_s: float = 0.5) -> int:
    st = SqliteStore(path)
    per = int(rate_hz * flush_s)
    t0 = time.time_ns() - seconds * NS
    rng = np.random.default_rng(0)
    flushes = int(seconds / flush_s)
    step = NS // rate_hz
    group = 200  # flushes per transaction (how many does not matter to the forwarder: one chunk per series each)
    n = 0
    for g in range(0, flushes, group):
        batches = []
        for f in range(g, min(g + group, flushes)):
            t = t0 + (f * per + np.arange(per, dtype=np.int64)) * step
            for d in range(devices):
                p = 250.0 + 50.0 * rng.random(per)
                batches.append(ChunkBatch(SeriesKey("bench", "nvml", f"gpu{d}"), t, p, (f * per + np.arange(per)) * 2.5))
                n += per
        st.write_batches(batches)
    st.close()
    return n


def influx_count(srv: ServerHandle, db: str) -> int:
    s = srv.influxql("SELECT count(power_w) FROM power", db)
    return int(s[0]["values"][0][1]) if s else 0


def bench_catch_up(srv: ServerHandle, tmp: Path, batch_size: int, devices: int, rate_hz: int, seconds: int) -> dict[str, Any]:
    db = f"catchup{batch_size}_{seconds}"
    srv.create_database(db)
    path = tmp / f"outage{batch_size}_{seconds}.db"
    t = time.perf_counter()
    n = fill_outage(path, devices, rate_hz, seconds)
    fill_s = time.perf_counter() - t
    cfg = Config()
    cfg.influx.url, cfg.influx.database, cfg.influx.batch_size = srv.url, db, batch_size
    cfg.daemon.host = "bench"
    st = SqliteStore(path)
    fwd = build_forwarder(cfg, st)
    load0 = os.getloadavg()
    t = time.perf_counter()
    sent = fwd.drain(timeout_s=3600)
    elapsed = time.perf_counter() - t
    load1 = os.getloadavg()
    fwd.close()
    stored = influx_count(srv, db)
    return {
        "outage_s": seconds, "devices": devices, "rate_hz": rate_hz, "samples_in_log": n, "points_sent": sent,
        "points_in_influx": stored, "batch_size": batch_size,
        "writes_in_flight": fwd.in_flight, "fill_s": round(fill_s, 1), "drain_s": round(elapsed, 2),
        "points_per_s": round(sent / elapsed), "goal_points_per_s": 100_000, "meets_goal": sent / elapsed >= 100_000,
        "loadavg_before": load0, "loadavg_after": load1,
    }


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_daemon(tmp: Path, name: str, influx_url: str, db: str, devices: int, rate_hz: int, run_s: float,
               warmup_s: float = 5.0) -> dict[str, Any]:
    store, status = tmp / f"{name}.db", tmp / f"{name}.status.json"
    argv = [sys.executable, "-m", "tests.forward.influx_daemon", "--store", str(store), "--influx", influx_url,
            "--database", db, "--devices", str(devices), "--rate", str(rate_hz), "--status", str(status)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lags: list[float] = []
    delays: list[float] = []
    key = f"forward:{target_id(influx_url, 'v1', db, 'jouled')}:chunks"
    try:
        time.sleep(warmup_s)
        log = SqliteStore(store, readonly=True)
        load0 = os.getloadavg()
        c0, t0 = cpu_s(p.pid), time.monotonic()
        while time.monotonic() - t0 < run_s:
            time.sleep(0.25)
            if not influx_url:
                continue
            # the lag as defined (newest stored − newest forwarded), sampled from outside at arbitrary moments:
            # the forwarder's own lag_s is computed right after its passes, when it is ~0 by construction
            cursor = int(log.get_meta(key, "0") or 0)
            newest, done = log.chunk_t1_ns(2**62), log.chunk_t1_ns(cursor)
            if newest is not None and done is not None:
                lags.append(max(0.0, (newest - done) / NS))
            try:
                st = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            delay = (st.get("forwarder") or {}).get("delivery_delay_s")
            if delay is not None:
                delays.append(float(delay))
        c1, t1 = cpu_s(p.pid), time.monotonic()
        load1 = os.getloadavg()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    out: dict[str, Any] = {
        "forwarding": bool(influx_url), "flush_interval_s": 0.2, "devices": devices, "rate_hz": rate_hz,
        "run_s": round(t1 - t0, 1),
        "cpu_s": round(c1 - c0, 2), "cpu_pct_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 1),
        "loadavg_before": load0, "loadavg_after": load1,
    }
    for name, vals in (("lag", lags), ("delivery_delay", delays)):
        if vals:
            a = np.array(vals)
            out.update({f"{name}_samples": len(vals), f"{name}_p50_s": round(float(np.percentile(a, 50)), 3),
                        f"{name}_p99_s": round(float(np.percentile(a, 99)), 3), f"{name}_max_s": round(float(a.max()), 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600, help="outage length (s)")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--batch-size", type=int, action="append", help="catch-up batch size(s); default 5000 and 20000")
    ap.add_argument("--run-s", type=float, default=60.0)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--parts", default="catch_up,steady", help="comma-separated: catch_up, steady")
    ap.add_argument("--append", action="store_true", help="add the catch-up runs to those already in --out")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    out = Path(a.out)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}  # parts may run separately
    result.update({
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "influxdb": "InfluxDB 1.x (Debian influxdb, tests/servers.start_influxd, inmem index), same machine",
    })
    srv = start_influxd()
    try:
        with tempfile.TemporaryDirectory(prefix="jouled-bench-fwd-") as d:
            tmp = Path(d)
            if "catch_up" in parts:
                runs = []
                for b in a.batch_size or [5000, 20000]:
                    runs.append(bench_catch_up(srv, tmp, b, a.devices, a.rate, a.seconds))
                    srv.influxql(f'DROP DATABASE "catchup{b}_{a.seconds}"')
                result["catch_up"] = (result.get("catch_up", []) if a.append else []) + runs
            if "steady" in parts:
                srv.create_database("steady")
                result["steady_forwarding_on"] = run_daemon(tmp, "on", srv.url, "steady", a.devices, a.rate, a.run_s)
                result["steady_forwarding_off"] = run_daemon(tmp, "off", "", "steady", a.devices, a.rate, a.run_s)
                on, off = result["steady_forwarding_on"], result["steady_forwarding_off"]
                result["forwarding_cpu_pct_added"] = round(on["cpu_pct_of_one_core"] - off["cpu_pct_of_one_core"], 1)
    finally:
        srv.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
