"""The local SQLite log: chunked writes, range reads, markers dedup, compaction, downsampling, bad paths."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from jouled.errors import UserError
from jouled.model import CarbonPoint, Marker, Sample
from jouled.store.chunkcodec import aggregate, columns
from jouled.store.sqlite import SCHEMA_VERSION, ChunkBatch, SeriesKey, SqliteStore, open_store

KEY = SeriesKey("h", "nvml", "gpu0")


def _batch(t0: int, n: int, key: SeriesKey = KEY, step: int = 100_000_000) -> ChunkBatch:
    t = t0 + np.arange(n, dtype=np.int64) * step
    return ChunkBatch(key, t, np.full(n, 100.0), 10.0 * np.arange(n, dtype=np.float64) + t0 / 1e8)


def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.close()
    SqliteStore(tmp_path / "a.db")  # reopening migrates nothing and does not fail


def test_roundtrip_range_read_across_chunks(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    st.write_batches([_batch(0, 10), _batch(1_000_000_000, 10)])
    d = st.read_series(KEY, 500_000_000, 1_500_000_000)
    assert d.time_ns[0] == 500_000_000 and d.time_ns[-1] == 1_500_000_000
    assert len(d) == 11
    assert np.all(np.diff(d.time_ns) > 0)
    assert len(st.read_series(SeriesKey("h", "nvml", "gpu9"))) == 0


def test_rows_with_none_fields_and_extras(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    st.write_samples([
        Sample(1, "h", "rapl", "package-0", None, 5.0, {}),
        Sample(2, "h", "rapl", "package-0", 30.0, None, {"temp_c": 40.0}),
    ])
    d = st.read_series(SeriesKey("h", "rapl", "package-0"), extras=True)
    assert np.isnan(d.power_w[0]) and d.power_w[1] == 30.0
    assert d.energy_j[0] == 5.0 and np.isnan(d.energy_j[1])
    assert np.isnan(d.extras["temp_c"][0]) and d.extras["temp_c"][1] == 40.0


def test_out_of_order_chunks_read_sorted(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    st.write_batches([_batch(1_000_000_000, 5)])
    st.write_batches([_batch(0, 5, step=300_000_000)])  # overlaps the first chunk's span
    d = st.read_series(KEY)
    assert len(d) == 10 and np.all(np.diff(d.time_ns) >= 0)


def test_markers_dedup_by_run_seq(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    m = Marker(1, "h", "r1", "epoch", "start", 0, epoch=0, gpus=("gpu0", "gpu1"), attrs={"lr": 0.1})
    assert st.write_markers([m, m]) == 1
    assert st.write_markers([m]) == 0
    got = st.read_markers("r1")
    assert got == [m]
    assert st.runs() == ["r1"]


def test_markers_read_back_every_stored_field(tmp_path: Path) -> None:
    # read_markers builds markers positionally from its SELECT: every field must land in its own place
    st = SqliteStore(tmp_path / "a.db")
    ms = [Marker(7, "host-a", "run-b", "phase", "start", 3, epoch=2, phase="forward", arch="|none~0|", gpus=("gpu3",),
                 attrs={"lr": 0.1}),
          Marker(9, "host-a", "run-b", "phase", "end", 4, epoch=2, phase="forward")]
    st.write_markers(ms)
    assert st.read_markers("run-b") == ms
    # what a query pairs: every field but the attrs, left empty (not read, not parsed)
    assert st.read_markers("run-b", attrs=False) == [dataclasses.replace(m, attrs={}) for m in ms]


def test_carbon_and_allocations(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    st.write_carbon([CarbonPoint(10, "DE", "trace", 300.0), CarbonPoint(20, "DE", "trace", 200.0)])
    assert [p.intensity_g_per_kwh for p in st.read_carbon("DE")] == [300.0, 200.0]
    assert st.read_carbon("DE", forecast=True) == []


def test_compaction_keeps_data_and_smallest_id(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    for i in range(20):
        st.write_batches([_batch(i * 1_000_000_000, 10)])
    before = st.read_series(KEY)
    removed = st.compact(older_than_ns=10**18, target_n=100)
    assert removed == 18  # 20 chunks of 10 → 2 chunks of 100
    after = st.read_series(KEY)
    np.testing.assert_array_equal(before.time_ns, after.time_ns)
    np.testing.assert_array_equal(before.energy_j, after.energy_j)
    ids = [cid for cid, _, _ in st.iter_chunks_after(0)]
    assert ids == [1, 11]


def test_compaction_respects_cursor(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    for i in range(6):
        st.write_batches([_batch(i * 1_000_000_000, 10)])
    st.compact(older_than_ns=10**18, max_id=3)
    assert [cid for cid, _, _ in st.iter_chunks_after(3)] == [4, 5, 6]


def test_aggregate_mean_power_last_counter() -> None:
    t = np.array([0, 400_000_000, 900_000_000, 1_100_000_000], dtype=np.int64)
    p = np.array([100.0, 200.0, np.nan, 50.0])
    e = np.array([0.0, np.nan, 90.0, 100.0])
    agg = aggregate(columns(t, p, e), 1.0)
    ta, pa, ea = agg.time_ns, agg.power_w, agg.energy_j
    assert list(pa) == [150.0, 50.0]
    assert list(ea) == [90.0, 100.0]
    assert ta[0] == (0 + 400_000_000 + 900_000_000) // 3


def test_downsample_and_expire(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "a.db")
    st.write_batches([_batch(0, 100)])  # 10 s at 10 Hz
    assert st.downsample(older_than_ns=10**18, period_s=1.0) == 100
    d = st.read_series(KEY)
    assert len(d) == 10
    assert st.expire(aggregates_before_ns=10**18) == 1
    assert len(st.read_series(KEY)) == 0


def test_unwritable_store_path_is_one_line_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    with pytest.raises(UserError) as e:
        SqliteStore(ro / "file" / "sub" / "a.db")  # a file where a folder must be
    assert "choose a writable --store" in str(e.value) and "\n" not in str(e.value)


def test_open_store_urls(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="three slashes"):
        open_store("sqlite://rel.db")
    with pytest.raises(UserError, match="no such log"):
        open_store(f"sqlite:///{tmp_path}/missing.db", readonly=True)
    with pytest.raises(UserError, match=r"logs to SQLite, not to InfluxDB.*set \[influx\] url"):
        open_store("influx://h:8086/db")
    with pytest.raises(UserError, match=r"scheme 'foo' is not a store.*sqlite:///.*influx://.*influx2://"):
        open_store("foo://x")
    st = open_store(f"sqlite:///{tmp_path}/x.db")
    assert os.path.exists(st.path)
