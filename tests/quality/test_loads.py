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
        proc.cpu_percent(None)
        time.sleep(1.0)
        # the process is busy: most of a core even on a loaded machine, where a niced process gets what is idle
        assert load.alive() and proc.cpu_percent(None) > 20.0
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
