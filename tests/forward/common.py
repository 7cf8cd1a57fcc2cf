"""Helpers for the forwarder tests: totals of the local log and of InfluxDB, config, waiting."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jouled.config import Config
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore
from tests.servers import ServerHandle

Totals = dict[tuple[str, str], tuple[int, float, int, float]]  # (host, device) → (n power, Σ power, n energy, max energy)
T0_NS = 1_700_000_000_000_000_000


def log_totals(path: Path) -> Totals:
    """Per series: count and sum of finite power_w, count and max of finite energy_j, over every raw chunk."""
    st = SqliteStore(path, readonly=True)
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0, float("-inf")])
    cur = 0
    while rows := st.raw_chunks_after(cur, limit=1000):
        for cid, key, d in rows:
            a = acc[(key.host, key.device)]
            p = d.power_w[np.isfinite(d.power_w)]
            e = d.energy_j[np.isfinite(d.energy_j)]
            a[0] += p.size
            a[1] += float(p.sum())
            a[2] += e.size
            if e.size:
                a[3] = max(a[3], float(e.max()))
            cur = cid
    st.close()
    return {k: (int(v[0]), v[1], int(v[2]), v[3]) for k, v in acc.items()}


def influx_totals(srv: ServerHandle, db: str, where: str = "") -> Totals:
    q = f"SELECT count(power_w), sum(power_w), count(energy_j), max(energy_j) FROM power {where} GROUP BY host, device"
    out: Totals = {}
    for s in srv.influxql(q, db):
        _t, n, total, ne, emax = s["values"][0]
        out[(s["tags"]["host"], s["tags"]["device"])] = (int(n), float(total or 0.0), int(ne),
                                                         float(emax) if emax is not None else float("-inf"))
    return out


def assert_same(log: Totals, influx: Totals) -> None:
    assert log, "the log is empty"
    assert set(influx) == set(log)
    for k, (n, total, ne, emax) in log.items():
        n2, total2, ne2, emax2 = influx[k]
        assert (n2, ne2) == (n, ne), k
        assert total2 == pytest.approx(total, rel=1e-9), k
        assert emax2 == emax, k


def influx_config(srv_url: str, db: str, tmp: Path, host: str = "testhost") -> Config:
    cfg = Config()
    cfg.daemon.host = host
    cfg.daemon.flush_interval_s = 0.1
    cfg.daemon.health_interval_s = 0.2
    cfg.store.path = str(tmp / f"{host}.db")
    cfg.mqtt.url = ""
    cfg.influx.url = srv_url
    cfg.influx.database = db
    cfg.influx.max_retry_s = 0.5
    return cfg


def wait_for(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def fill_store(
    path: Path, host: str = "h", devices: int = 2, chunks: int = 5, n: int = 100, t0_ns: int = T0_NS
) -> SqliteStore:
    """A log with `devices` series of `chunks` × `n` samples at 100 Hz from t0_ns (no daemon)."""
    st = SqliteStore(path)
    rng = np.random.default_rng(1)
    for c in range(chunks):
        t = t0_ns + (c * n + np.arange(n, dtype=np.int64)) * 10_000_000
        st.write_batches([
            ChunkBatch(SeriesKey(host, "nvml", f"gpu{i}"), t, 250 + 50 * rng.random(n), np.cumsum(np.full(n, 2.5)) + c * n * 2.5)
            for i in range(devices)
        ])
    return st
