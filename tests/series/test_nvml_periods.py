"""Wrong number 1 of issue 10: an NVML counter read at 2 Hz beside power at 10 Hz, through the real daemon loop.

Before series metadata, windows were judged against the power period (0.1 s): the counter's ~0.6 s spacing was a
`gap` and its 6–7 reads in a 3 s epoch were `sparse`, although the counter gives the exact energy.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import jouled.query
from jouled.config import NvmlConfig
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import SqliteStore, sqlite_url
from jouled.trainer.markers import MarkerClient

from ..brokers import free_port
from ..daemon.harness import make_config, start_daemon
from ..sources.nvml_shim import make_shim

GPU_W = 300.0


def test_counter_at_2_hz_beside_power_at_10_hz_is_exact_without_gap_or_sparse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOULED_STORE", raising=False)
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    cfg.sources.nvml.rate_hz = 10.0
    cfg.sources.nvml.counter_rate_hz = 2.0
    src = NvmlSource(NvmlConfig(rate_hz=10.0, counter_rate_hz=2.0), nvml_module=make_shim(1, power_w=GPU_W))
    bg = start_daemon(cfg, [src])  # the default periods: 10 Hz ticks, the counter every 0.5 s
    client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
    try:
        time.sleep(0.8)  # counter reads before the epoch: its start edge has neighbours
        with client.run("nvml-2hz", gpus=["gpu0"]) as r:
            with r.epoch(0):
                time.sleep(3.0)
        r.energy(timeout=10)  # waits until the log holds samples past the run's end
        assert client.flush(10)
    finally:
        client.close(timeout_s=5)
        bg.stop()

    (row,) = jouled.query.open(sqlite_url(cfg.store.path), cfg).epochs("nvml-2hz")
    assert row.source == "nvml" and row.device == "gpu0" and row.role == "gpu"
    assert row.duration_s == pytest.approx(3.0, abs=0.2)
    assert row.method == "counter"
    assert row.energy_j == pytest.approx(GPU_W * row.duration_s, rel=0.005)
    assert row.energy_j == pytest.approx(900.0, rel=0.07)  # the epoch is 3 s give or take the sleep's accuracy
    assert "gap" not in row.flags and "sparse" not in row.flags, (row.flags, row.samples, row.max_gap_s)
    # the periods the energy math judged against were declared by the source and stored with the data
    (key,) = [k for k in SqliteStore(cfg.store.path, readonly=True).series() if k.source == "nvml"]
    assert key.meta is not None and key.meta.origin == "source"
    assert key.meta.power_period_s == pytest.approx(0.1) and key.meta.counter_period_s == pytest.approx(0.5)
    assert key.meta.counter_resolution_j == pytest.approx(1e-3)
