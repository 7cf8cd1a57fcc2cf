"""The daemon (its own process, NVML shim at 100 Hz × 8 GPUs) SIGKILLed 5 times in a row: the log is intact every
time and at most 1 s of samples is lost per kill (bench/faults.py does 20)."""

from __future__ import annotations

from pathlib import Path

from tests.faults.procs import sigkill_cycles


def test_sigkill_five_times_under_load(tmp_path: Path) -> None:
    kills = sigkill_cycles(tmp_path, 5, devices=8, rate_hz=100.0)
    assert [k["integrity"] for k in kills] == ["ok"] * 5, kills
    assert max(k["lost_s"] for k in kills) <= 1.0, kills
    assert min(k["lost_s"] for k in kills) >= 0.0, kills
