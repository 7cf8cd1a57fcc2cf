"""Series metadata in the store: schema v1 logs migrate, declarations round-trip and are versioned by time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jouled.config import Config
from jouled.query import load_series
from jouled.series import SeriesMeta
from jouled.store.sqlite import SCHEMA_VERSION, ChunkBatch, SeriesKey, SqliteStore

from ..oldlogs import log_at_version

S = 1_000_000_000
NVML = SeriesMeta("gpu", "gpu0", power_period_s=0.1, counter_period_s=0.5, counter_resolution_j=1e-3, counter_update_s=0.1,
                  power_update_s=0.1)


def _v1_log(path: Path) -> None:
    """A log as jouled wrote it before series metadata: the v1 migration alone, one series with 10 samples."""
    conn = log_at_version(path, 1)
    conn.execute("INSERT INTO series(id, host, source, device) VALUES (1, 'h', 'nvml', 'gpu0')")
    t = np.arange(10, dtype=np.int64) * S // 10
    conn.execute(
        "INSERT INTO chunks(series_id, res_s, t0_ns, t1_ns, n, time_ns, power_w, energy_j) VALUES (1, 0, ?, ?, 10, ?, ?, ?)",
        (0, int(t[-1]), t.astype("<i8").tobytes(), np.full(10, 300.0).astype("<f8").tobytes(),
         (300.0 * t / S).astype("<f8").tobytes()),
    )
    conn.commit()
    conn.close()


def test_a_v1_log_reads_with_defaults_then_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v1_log(path)
    ro = SqliteStore(path, readonly=True)  # a reader never migrates: no series_meta table, defaults apply
    (key,) = ro.series()
    assert key.meta is None
    s = load_series(ro, "h", 0, S)[("nvml", "gpu0")]
    assert s.meta is not None and s.meta.role == "gpu" and s.meta.origin == "default"
    ro.close()

    st = SqliteStore(path)  # the daemon opens it: v1 → v2 → v3 (watermarks) → v4 (power limits) → v5 (update periods)
    assert SCHEMA_VERSION == 5
    assert st._conn().execute("PRAGMA user_version").fetchone()[0] == 5
    (key,) = st.series()
    assert key == SeriesKey("h", "nvml", "gpu0") and key.meta is None
    assert len(st.read_series(key)) == 10
    assert st.declare_series({key: NVML}, since_ns=5 * S) == 1
    st.close()

    (key,) = SqliteStore(path, readonly=True).series()
    assert key.meta == NVML  # every field round-trips, floats and flags included


def test_declarations_are_versioned_and_equal_ones_add_nothing(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "log.db")
    key = SeriesKey("h", "nvml", "gpu0")
    t = np.arange(0, 200, dtype=np.int64) * S // 10
    st.write_batches([ChunkBatch(key, t, np.full(t.size, 300.0), 300.0 * t / S)], declare={key: NVML}, since_ns=0)
    assert st.declare_series({key: NVML}, since_ns=10 * S) == 0  # the daemon restarted with the same config
    faster = SeriesMeta("gpu", "gpu0", power_period_s=0.01, counter_period_s=0.5, counter_resolution_j=1e-3)
    assert st.declare_series({key: faster}, since_ns=10 * S) == 1  # restarted at 100 Hz
    assert [since for since, _m in st.series_meta_history(key)] == [0, 10 * S]
    assert st.series()[0].meta == faster
    assert st.series_meta_at(key, 5 * S) == NVML and st.series_meta_at(key, 12 * S) == faster
    # windows are judged against the periods in force when their samples were taken
    assert load_series(st, "h", 2 * S, 4 * S, Config())[("nvml", "gpu0")].period_s == pytest.approx(0.1)
    assert load_series(st, "h", 12 * S, 14 * S, Config())[("nvml", "gpu0")].period_s == pytest.approx(0.01)


def test_windows_after_a_redeclaration_are_judged_by_the_new_periods(tmp_path: Path) -> None:
    """Power at 10 Hz for 10 s, then the daemon restarted at 1 Hz: the 1 s spacing after it is no `gap`."""
    from jouled.model import Marker
    from jouled.query import compute_rows

    st = SqliteStore(tmp_path / "log.db")
    key = SeriesKey("h", "mymeter", "outlet")
    t_fast = np.arange(0, 100, dtype=np.int64) * S // 10
    t_slow = np.arange(10, 21, dtype=np.int64) * S
    for t, period in ((t_fast, 0.1), (t_slow, 1.0)):
        meta = SeriesMeta("other", power_period_s=period)
        st.write_batches([ChunkBatch(key, t, np.full(t.size, 100.0), np.full(t.size, np.nan))],
                         declare={key: meta}, since_ns=int(t[0]))
    st.write_markers([
        Marker(2 * S, "h", "r", "epoch", "start", 0, 0), Marker(8 * S, "h", "r", "epoch", "end", 1, 0),
        Marker(12 * S, "h", "r", "epoch", "start", 2, 1), Marker(18 * S, "h", "r", "epoch", "end", 3, 1),
    ])
    rows, _ = compute_rows(st, Config(), "r", ("epoch",))
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(r["energy_j"] == pytest.approx(600.0) for r in rows)
    assert "gap" not in rows[0]["flags"] and "gap" not in rows[1]["flags"]
    # the same slow samples judged by the 10 Hz declaration would be a gap: the declaration decides
    st.declare_series({key: SeriesMeta("other", power_period_s=0.1)}, since_ns=30 * S)
    assert "gap" not in compute_rows(st, Config(), "r", ("epoch",))[0][1]["flags"]
