"""jouled.measure(): in-process energy with the real source classes — the estimate source and the NVML shim at constant power."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jouled
from jouled.config import Config, NvmlConfig
from jouled.errors import UserError
from jouled.sources.estimate import read_cpuinfo
from jouled.sources.nvml import NvmlSource

from ..sources.nvml_shim import make_shim

TDP_W = 100.0


def _config(tmp_path: Path) -> Config:
    cfg = Config()
    # idle fraction 1: the model's power is TDP whatever the load, so the expected energy is exact
    cfg.sources.estimate.tdp_w = TDP_W
    cfg.sources.estimate.idle_fraction = 1.0
    cfg.sources.estimate.only_without_sensors = False
    cfg.sources.rapl.root = str(tmp_path / "no-powercap")
    return cfg


def _cpu_w() -> float:
    return TDP_W * read_cpuinfo(Path("/proc/cpuinfo"))[1]


def test_estimate_source_constant_power(tmp_path: Path) -> None:
    with jouled.measure(sources=["estimate"], rate_hz=50, config=_config(tmp_path)) as m:
        assert not m.done
        time.sleep(0.6)
    assert m.done
    assert m.duration_s == pytest.approx(0.6, abs=0.1)
    assert m.total_devices == ("estimate:cpu",)
    assert m.energy_j == pytest.approx(_cpu_w() * m.duration_s, rel=1e-3)
    assert m.energy_j_by_device == {"estimate:cpu": pytest.approx(m.energy_j)}
    assert m.method == "counter"
    assert "estimated" in m.flags and "edge" not in m.flags
    assert m.samples >= 20
    assert m.sources == ("estimate",)
    assert "J in" in str(m)


def test_nvml_shim_gpus_and_cpu_counted_once(tmp_path: Path) -> None:
    gpus = NvmlSource(NvmlConfig(), nvml_module=make_shim(2, power_w=250.0))
    with jouled.measure(sources=[gpus, "estimate"], rate_hz=50, config=_config(tmp_path)) as m:
        time.sleep(0.8)
    assert set(m.energy_j_by_device) == {"nvml:gpu0", "nvml:gpu1", "estimate:cpu"}
    for g in ("nvml:gpu0", "nvml:gpu1"):
        assert m.energy_j_by_device[g] == pytest.approx(250.0 * m.duration_s, rel=5e-3)
    assert m.energy_j == pytest.approx((2 * 250.0 + _cpu_w()) * m.duration_s, rel=5e-3)
    gpu0 = next(d for d in m.devices if d.device == "gpu0")
    assert gpu0.method == "counter" and gpu0.samples >= 1
    assert m.wall_j is None


def test_decorator_keeps_the_return_value_and_syncs_at_both_edges(tmp_path: Path) -> None:
    calls: list[float] = []

    @jouled.measure(sources=["estimate"], rate_hz=50, sync=lambda: calls.append(time.monotonic()), config=_config(tmp_path))
    def work(x: int) -> int:
        time.sleep(0.3)
        return x * 2

    assert vars(work)["last_measurement"] is None
    assert work(21) == 42
    m = work.last_measurement  # type: ignore[attr-defined]
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.3
    assert m.energy_j == pytest.approx(_cpu_w() * m.duration_s, rel=1e-3)
    assert work(1) == 2 and work.last_measurement is not m  # type: ignore[attr-defined]


def test_a_named_source_that_cannot_sample_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e, jouled.measure(sources=["rapl"], config=_config(tmp_path)):
        pass
    assert str(e.value).startswith("jouled.measure(): source 'rapl' cannot sample: ") and "\n" not in str(e.value)
    with pytest.raises(UserError, match="unknown source 'bogus'"):
        jouled.measure(sources=["bogus"], config=_config(tmp_path)).__enter__()
    with pytest.raises(UserError, match="rate_hz"):
        jouled.measure(rate_hz=0)


def test_default_sources_skip_what_this_machine_lacks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(tmp_path)
    cfg.sources.nvml.enabled = False  # a machine with a driver would sample it: keep the expectation exact
    cfg.sources.visa.resource = ""
    with jouled.measure(config=cfg, rate_hz=50) as m:
        time.sleep(0.2)
    assert "estimate" in m.sources and "rapl" in m.unavailable
    assert m.energy_j is not None and m.energy_j > 0
    # said in the result, not also a warning at every call (with no logging set up, Python's last-resort handler
    # printed each absent source to stderr)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "unavailable" in r.getMessage()]


def test_import_jouled_stays_light() -> None:
    code = (
        "import sys, jouled\n"
        "assert 'numpy' not in sys.modules and 'jouled.meter' not in sys.modules, sorted(sys.modules)\n"
        "assert callable(jouled.measure) and 'jouled.meter' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
