"""Benchmark what the daemon's flushes write to the SQLite log's WAL, by page size and by how much history it holds.

Each flush stores one small chunk per series in one transaction (this bench models the 0.5 s flush that was the
default when it was run; `[daemon] flush_interval_s` is 1 s since: half the flushes); every series' newest entry
sits on its own leaf of the `chunks (series_id, t1_ns)` index once the log holds some history, and the WAL takes whole pages. This
writes `--history` compacted chunks (8192 samples) per series first, then times `--flushes` flushes of 5 samples
per series (10 Hz) with their watermarks, as `SqliteStore.write_batches` does in the daemon: WAL bytes per flush
(the WAL file's growth, with no checkpoint during the flushes; the daemon's checkpoints then copy the pages back
into the log, once per page however often it changed), the GB a day that makes at 2 flushes a second, and the store
thread's CPU per flush (hot: back to back). 12 series (8 GPUs, 4 RAPL domains), page sizes 4096 (SQLite's default,
what new logs keep) and 16384 (what they had), alternating. Writes bench/results/store_wal.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore

RESULTS = Path(__file__).parent / "results" / "store_wal.json"
KEYS = [SeriesKey("bench", "nvml", f"gpu{i}") for i in range(8)] + [SeriesKey("bench", "rapl", f"package-{i}")
                                                                    for i in range(4)]
STEP_NS = 100_000_000  # 10 Hz


def _batches(t0_ns: int, n: int) -> list[ChunkBatch]:
    ts = array("q", [t0_ns + i * STEP_NS for i in range(n)])
    return [ChunkBatch(k, ts, array("d", [300.0] * n), array("d", [float(i) for i in range(n)])) for k in KEYS]


def measure(page_size: int, history: int, flushes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.db"
        with contextlib.closing(sqlite3.connect(path)) as c:  # the page size of a log made with it
            c.execute(f"PRAGMA page_size={int(page_size)}")
            c.execute("PRAGMA journal_mode=WAL")
        st = SqliteStore(path)
        assert st._conn().execute("PRAGMA page_size").fetchone()[0] == page_size
        t = 0
        for _ in range(history):
            st.write_batches(_batches(t, 8192))
            t += 8192 * STEP_NS
        complete = dict.fromkeys(KEYS, 0)
        for _ in range(20):  # warm
            st.write_batches(_batches(t, 5), complete=complete)
            t += 5 * STEP_NS
        st._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # no checkpoint while measuring: one would let the WAL wrap and stop growing, and its growth is the measure
        st._conn().execute("PRAGMA wal_autocheckpoint=0")
        wal = Path(str(path) + "-wal")
        w0 = wal.stat().st_size
        cpu0 = time.thread_time()
        for _ in range(flushes):
            st.write_batches(_batches(t, 5), complete=complete)
            t += 5 * STEP_NS
        cpu_us = (time.thread_time() - cpu0) / flushes * 1e6
        per_flush = (wal.stat().st_size - w0) / flushes
        st.close()
    return {"page_size": page_size, "history_chunks_per_series": history, "wal_kib_per_flush": round(per_flush / 1024, 1),
            "wal_gb_per_day_at_2_flushes_per_s": round(per_flush * 2 * 86400 / 1e9, 1),
            "cpu_us_per_flush_hot": round(cpu_us)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=int, nargs="+", default=[0, 100, 400])
    ap.add_argument("--flushes", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    runs = []
    for h in a.history:
        for ps in (4096, 16384):
            r = measure(ps, h, a.flushes)
            print(json.dumps(r))
            runs.append(r)
    res = {"series": len(KEYS), "rate_hz": 10, "flush_s": 0.5, "flushes": a.flushes, "runs": runs,
           "machine": f"{os.cpu_count()} cores", "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
