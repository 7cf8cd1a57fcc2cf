"""jouled.quality.loads: each calibration load is a real process that fills its core at the lowest CPU priority (so
the measuring daemon is never starved by it), and stop() ends it."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from jouled.quality.loads import LOAD_NICENESS, start_load


@pytest.mark.parametrize("kind", ["cpu-prime", "cpu-fma"])
def test_a_load_runs_at_the_lowest_priority_busy_until_stopped(kind: str) -> None:
    load = start_load(kind, 1, use_stress_ng=False)
    try:
        assert load.tool == "jouled" and len(load.procs) == 1
        proc = psutil.Process(load.procs[0].pid)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == LOAD_NICENESS
        # the process is busy: it keeps burning CPU time (how fast depends on what else runs: at nice 19 it gets
        # only the cycles nobody else wants, so on a loaded machine this can take a while)
        cpu0 = sum(proc.cpu_times()[:2])
        deadline = time.monotonic() + 60
        while sum(proc.cpu_times()[:2]) - cpu0 < 0.3:
            assert load.alive() and time.monotonic() < deadline, "the load burnt < 0.3 s of CPU in 60 s"
            time.sleep(0.05)
    finally:
        load.stop()
    assert not load.alive()


def test_idle_starts_nothing_and_unknown_load_exits() -> None:
    idle = start_load("idle", 4)
    assert idle.procs == [] and not idle.alive()
    bad = start_load("no-such-load", 1, use_stress_ng=False)
    try:
        bad.procs[0].wait(30)
        assert bad.procs[0].returncode != 0
        assert b"unknown load 'no-such-load'" in (bad.procs[0].stderr.read() if bad.procs[0].stderr else b"")
    finally:
        bad.stop()
