"""Benchmark `jouled energy epochs` from InfluxDB 1.x (--store influx://) against the same log in SQLite.

The data shape of bench/energy_epochs_store.py (10 devices — 8 GPUs and 2 CPU packages — at 10 Hz with power and a
counter, one run of many epochs), written to a real InfluxDB 1.6 (tests/servers.py) with jouled.influxproto in
batches of 50,000 lines, and to SQLite. Times, best of N: reading every series of the run's span (load_series) and the
whole compute_rows, from each store; checks the rows are the same. Writes bench/results/energy_epochs_influx.json.

    python bench/energy_epochs_influx.py [--hours 24] [--epochs 10000] [--repeat 3] [--influx-repeat 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.servers from a source checkout

from energy_epochs_store import best, markers  # the same run's markers as the SQLite bench (bench/ is on the path)

from jouled import influxproto
from jouled.config import Config
from jouled.query import compute_rows, load_series
from jouled.series import SeriesMeta
from jouled.store.influx import open_influx
from jouled.store.sqlite import NS_PER_S, ChunkBatch, SeriesKey, SqliteStore
from tests.servers import start_influxd

RESULTS = Path(__file__).parent / "results" / "energy_epochs_influx.json"
T0 = 1_700_000_000 * NS_PER_S
BATCH_LINES = 50_000


def series_meta(src: str, dev: str) -> SeriesMeta:
    role = "gpu" if src == "nvml" else "package"
    return SeriesMeta(role=role, power_period_s=0.1, counter_period_s=0.1)


def chunks(hours: float, devices: int, rate_hz: int, per_chunk: int = 8192):  # type: ignore[no-untyped-def]
    """The batches of bench/energy_epochs_store.py: per chunk of time, one batch per device."""
    n_total = int(hours * 3600 * rate_hz)
    step = NS_PER_S // rate_hz
    for c0 in range(0, n_total, per_chunk):
        idx = np.arange(c0, min(c0 + per_chunk, n_total), dtype=np.int64)
        out = []
        for d in range(devices):
            src, dev = ("nvml", f"gpu{d}") if d < 8 else ("rapl", f"package-{d - 8}")
            p = 200.0 + 50.0 * np.sin(idx / 600.0 + d)
            e = 200.0 * idx / rate_hz
            out.append(ChunkBatch(SeriesKey("bench", src, dev), T0 + idx * step, p, e))
        yield out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rate", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N for the SQLite timings")
    ap.add_argument("--influx-repeat", type=int, default=1, help="best of N for the InfluxDB timings (minutes each)")
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args()
    srv = start_influxd()
    try:
        srv.create_database("bench")
        with tempfile.TemporaryDirectory() as d:
            st = SqliteStore(Path(d) / "b.db")
            ms = markers(a.hours, a.epochs)
            metas = {}
            n = 0
            buf: list[str] = []
            t_write = 0.0
            client = httpx.Client(timeout=600)

            def flush() -> None:
                nonlocal t_write
                t = time.perf_counter()
                r = client.post(srv.url + "/write", params={"db": "bench", "precision": "ns"},
                                content=influxproto.join_lines(buf))
                assert r.status_code == 204, r.text
                t_write += time.perf_counter() - t
                buf.clear()

            t_all = time.perf_counter()
            for batches in chunks(a.hours, a.devices, a.rate):
                declare = {b.key: series_meta(b.key.source, b.key.device) for b in batches if b.key not in metas}
                metas.update(declare)
                st.write_batches(batches, declare=declare or None, since_ns=T0)
                for b in batches:
                    buf.extend(influxproto.encode_series(b.key.host, b.key.source, b.key.device, metas[b.key],
                                                         b.time_ns, b.power_w, b.energy_j))
                    n += b.time_ns.size
                if len(buf) >= BATCH_LINES:
                    flush()
            st.write_markers(ms)
            buf.extend(influxproto.encode_marker(m) for m in ms)
            flush()
            t_load = time.perf_counter() - t_all
            cfg = Config()
            ix = open_influx(f"influx://127.0.0.1:{srv.port}/bench", cfg)
            lo, hi = ms[0].time_ns, ms[-1].time_ns
            res_s: dict[str, float] = {}
            res_s["sqlite_read_series"] = best(lambda: load_series(st, "bench", lo, hi, cfg), a.repeat)
            res_s["sqlite_compute_rows_total"] = best(lambda: compute_rows(st, cfg, "r", ("epoch",)), a.repeat)
            res_s["influx_read_series"] = best(lambda: load_series(ix, "bench", lo, hi, cfg), a.influx_repeat)
            res_s["influx_compute_rows_total"] = best(lambda: compute_rows(ix, cfg, "r", ("epoch",)), a.influx_repeat)
            rows_sq, _ = compute_rows(st, cfg, "r", ("epoch",))
            rows_ix, _ = compute_rows(ix, cfg, "r", ("epoch",))
            same = len(rows_sq) == len(rows_ix) and all(
                all(x[k] == y[k] or (isinstance(x[k], float) and math.isclose(x[k], y[k], rel_tol=1e-12)) for k in x)
                for x, y in zip(rows_sq, rows_ix, strict=True)
            )
            ix.close()
            st.close()
    finally:
        srv.stop()
    res = {
        "log": {"hours": a.hours, "devices": a.devices, "rate_hz": a.rate, "samples": n, "epochs": a.epochs},
        "rows": len(rows_sq),
        "rows_identical": same,
        "load": {"influx_write_s": round(t_write, 1), "both_stores_incl_encoding_s": round(t_load, 1),
                 "batch_lines": BATCH_LINES},
        "seconds": {k: round(v, 3) for k, v in res_s.items()},
        "influx_points_per_s": round(n / res_s["influx_read_series"]),
        "best_of": {"sqlite": a.repeat, "influx": a.influx_repeat},
        "server": "InfluxDB 1.6 (tests/servers.py start_influxd), same 2-core machine as the client",
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "note": "the machine is shared with other sessions: InfluxDB timings vary by tens of percent between runs; "
                "the InfluxDB side is server-bound (JSON encoding of ~100k points/s on InfluxDB 1.6)",
    }
    print(json.dumps(res, indent=2))
    if not a.no_save:
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
