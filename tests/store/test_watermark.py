"""The watermark, "complete until t" per series: never past a reading that is not stored (real store, real daemon flush)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jouled.clock import CLOCK
from jouled.daemon.service import Daemon
from jouled.model import Reading
from jouled.query import lagging_series, wait_complete
from jouled.store.sqlite import SCHEMA_VERSION, ChunkBatch, SeriesKey, SqliteStore
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config
from tests.reliability.helpers import PageCappedStore

KEY = SeriesKey("h", "fake", "dev0")


def _batch(key: SeriesKey, times: list[int]) -> ChunkBatch:
    t = np.array(times, np.int64)
    return ChunkBatch(key, t, np.full(t.size, 100.0), np.full(t.size, np.nan))


def test_watermark_is_written_with_the_samples_and_never_moves_back(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "log.db")
    assert SCHEMA_VERSION >= 3 and st.watermarks() == {}  # v3 brought the watermark
    st.write_batches([_batch(KEY, [10, 20])], complete={KEY: 25})
    assert st.watermarks() == {KEY: 25}
    st.write_batches([_batch(KEY, [30])], complete={KEY: 15})  # an older bound keeps what was promised
    assert st.watermarks() == {KEY: 25}
    st.advance_watermarks({KEY: 40})
    assert st.watermarks() == {KEY: 40}
    # a write that fails rolls its watermark back with its samples
    with pytest.raises(sqlite3.Error):
        st.write_batches([_batch(KEY, [50]), ChunkBatch(SeriesKey("h", "x", None), np.array([1]), np.array([1.0]),  # type: ignore[arg-type]
                                                          np.array([1.0]))], complete={KEY: 60})
    assert st.watermarks() == {KEY: 40}
    assert st.read_series(KEY).time_ns.tolist() == [10, 20, 30]


def test_wait_complete_returns_once_every_live_series_passed_and_names_the_lagging_ones(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "log.db")
    other = SeriesKey("h", "fake", "dev1")
    assert lagging_series(st, 100) is None  # nobody vouches for anything yet
    with pytest.raises(TimeoutError, match="no series is being logged"):
        wait_complete(st, 100, 0.05)
    st.advance_watermarks({KEY: 3_000_000_000, other: 50})
    assert lagging_series(st, 100, neighbours=False) == [other]
    with pytest.raises(TimeoutError, match="not complete for fake dev1"):
        wait_complete(st, 100, 0.05, neighbours=False)
    threading.Timer(0.1, lambda: SqliteStore(tmp_path / "log.db").advance_watermarks({other: 101})).start()
    wait_complete(st, 100, 5.0, neighbours=False)
    # a series whose watermark stopped long before (a source of an earlier daemon) is not waited on
    assert lagging_series(st, 200_000_000_000, neighbours=False) is None
    # neighbours: the reading after `until` too (two nominal periods; 1 s when nobody declared one)
    assert lagging_series(st, 100) == [other]
    assert lagging_series(st, 100, host="elsewhere") is None


class SlowStampedSource(ScriptedSource):
    """Reads take 15 ms and are stamped when the read started (a meter averaging over its read): a flush that
    lands mid-read must not promise past that stamp."""

    def __init__(self) -> None:
        super().__init__(devices=64)  # 64 chunks a flush: a page cap then fails the write for sure
        self.returned: list[int] = []
        self._lock = threading.Lock()

    def read(self) -> list[Reading]:
        t = CLOCK.now_ns()
        time.sleep(0.015)
        with self._lock:
            self.returned.append(t)
        return [Reading(t, d, self.POWER_W, None) for d in self.devices]

    def returned_times(self) -> list[int]:
        with self._lock:
            return list(self.returned)


def _check_never_past_unstored(store: SqliteStore, src: SlowStampedSource) -> int:
    marks = store.watermarks()
    returned = src.returned_times()  # after the watermark was read: everything returned so far
    for dev in src.devices:
        key = SeriesKey("testhost", src.name, dev)
        wm = marks[key]
        stored = set(store.read_series(key).time_ns.tolist())
        missing = [t for t in returned if t < wm and t not in stored]
        assert not missing, f"watermark {wm} passed {len(missing)} readings that are not stored ({dev})"
    return min(marks.values())


def test_daemon_flush_watermark_never_passes_an_unstored_reading_and_waits_out_a_failing_write(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = PageCappedStore(tmp_path / "log.db")
    src = SlowStampedSource()
    d = Daemon(config=cfg, sources=[(src, 0.005)], store=store, status_path=tmp_path / "status.json")
    d.sampler.start()
    try:
        marks: list[int] = []
        for _ in range(15):
            time.sleep(0.011)  # not a multiple of the read: flushes land at every phase of a read
            asyncio.run(d.flush())
            marks.append(_check_never_past_unstored(store, src))
        assert marks == sorted(marks) and marks[-1] > marks[0]
        # the store fails: the samples stay in memory and the watermark stays where it was
        store.max_pages = store._conn().execute("PRAGMA page_count").fetchone()[0]
        before = store.watermarks()
        for _ in range(3):
            time.sleep(0.05)
            assert asyncio.run(d.flush()) == 0
        assert d.store_health.write_errors > 0 and d.store_health.pending > 0
        assert store.watermarks() == before
        store.max_pages = None  # space again: the kept samples and a newer watermark commit together
        time.sleep(0.02)
        assert asyncio.run(d.flush()) > 0
        after = _check_never_past_unstored(store, src)
        assert after > max(before.values())
        wait_complete(store, after - 1, 1.0, host="testhost", neighbours=False)
    finally:
        d.sampler.stop()
