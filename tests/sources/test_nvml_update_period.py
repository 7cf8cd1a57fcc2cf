"""The driver's own update period of NVML's energy counter and power field: measured at open, declared, and used.

On an H200 (driver 580) both change only every 100 ms and a read returns the value of the last update
(bench/results/gpu_check.json), so a counter window is off by up to one update's energy at its ends: windows shorter
than COARSE_UPDATES updates are flagged `coarse`. The shim's `update_s` models that driver.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest

from jouled.config import NvmlConfig
from jouled.energy import SeriesArrays, window_energy_many
from jouled.series import COARSE_UPDATES, SeriesMeta
from jouled.sources.nvml import NvmlSource, update_periods
from jouled.store.sqlite import SqliteStore

from ..oldlogs import log_at_version
from .nvml_shim import FakeGpu, NvmlShim, make_shim

S = 1_000_000_000


def _wavy(t: float) -> float:
    return 300.0 + 100.0 * math.sin(7.0 * t)  # a new value at every update


def test_a_100_ms_driver_is_measured_as_100_ms() -> None:
    shim = NvmlShim([FakeGpu(power_w=_wavy, update_s=0.1)])
    shim.nvmlInit()
    h = shim.nvmlDeviceGetHandleByIndex(0)
    fields = [shim.NVML_FI_DEV_POWER_INSTANT]
    counter_s, power_s = update_periods(lambda: shim.nvmlDeviceGetTotalEnergyConsumption(h),
                                        lambda: shim.nvmlDeviceGetFieldValues(h, fields)[0].value.uiVal)
    assert counter_s == pytest.approx(0.1, abs=0.005)
    assert power_s == pytest.approx(0.1, abs=0.005)


def test_a_continuous_counter_is_told_at_once_and_a_frozen_one_is_unknown() -> None:
    shim = make_shim(1)  # update_s 0: a new counter value at every read
    shim.nvmlInit()
    h = shim.nvmlDeviceGetHandleByIndex(0)
    t0 = time.monotonic()
    assert update_periods(lambda: shim.nvmlDeviceGetTotalEnergyConsumption(h), None) == (0.0, None)
    assert time.monotonic() - t0 < 0.1  # no probe budget spent on it
    assert update_periods(lambda: 42.0, None, budget_s=0.05) == (None, None)  # never changes: not measured


def test_the_source_declares_the_periods_and_says_so() -> None:
    shim = NvmlShim([FakeGpu(power_w=_wavy, update_s=0.1), FakeGpu(power_w=_wavy), FakeGpu(counter=False)])
    info = NvmlSource(NvmlConfig(), nvml_module=shim).open()
    m0, m1, m2 = (info.series[d] for d in ("gpu0", "gpu1", "gpu2"))
    assert m0.counter_update_s == pytest.approx(0.1, abs=0.005) and m0.power_update_s == pytest.approx(0.1, abs=0.005)
    assert m1.counter_update_s == 0.0  # continuous: no coarse windows
    assert m2.counter_update_s is None and m2.counter_period_s is None  # no counter: nothing to measure
    (note,) = [n for n in info.notes if n.startswith("gpu0: the driver updates")]
    assert "every 100 ms" in note and "shorter than 2.0 s are flagged coarse" in note


def _windows(meta: SeriesMeta | None, lengths_s: list[float]) -> list[tuple[str, ...]]:
    t = np.arange(0, 60 * S, S // 10, dtype=np.int64)  # 10 Hz power, the counter at every sample
    p = np.full(t.size, 300.0)
    e = 300.0 * t / S
    series = SeriesArrays(t, p, e, "nvml", "gpu0", 0.1, counter_period_s=0.1, meta=meta)
    starts = np.full(len(lengths_s), 10 * S, dtype=np.int64)
    ends = starts + (np.asarray(lengths_s) * S).astype(np.int64)
    batch = window_energy_many(series, starts, ends)
    return [batch.flag_names(i) for i in range(len(lengths_s))]


def test_counter_windows_shorter_than_twenty_updates_are_coarse() -> None:
    meta = SeriesMeta("gpu", "gpu0", power_period_s=0.1, counter_period_s=0.1, counter_update_s=0.1)
    short, edge, long_ = _windows(meta, [0.5, COARSE_UPDATES * 0.1 - 0.01, COARSE_UPDATES * 0.1 + 0.01])
    assert "coarse" in short and "coarse" in edge and "coarse" not in long_
    # unknown (no declaration) or continuous: never coarse
    assert all("coarse" not in f for f in _windows(None, [0.5]))
    continuous = SeriesMeta("gpu", "gpu0", power_period_s=0.1, counter_period_s=0.1, counter_update_s=0.0)
    assert all("coarse" not in f for f in _windows(continuous, [0.5]))


def test_a_v4_log_reads_without_update_periods_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    conn = log_at_version(path, 4)
    conn.execute("INSERT INTO series(id, host, source, device) VALUES (1, 'h', 'nvml', 'gpu0')")
    conn.execute("INSERT INTO series_meta VALUES (1, 0, 'gpu', 'gpu0', 'measured', 0, 0.1, 0.5, 0.001, 0, 'source', 200, 700)")
    conn.commit()
    conn.close()
    (key,) = SqliteStore(path, readonly=True).series()  # a reader does not migrate
    assert key.meta is not None and key.meta.power_max_w == 700 and key.meta.counter_update_s is None
    st = SqliteStore(path)  # a writer migrates to v5; the old declaration keeps its values
    (key,) = st.series()
    assert key.meta is not None and key.meta.power_max_w == 700 and key.meta.counter_update_s is None
    st.close()


def test_gpus_are_measured_side_by_side() -> None:
    # the counter call costs ~3 ms on the H200 and ctypes lets go of the GIL meanwhile (the shim sleeps): the four
    # probes then time their changes as on the real driver
    shim = NvmlShim([FakeGpu(power_w=_wavy, update_s=0.1) for _ in range(4)], counter_cost_s=0.003)
    t0 = time.monotonic()
    info = NvmlSource(NvmlConfig(), nvml_module=shim).open()
    assert time.monotonic() - t0 < 0.9  # four GPUs of ≤ 0.45 s each, in parallel
    periods = [info.series[f"gpu{i}"].counter_update_s for i in range(4)]
    assert periods == [pytest.approx(0.1, abs=0.006)] * 4, periods


def test_integral_windows_count_the_distinct_power_values_the_device_gave() -> None:
    """100 Hz reads of a power value the driver updates every 100 ms: a 0.5 s window has 50 reads but 5 values."""
    t = np.arange(0, 60 * S, S // 100, dtype=np.int64)  # 100 Hz power, no counter
    p = np.full(t.size, 300.0)

    def flags(meta: SeriesMeta, length_s: float) -> tuple[str, ...]:
        series = SeriesArrays(t, p, np.full(t.size, np.nan), "nvml", "gpu0", 0.01, meta=meta)
        batch = window_energy_many(series, np.array([10 * S]), np.array([10 * S + int(length_s * S)]))
        assert batch.method_name(0) == "integral"
        return batch.flag_names(0)

    h200 = SeriesMeta("gpu", "gpu0", power_period_s=0.01, power_update_s=0.1)
    assert "sparse" in flags(h200, 0.5) and "sparse" not in flags(h200, 1.0)
    continuous = SeriesMeta("gpu", "gpu0", power_period_s=0.01, power_update_s=0.0)
    assert "sparse" not in flags(continuous, 0.5)  # 50 reads of 50 values


def test_the_sampler_says_when_it_reads_faster_than_the_device_updates(caplog: pytest.LogCaptureFixture) -> None:
    from jouled.columns import ColumnSink
    from jouled.sampler import SourceRunner

    caplog.set_level(logging.INFO, logger="jouled.sampler")
    shim = NvmlShim([FakeGpu(power_w=_wavy, update_s=0.1)], counter_cost_s=0.003)
    runner = SourceRunner(NvmlSource(NvmlConfig(), nvml_module=shim), 0.01, ColumnSink())
    assert runner._open()
    (line,) = [r.getMessage() for r in caplog.records if "repeat" in r.getMessage()]
    assert line == ("source nvml: read every 10 ms, but gpu0 updates its power only every 100 ms: about 9 of 10 reads "
                    "repeat a value (a rate of 10 Hz reads each value once)")
    caplog.clear()
    assert SourceRunner(NvmlSource(NvmlConfig(), nvml_module=shim), 0.1, ColumnSink())._open()
    assert not [r for r in caplog.records if "repeat" in r.getMessage()]  # 10 Hz: nothing to say
