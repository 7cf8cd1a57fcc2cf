"""The chunk codec (jouled/store/chunkcodec.py): what the daemon writes with `array` is what readers view with numpy."""

from __future__ import annotations

import math
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.store import chunkcodec
from jouled.store.chunkcodec import aggregate, columns, decode
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore

KEY = SeriesKey("h", "nvml", "gpu0")
floats = st.one_of(st.just(math.nan), st.floats(allow_nan=False, allow_infinity=True, width=64))


def _same(a: object, b: object) -> bool:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62), 2**62), floats, floats, floats), min_size=1, max_size=40),
       st.booleans())
def test_store_round_trip_matches_numpy_columns(tmp_path_factory: pytest.TempPathFactory,
                                                rows: list[tuple[int, float, float, float]], as_numpy: bool) -> None:
    """Written from arrays or from numpy arrays, unsorted, with NaN and infinities: read back sorted and equal."""
    t = [r[0] for r in rows]
    p, e, x = ([r[i] for r in rows] for i in (1, 2, 3))
    if as_numpy:
        batch = ChunkBatch(KEY, np.array(t, np.int64), np.array(p), np.array(e), {"x": np.array(x)})
    else:
        batch = ChunkBatch(KEY, array("q", t), array("d", p), array("d", e), {"x": array("d", x)})
    st_ = SqliteStore(tmp_path_factory.mktemp("c") / "a.db")
    assert st_.write_batches([batch]) == len(rows)
    got = st_.read_series(KEY, extras=True)
    order = np.argsort(np.array(t, np.int64), kind="stable")
    assert got.time_ns.tolist() == np.array(t, np.int64)[order].tolist()
    for col, want in ((got.power_w, p), (got.energy_j, e), (got.extras.get("x", np.full(len(t), np.nan)), x)):
        assert _same(col, np.array(want)[order])


def test_a_column_without_any_value_is_stored_as_null(tmp_path: Path) -> None:
    st_ = SqliteStore(tmp_path / "a.db")
    st_.write_batches([ChunkBatch(KEY, array("q", [1, 2]), array("d", [1.0, 2.0]), chunkcodec.nans(2))])
    (blob,) = st_._conn().execute("SELECT energy_j FROM chunks").fetchone()
    assert blob is None
    assert np.isnan(st_.read_series(KEY).energy_j).all()


def test_extras_of_merged_chunks_stay_aligned(tmp_path: Path) -> None:
    """Compaction (array-only) merges chunks whose extras differ: each extra is NaN where its chunk lacked it."""
    st_ = SqliteStore(tmp_path / "a.db")
    st_.write_batches([ChunkBatch(KEY, array("q", [1, 2]), array("d", [1, 2]), array("d", [5, 6]),
                                  {"util": array("d", [0.1, 0.2])})])
    st_.write_batches([ChunkBatch(KEY, array("q", [3]), array("d", [3]), array("d", [7]),
                                  {"temp": array("d", [60]), "util": array("d", [0.3])})])
    st_.write_batches([ChunkBatch(KEY, array("q", [0]), array("d", [0]), array("d", [4]))])  # late: sorts first
    assert st_.compact(older_than_ns=10**18) == 2
    d = st_.read_series(KEY, extras=True)
    assert d.time_ns.tolist() == [0, 1, 2, 3] and d.energy_j.tolist() == [4, 5, 6, 7]
    assert _same(d.extras["util"], [math.nan, 0.1, 0.2, 0.3]) and _same(d.extras["temp"], [math.nan] * 3 + [60])


def test_aggregate_buckets_by_floor_with_exact_mean_time() -> None:
    t = [-1_500_000_000, -600_000_000, 0, 999_999_999, 1_000_000_000]
    agg = aggregate(columns(t, [1.0, math.nan, 2.0, 4.0, math.nan], [math.nan, math.nan, 1.0, math.nan, 9.0]), 1.0)
    assert agg.time_ns.tolist() == [-1_500_000_000, -600_000_000, 499_999_999, 1_000_000_000]
    assert _same(agg.power_w, [1.0, math.nan, 3.0, math.nan])
    assert _same(agg.energy_j, [math.nan, math.nan, 1.0, 9.0])  # no counter of its own: NaN, not the last one


def test_columns_of_unequal_length_name_the_column() -> None:
    with pytest.raises(ValueError, match="column energy_j has 1 values for 2 times"):
        columns([1, 2], [1.0, 2.0], [1.0])


def test_decode_of_no_chunk_is_empty() -> None:
    assert len(decode([])) == 0


def test_the_daemons_write_path_and_housekeeping_never_import_numpy(tmp_path: Path) -> None:
    """Sampler sink -> store write -> compaction -> downsampling -> expiry, in a process where numpy cannot load:
    the daemon's resident memory does not carry numpy's 13 MB (bench/observer.py)."""
    code = f"""
import sys
sys.modules["numpy"] = None  # any import of numpy now raises ImportError
from jouled.columns import ColumnSink
from jouled.model import Reading
from jouled.store.sqlite import SqliteStore
sink = ColumnSink()
st = SqliteStore({str(tmp_path / "a.db")!r})
for k in range(30):
    sink.add("nvml", [Reading(k * 100_000_000 + d, f"gpu{{d}}", 100.0 + d, k * 10.0, {{"util_gpu_pct": 50.0}}) for d in range(2)])
    if k % 5 == 4:
        st.write_batches(sink.drain("h"))
print(st.maintain(now_ns=10**18, raw_retention_s=1, aggregate_retention_s=10**9, aggregate_period_s=1.0))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "'downsampled_samples': 60" in out.stdout and "'compacted_chunks': 10" in out.stdout
    d = SqliteStore(tmp_path / "a.db").read_series(SeriesKey("h", "nvml", "gpu1"))
    assert d.time_ns.tolist() == [1_000_000_000 * s + 450_000_001 for s in range(3)]
    assert d.power_w.tolist() == [101.0] * 3 and d.energy_j.tolist() == [90.0, 190.0, 290.0]


def test_extras_without_any_value_are_stored_as_null_and_read_back_as_nan(tmp_path: Path) -> None:
    st_ = SqliteStore(tmp_path / "a.db")
    st_.write_batches([ChunkBatch(KEY, array("q", [1, 2]), array("d", [1, 2]), array("d", [5, 6]),
                                  {"util": chunkcodec.nans(2), "temp": chunkcodec.nans(2)})])
    names, blob = st_._conn().execute("SELECT extras_names, extras FROM chunks").fetchone()
    assert names == '["temp", "util"]' and blob is None
    assert _same(st_.read_series(KEY, extras=True).extras["util"], [math.nan, math.nan])
