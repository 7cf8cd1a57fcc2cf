"""Benchmark the local SQLite log: ingest rate (samples/s) and a 24 h × 10 devices × 10 Hz range read."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from jouled.model import Sample
from jouled.store.sqlite import NS_PER_S, ChunkBatch, SeriesKey, SqliteStore, batches_from_samples

RESULTS = Path(__file__).parent / "results" / "store_ingest_read.json"


def bench_ingest_daemon_path(store: SqliteStore, seconds: int, devices: int, rate_hz: int) -> float:
    """The daemon's path: Sample objects per 0.5 s flush → per-series chunks, one transaction per flush."""
    t0 = 1_700_000_000 * NS_PER_S
    per_flush = rate_hz // 2
    flushes = []
    for f in range(seconds * 2):
        rows = []
        for d in range(devices):
            for k in range(per_flush):
                t = t0 + (f * per_flush + k) * (NS_PER_S // rate_hz)
                rows.append(Sample(t, "bench", "nvml", f"gpu{d}", 250.0 + k, 1000.0 + f, {"util_gpu_pct": 90.0}))
        flushes.append(rows)
    n = sum(len(r) for r in flushes)
    start = time.perf_counter()
    for rows in flushes:
        store.write_batches(batches_from_samples(rows))
    return n / (time.perf_counter() - start)


def fill_day(store: SqliteStore, devices: int, rate_hz: int, hours: float, chunk_s: float) -> int:
    """Write `hours` of data as the daemon leaves it after compaction (chunks of chunk_s seconds)."""
    t0 = 1_700_000_000 * NS_PER_S
    per_chunk = int(rate_hz * chunk_s)
    total_s = int(hours * 3600)
    n = 0
    for c in range(int(total_s / chunk_s)):
        batches = []
        for d in range(devices):
            t = t0 + (c * per_chunk + np.arange(per_chunk, dtype=np.int64)) * (NS_PER_S // rate_hz)
            p = 200.0 + 50.0 * np.sin(t / 1e10 + d)
            e = np.cumsum(p) / rate_hz + c * per_chunk
            batches.append(ChunkBatch(SeriesKey("bench", "nvml", f"gpu{d}"), t, p, e))
            n += per_chunk
        store.write_batches(batches)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rate", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ingest_store = SqliteStore(Path(d) / "ingest.db")
        ingest = bench_ingest_daemon_path(ingest_store, seconds=60, devices=10, rate_hz=1000)
        store = SqliteStore(Path(d) / "day.db")
        t = time.perf_counter()
        n = fill_day(store, args.devices, args.rate, args.hours, chunk_s=600)
        bulk_rate = n / (time.perf_counter() - t)
        size_mb = (Path(d) / "day.db").stat().st_size / 1e6
        reads = []
        for _ in range(3):
            t = time.perf_counter()
            got = sum(len(store.read_series(k)) for k in store.series())
            reads.append(time.perf_counter() - t)
        assert got == n, (got, n)
        # a one-epoch window (60 s) on one device: what `energy epochs` does per window
        mid = 1_700_000_000 * NS_PER_S + int(args.hours * 1800) * NS_PER_S
        t = time.perf_counter()
        for _ in range(100):
            store.read_series(SeriesKey("bench", "nvml", "gpu0"), mid, mid + 60 * NS_PER_S)
        window_ms = (time.perf_counter() - t) / 100 * 1e3
    res = {
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "ingest_daemon_path_samples_per_s": round(ingest),
        "ingest_goal_samples_per_s": 200_000,
        "bulk_ingest_samples_per_s": round(bulk_rate),
        "range_read": {"hours": args.hours, "devices": args.devices, "rate_hz": args.rate, "samples": n,
                       "seconds_best_of_3": round(min(reads), 4), "goal_s": 1.0, "db_mb": round(size_mb, 1)},
        "window_read_60s_one_device_ms": round(window_ms, 3),
    }
    print(json.dumps(res, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
