"""Reads larger than one chunk of a chunked InfluxQL answer come back whole and exact, and a series re-declared
midway (another kind: two InfluxDB series) splits the windows by declaration as the SQLite log does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jouled import influxproto
from jouled.cli import app
from jouled.model import Marker
from jouled.series import SeriesMeta
from jouled.store import influx
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore, sqlite_url
from tests.influx_read import dataset as ds
from tests.servers import ServerHandle

pytestmark = pytest.mark.influx
runner = CliRunner()


def test_multi_chunk_read_and_redeclared_series(tmp_path: Path, influxd: ServerHandle, influx_db: str) -> None:
    n = int(influx.CHUNK_ROWS * 2.5)  # three chunks
    t = ds.T0 + np.arange(n, dtype=np.int64) * 100_000_000 + 7  # odd ns: times must never pass through a float
    p = 200.0 + np.sin(np.arange(n) / 50.0) / 3.0
    e = np.cumsum(p / 10.0)
    p[5::11] = np.nan  # some samples without power
    key = SeriesKey("h", "nvml", "gpu0")
    half = n // 2
    m1 = SeriesMeta(role="gpu", power_period_s=0.1, counter_period_s=0.1)
    m2 = SeriesMeta(role="gpu", kind="estimated", power_period_s=0.1, counter_period_s=0.1)
    st = SqliteStore(tmp_path / "j.db")
    st.write_batches([ChunkBatch(key, t[:half], p[:half], e[:half])], declare={key: m1}, since_ns=int(t[0]))
    st.write_batches([ChunkBatch(key, t[half:], p[half:], e[half:])], declare={key: m2}, since_ns=int(t[half]))
    span_s = n / 10.0
    ms = [Marker(int(t[0]) + 10**9, "h", "r", "run", "start", 0)]
    edges = np.linspace(ds.T0 + 2 * ds.NS, ds.T0 + int((span_s - 2) * ds.NS), 9).astype(np.int64)
    for i in range(8):
        ms.append(Marker(int(edges[i]), "h", "r", "epoch", "start", 1 + 2 * i, epoch=i))
        ms.append(Marker(int(edges[i + 1]) - 1, "h", "r", "epoch", "end", 2 + 2 * i, epoch=i))
    ms.append(Marker(int(t[-1]) - 10**9, "h", "r", "run", "end", 17))
    st.write_markers(ms)
    st.close()
    lines = influxproto.encode_series("h", "nvml", "gpu0", m1, t[:half], p[:half], e[:half])
    lines += influxproto.encode_series("h", "nvml", "gpu0", m2, t[half:], p[half:], e[half:])
    lines += [influxproto.encode_marker(m) for m in ms]
    ds.write_lines(influxd.url, influx_db, lines)

    url = f"influx://127.0.0.1:{influxd.port}/{influx_db}"
    ix = influx.open_influx(url)
    try:
        d = ix.read_series(key)
        assert np.array_equal(d.time_ns, t) and np.array_equal(d.power_w, p, equal_nan=True)
        assert np.array_equal(d.energy_j, e)
        hist = ix.series_meta_history(key)
        assert [(since, m.kind) for since, m in hist] == [(int(t[0]), "measured"), (int(t[half]), "estimated")]
        before = ix.series_meta_at(key, int(t[half]) - 1)
        assert before is not None and not before.estimated
        assert [k.meta.kind for k in ix.series() if k.meta] == ["estimated"]  # the latest declaration
    finally:
        ix.close()
    out = []
    for store in (sqlite_url(tmp_path / "j.db"), url):
        res = runner.invoke(app, ["energy", "epochs", "--run", "r", "--format", "json", "--no-progress", "--store", store])
        assert res.exit_code == 0, res.output
        out.append(json.loads(res.stdout))
    assert len(out[0]) == 8
    assert any("estimated" in r["flags"] for r in out[0]) and any("estimated" not in r["flags"] for r in out[0])
    assert out[1] == out[0]
