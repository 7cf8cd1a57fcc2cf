"""RunHandle.energy(): a real daemon (sampler threads, SQLite log, embedded MQTT broker) measures a run and an epoch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jouled.config import NvmlConfig
from jouled.sources.estimate import EstimateSource, read_cpuinfo
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import SqliteStore, sqlite_url
from jouled.trainer.markers import MarkerClient

from ..brokers import free_port
from ..daemon.harness import make_config, start_daemon
from ..sources.nvml_shim import make_shim

GPU_W = 200.0
TDP_W = 100.0


def test_run_and_epoch_energy_from_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULED_STORE", raising=False)
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    cfg.sources.estimate.tdp_w = TDP_W
    cfg.sources.estimate.idle_fraction = 1.0  # constant model power: the expected energy is exact
    cfg.sources.estimate.only_without_sensors = False
    cpu_w = TDP_W * read_cpuinfo(Path("/proc/cpuinfo"))[1]
    sources = [
        NvmlSource(NvmlConfig(), nvml_module=make_shim(2, power_w=GPU_W)),
        EstimateSource(cfg.sources.estimate, rapl_root=str(tmp_path / "no-powercap")),
    ]
    bg = start_daemon(cfg, sources, rate_hz=50)
    client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
    try:
        time.sleep(0.3)  # samples before the run: its start edge has neighbours
        with client.run("api-run", gpus=["gpu0"]) as r:
            with pytest.raises(RuntimeError, match="has not ended"):
                r.energy(timeout=1)
            with r.epoch(0) as w:
                time.sleep(0.6)
            time.sleep(0.2)
        t0 = time.monotonic()
        m = r.energy(timeout=10)
        assert time.monotonic() - t0 < 5
        mw = w.energy(timeout=10)
        assert client.flush(10)
    finally:
        client.close(timeout_s=5)
        bg.stop()
    assert m.done and m.duration_s == pytest.approx(0.8, abs=0.15)
    # the run names gpu0: gpu1 (another job's) is not in it; the CPU estimate is host-wide and counted once
    assert set(m.energy_j_by_device) == {"nvml:gpu0", "estimate:cpu"}
    assert m.total_devices == ("nvml:gpu0", "estimate:cpu")
    assert m.energy_j_by_device["nvml:gpu0"] == pytest.approx(GPU_W * m.duration_s, rel=1e-2)
    assert m.energy_j == pytest.approx((GPU_W + cpu_w) * m.duration_s, rel=1e-2)
    assert "estimated" in m.flags and "edge" not in m.flags
    assert mw.duration_s == pytest.approx(0.6, abs=0.1)
    assert mw.energy_j == pytest.approx((GPU_W + cpu_w) * mw.duration_s, rel=1e-2)
    # the daemon recorded the markers too: the log's own query gives the same run energy
    import jouled.query

    row = jouled.query.open(sqlite_url(cfg.store.path), cfg).runs()[0]
    assert row.run == "api-run" and row.energy_j == pytest.approx(m.energy_j, rel=1e-6)
    assert len(SqliteStore(cfg.store.path, readonly=True).read_markers("api-run")) == 4


def test_timeout_says_why_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULED_STORE", raising=False)
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool", connect_timeout_s=0.5)
    try:
        with client.run("lonely") as r:  # no daemon, no broker: markers spool, nothing samples
            pass
        with pytest.raises(TimeoutError) as e:
            r.energy(timeout=0.5)
    finally:
        client.close(timeout_s=0.5)
    msg = str(e.value)
    assert "\n" not in msg and str(cfg.store.path) in msg and "is the daemon running" in msg and "0.5 s" in msg
