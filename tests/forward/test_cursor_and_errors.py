"""Pure and store-level pieces of the forwarder: how InfluxDB answers are classified, the cursor readers, and
maintenance that never merges, downsamples or re-numbers chunks the forwarder has not sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jouled.daemon.forward.writers import classify, target_id
from jouled.model import Allocation, Marker
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore

KEY = SeriesKey("h", "nvml", "gpu0")


def _chunk(st: SqliteStore, t0_s: int, n: int = 10) -> None:
    t = (t0_s * 10**9 + np.arange(n, dtype=np.int64) * 10**8)
    st.write_batches([ChunkBatch(KEY, t, np.full(n, 100.0), np.arange(n, dtype=float))])


def test_classify() -> None:
    assert classify(503, "busy", "http://x", "v1", "d").kind == "retry"
    assert classify(429, "", "http://x", "v1", "d").kind == "retry"
    e = classify(404, '{"error":"database not found: \\"d\\""}', "http://x", "v1", "d")
    assert e.kind == "config" and "[influx] database" in str(e) and "'d'" in str(e)
    e = classify(401, "", "http://x", "v1", "d")
    assert e.kind == "config" and "password_file" in str(e)
    assert "token_file" in str(classify(403, "", "http://x", "v2", "b"))
    e = classify(400, '{"error":"partial write: field type conflict: ... dropped=3"}', "http://x", "v1", "d")
    assert e.kind == "reject" and e.dropped == 3
    assert classify(400, "unable to parse", "http://x", "v1", "d").dropped is None


def test_target_id_has_no_credentials() -> None:
    assert target_id("http://u:secret@db.example:8086", "v1", "jouled", "b") == "v1:db.example:8086/jouled"
    assert target_id("https://db.example/influx/", "v2", "d", "bucket") == "v2:db.example:443/influx/bucket"


def test_readers_skip_aggregates_and_follow_rowids(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    for i in range(3):
        _chunk(st, 1000 + i)
    st.downsample(older_than_ns=1002 * 10**9, period_s=1.0)  # chunks 1, 2 → aggregates (res_s > 0)
    rows = st.raw_chunks_after(0)
    assert [len(d) for _c, _k, d in rows] == [10]
    assert st.raw_backlog(0)[1] == 10
    assert len(st.raw_chunks_after(0, max_points=5)) == 1  # the first chunk always comes, whatever its size
    st.write_markers([Marker(5, "h", "r", "run", "start", 0), Marker(6, "h", "r", "run", "end", 1)])
    ms = st.markers_after(0)
    assert [m.seq for _i, m in ms] == [0, 1] and st.markers_after(ms[0][0])[0][1].seq == 1
    st.write_allocations([Allocation(1, "s", 2, 2, 0.5, 100.0)])
    assert st.allocations_after(0)[0][1].search == "s"


def test_maintenance_holds_unsent_chunks(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "b.db")
    for i in range(6):
        _chunk(st, 1000 + i)  # ids 1..6
    ids = [c for c, _k, _d in st.raw_chunks_after(0)]
    cursor = ids[2]  # the forwarder sent ids 1..3
    st.maintain(now_ns=4 * 10**18, raw_retention_s=10.0, aggregate_retention_s=10**10, aggregate_period_s=1.0,
                compact_after_s=0.0, max_id=cursor)
    left = st.raw_chunks_after(cursor)
    assert [c for c, _k, _d in left] == ids[3:]  # unsent: untouched, still raw, same ids
    _chunk(st, 2000)
    assert st.raw_chunks_after(ids[-1])  # a new chunk gets an id past every cursor
    # with every chunk sent, the newest one still stays (its id must not be reused behind the cursor)
    st.maintain(now_ns=4 * 10**18, raw_retention_s=10.0, aggregate_retention_s=10**10, aggregate_period_s=1.0,
                compact_after_s=0.0, max_id=10**9)
    newest = max(c for c, _k, _d in st.raw_chunks_after(0))
    _chunk(st, 3000)
    assert max(c for c, _k, _d in st.raw_chunks_after(0)) > newest
