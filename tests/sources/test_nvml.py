"""NvmlSource against the pynvml shim: readings, counter rate, fallbacks, MIG, lost GPUs, driver errors."""

from __future__ import annotations

import time

import pynvml
import pytest

from jouled.clock import CLOCK
from jouled.config import NvmlConfig
from jouled.errors import SourceUnavailable
from jouled.sources.common import PartialRead
from jouled.sources.nvml import NO_DRIVER, NvmlSource

from .nvml_shim import FakeGpu, NvmlShim, _Handle, make_shim, old_gpu


def _open(shim: NvmlShim, **cfg: object) -> NvmlSource:
    src = NvmlSource(NvmlConfig(**cfg), nvml_module=shim)  # type: ignore[arg-type]
    src.open()
    return src


def test_shim_errors_are_the_real_pynvml_classes() -> None:
    shim = make_shim(1)
    shim.nvmlInit()
    shim.lose_gpu(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        shim.nvmlDeviceGetPowerUsage(_handle(shim, 0))
    assert shim.NVMLError_NotSupported is pynvml.NVMLError_NotSupported
    assert shim.NVML_FI_DEV_POWER_INSTANT == 186


def _handle(shim: NvmlShim, i: int) -> _Handle:
    return _Handle(i)


def test_reads_every_gpu_with_instant_power_and_extras() -> None:
    shim = NvmlShim([FakeGpu(power_w=250.0, average_w=240.0), FakeGpu(power_w=lambda t: 100.0 + 0 * t)])
    src = _open(shim)
    before = CLOCK.now_ns()
    readings = src.read()
    power = [r for r in readings if r.power_w is not None]
    assert [r.device for r in power] == ["gpu0", "gpu1"]
    assert power[0].power_w == pytest.approx(250.0)
    assert power[0].extras["power_avg_w"] == pytest.approx(240.0)
    assert power[1].power_w == pytest.approx(100.0)
    for key in ("util_gpu_pct", "sm_clock_mhz", "temp_c"):
        assert key in power[0].extras
    # the field's driver timestamp (µs) is used: within a second of our clock
    assert abs(power[0].time_ns - before) < 1_000_000_000
    src.close()


def test_energy_counter_read_at_counter_rate_not_every_read() -> None:
    shim = make_shim(2, power_w=200.0)
    src = _open(shim, rate_hz=1000, counter_rate_hz=2)
    first = src.read()
    assert sum(1 for r in first if r.energy_j is not None) == 2  # first read takes the counter
    calls = shim.counter_calls
    for _ in range(20):
        readings = src.read()
        assert all(r.energy_j is None for r in readings)
    assert shim.counter_calls == calls
    time.sleep(0.55)
    later = src.read()
    energy = [r for r in later if r.energy_j is not None]
    assert [r.device for r in energy] == ["gpu0", "gpu1"]
    assert all(r.power_w is None for r in energy)
    src.close()


def test_counter_is_mj_to_j_and_matches_the_power_curve() -> None:
    t = [0.0]
    shim = NvmlShim([FakeGpu(power_w=lambda s: 100.0 if s < 1.0 else 300.0)], clock=lambda: t[0])
    src = _open(shim)
    e0 = src.read_counters()[0].energy_j
    t[0] = 2.0
    e1 = src.read_counters()[0].energy_j
    assert e0 is not None and e1 is not None
    assert e1 - e0 == pytest.approx(400.0, abs=0.01)  # 100 W × 1 s + 300 W × 1 s
    src.close()


def test_old_gpu_falls_back_to_power_usage_and_has_no_counter() -> None:
    shim = NvmlShim([FakeGpu(power_w=300.0), old_gpu(power_w=150.0)])
    src = NvmlSource(NvmlConfig(), nvml_module=shim)
    info = src.open()
    assert info.available and info.counter
    assert any(n.startswith("gpu1: power_w from nvmlDeviceGetPowerUsage") for n in info.notes)
    assert any(n.startswith("gpu1: no energy counter") for n in info.notes)
    assert not any(n.startswith("gpu0:") for n in info.notes)
    readings = src.read()
    gpu1 = [r for r in readings if r.device == "gpu1"]
    assert len(gpu1) == 1 and gpu1[0].power_w == pytest.approx(150.0) and gpu1[0].energy_j is None
    assert [r.device for r in src.read_counters()] == ["gpu0"]
    src.close()


def test_only_old_gpus_means_no_counter() -> None:
    info = NvmlSource(NvmlConfig(), nvml_module=NvmlShim([old_gpu()])).open()
    assert info.available and not info.counter


def test_mig_enabled_is_noted() -> None:
    shim = NvmlShim([FakeGpu(mig=True), FakeGpu(mig=False), FakeGpu(mig=None)])
    info = NvmlSource(NvmlConfig(), nvml_module=shim).open()
    assert "gpu0: MIG enabled — power/energy are for the whole physical GPU" in info.notes
    assert not any(n.startswith(("gpu1", "gpu2")) for n in info.notes)


def test_gpu_filter_and_device_names_follow_nvml_index() -> None:
    src = NvmlSource(NvmlConfig(gpus=[1, 3]), nvml_module=make_shim(4))
    info = src.open()
    assert info.devices == ["gpu1", "gpu3"]
    assert {r.device for r in src.read()} == {"gpu1", "gpu3"}


def test_gpu_filter_naming_a_missing_gpu_is_one_line_with_fix() -> None:
    with pytest.raises(SourceUnavailable) as e:
        NvmlSource(NvmlConfig(gpus=[0, 5]), nvml_module=make_shim(2)).open()
    msg = str(e.value)
    assert "GPU 5 does not exist" in msg and "0..1" in msg and "—" in msg and "\n" not in msg


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_driver_is_unavailable_with_the_fix(code: int) -> None:
    with pytest.raises(SourceUnavailable) as e:
        NvmlSource(NvmlConfig(), nvml_module=NvmlShim([FakeGpu()], init_error=code)).open()
    assert str(e.value) == NO_DRIVER


def test_other_init_errors_name_the_nvml_error() -> None:
    with pytest.raises(SourceUnavailable) as e:
        NvmlSource(NvmlConfig(), nvml_module=NvmlShim([], init_error=pynvml.NVML_ERROR_NO_PERMISSION)).open()
    assert "/dev/nvidia" in str(e.value)
    with pytest.raises(SourceUnavailable) as e:
        NvmlSource(NvmlConfig(), nvml_module=NvmlShim([], init_error=pynvml.NVML_ERROR_UNKNOWN)).open()
    assert "NVMLError_Unknown" in str(e.value) and "nvidia-smi" in str(e.value)


def test_no_gpus_is_unavailable_and_shuts_nvml_down() -> None:
    shim = NvmlShim([])
    with pytest.raises(SourceUnavailable, match="NVML sees no GPU"):
        NvmlSource(NvmlConfig(), nvml_module=shim).open()
    assert shim.initialised == 0


def test_lost_gpu_raises_once_then_other_gpus_keep_reading() -> None:
    shim = make_shim(3, power_w=200.0)
    src = _open(shim)
    assert len([r for r in src.read() if r.power_w is not None]) == 3
    shim.lose_gpu(1)
    with pytest.raises(PartialRead) as e:
        src.read()
    err = e.value
    assert set(err.errors) == {"gpu1"}
    assert "NVMLError_GpuIsLost" in err.errors["gpu1"] and "dmesg" in err.errors["gpu1"]
    assert {r.device for r in err.readings} == {"gpu0", "gpu2"}  # healthy GPUs still delivered
    assert "gpu1" in src.device_errors
    # next read: gpu1 is in backoff, the others read without raising
    readings = src.read()
    assert {r.device for r in readings} == {"gpu0", "gpu2"}
    # once the backoff expires and the GPU is back, it rejoins with a fresh handle
    shim.recover_gpu(1)
    src._gpus[1].backoff.retry_at_s = 0.0
    assert {r.device for r in src.read()} == {"gpu0", "gpu1", "gpu2"}
    assert "gpu1" not in src.device_errors
    src.close()


def test_gpu_lost_in_other_calls_is_caught_too() -> None:
    shim = NvmlShim([old_gpu(), FakeGpu()])  # old GPU: power comes from GetPowerUsage, which raises
    src = _open(shim)
    shim.lose_gpu(0)
    with pytest.raises(PartialRead) as e:
        src.read()
    assert list(e.value.errors) == ["gpu0"]


def test_read_counters_reports_lost_gpu_and_returns_the_rest() -> None:
    shim = make_shim(2)
    src = _open(shim)
    shim.lose_gpu(0)
    with pytest.raises(PartialRead) as e:
        src.read_counters()
    assert [r.device for r in e.value.readings] == ["gpu1"]


def test_gpu_lost_at_open_is_skipped_with_a_note() -> None:
    shim = make_shim(2)
    shim.lose_gpu(0)
    info = NvmlSource(NvmlConfig(), nvml_module=shim).open()
    assert info.devices == ["gpu1"]
    assert any(n.startswith("gpu0: skipped") for n in info.notes)


def test_power_curve_is_followed_over_time() -> None:
    t = [0.0]
    shim = NvmlShim([FakeGpu(power_w=lambda s: 100.0 + 50.0 * s)], clock=lambda: t[0])
    src = _open(shim)
    seen = []
    for step in range(4):
        t[0] = float(step)
        seen.append(next(r.power_w for r in src.read() if r.power_w is not None))
    assert seen == pytest.approx([100.0, 150.0, 200.0, 250.0])
