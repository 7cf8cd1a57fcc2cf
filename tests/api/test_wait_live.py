"""A query of a run that just ended waits for the running daemon's flush that covers it (jouled.query.wait_live)."""

from __future__ import annotations

import time
from pathlib import Path

from jouled.clock import CLOCK
from jouled.model import Marker
from jouled.query import compute_rows, open_readonly, wait_live
from jouled.store.sqlite import SqliteStore, sqlite_url
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.reliability.helpers import wait_for


def _markers(t0_ns: int, t1_ns: int) -> list[Marker]:
    return [Marker(t0_ns, "testhost", "r", "run", "start", 0), Marker(t1_ns, "testhost", "r", "run", "end", 1)]


def test_a_run_that_just_ended_gets_the_samples_of_the_last_flush(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.daemon.flush_interval_s = 2.0  # the default: the end of the run is in memory for up to 2 s
    bg = start_daemon(cfg, [ScriptedSource(devices=1)], rate_hz=20.0, markers=False)
    url = sqlite_url(cfg.store.path)
    try:
        # a daemon that has sampled and flushed (a log nobody has vouched for yet is not waited on)
        wait_for(lambda: bg.daemon.store_health.flushes >= 1 and bg.daemon.store_health.written > 0,
                 what="the first flush", timeout_s=20)
        t0 = CLOCK.now_ns()
        time.sleep(2.5)
        t1 = CLOCK.now_ns()
        SqliteStore(Path(cfg.store.path)).write_markers(_markers(t0, t1))
        st = open_readonly(url, cfg)
        started = time.monotonic()
        rows, problems = compute_rows(st, cfg, "r", ("run",), wait_live_s=6.0)
        waited_s = time.monotonic() - started
    finally:
        bg.stop()
    assert problems == [] and waited_s < 5.0
    (row,) = rows
    # 100 W over the run, from the counter read at both edges: the last flush's samples are in
    assert row["energy_j"] is not None and abs(row["energy_j"] - 100.0 * (t1 - t0) / 1e9) < 1.0, (dict(row), waited_s)
    assert "edge" not in row["flags"] and row["samples"] >= 40


def test_no_wait_without_a_running_daemon_and_a_line_when_it_does_not_flush(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.daemon.flush_interval_s = 60.0  # a daemon that will not flush again within the wait
    bg = start_daemon(cfg, [ScriptedSource(devices=1)], rate_hz=20.0, markers=False)
    url = sqlite_url(cfg.store.path)
    try:
        wait_for(lambda: bg.daemon._store_thread is not None and bg.daemon.sampler.runners[0].health.delivered >= 2)
        t_end = CLOCK.now_ns()
        st = open_readonly(url, cfg)
        # the first flush has not happened: nothing of the host is being logged yet, nothing to wait for
        assert wait_live(st, {"testhost": t_end}, 0.3) == []
        # one flush (on the daemon's store thread) vouches for the series up to now; the next is a minute away
        assert bg.daemon._store_thread is not None
        bg.daemon._store_thread.submit(bg.daemon.flush_now).result(5.0)
        t_end = CLOCK.now_ns()
        started = time.monotonic()
        behind = wait_live(st, {"testhost": t_end}, 0.3)
        assert 0.3 <= time.monotonic() - started < 2.0
        assert len(behind) == 1 and "host testhost" in behind[0] and "fake dev0" in behind[0]
    finally:
        bg.stop()
    # the daemon stopped: nobody holds the log, a query never waits
    st = open_readonly(url, cfg)
    started = time.monotonic()
    assert wait_live(st, {"testhost": CLOCK.now_ns() + 10**12}, 5.0) == []
    assert time.monotonic() - started < 1.0


def test_an_old_run_of_another_host_is_not_waited_for(tmp_path: Path) -> None:
    """A new user read a calibrate run that ended minutes before, logged under the host tag `vm`, while a daemon
    with another `[daemon] host` held the log: every query waited its whole 6 s and warned that the log was not
    complete. Its series stopped being flushed when its run ended: they are not live now."""
    import numpy as np

    from jouled.store.sqlite import ChunkBatch, SeriesKey

    cfg = make_config(tmp_path)
    bg = start_daemon(cfg, [ScriptedSource(devices=1)], rate_hz=20.0, markers=False)  # holds the log
    try:
        wait_for(lambda: bg.daemon.store_health.flushes >= 1, what="the first flush", timeout_s=20)
        end_ns = CLOCK.now_ns() - 300 * 10**9  # five minutes ago, its last sample at the end, its watermark there
        t = end_ns - np.arange(100, -1, -1, dtype=np.int64) * 10**8
        key = SeriesKey("vm", "estimate", "cpu")
        SqliteStore(Path(cfg.store.path)).write_batches(
            [ChunkBatch(key, t, np.full(t.size, 50.0), np.full(t.size, np.nan))], complete={key: int(t[-1]) + 1})
        st = open_readonly(sqlite_url(cfg.store.path), cfg)
        started = time.monotonic()
        assert wait_live(st, {"vm": end_ns}, 3.0) == []
        assert time.monotonic() - started < 1.0
    finally:
        bg.stop()
