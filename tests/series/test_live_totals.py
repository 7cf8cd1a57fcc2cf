"""Wrong number 2 of issue 10: the live search's energy of one evaluation counts each device once.

Before, `scheduler/live.py` summed its own rows: NVML and nvidia-smi for the same GPU both, and on a CPU slot
package + core + dram + wall. Now it takes the query core's run total, chosen by the series' stored roles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jouled.config import Config
from jouled.model import Marker
from jouled.scheduler.live import evaluation_energy
from jouled.series import SeriesMeta
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore

S = 1_000_000_000
T0 = 1_700_000_000 * S
WATTS = {  # host → (source, device) → W; each field as its source declares it
    "gpuhost": {("nvml", "gpu0"): 200.0, ("smi", "gpu0"): 190.0},
    "cpuhost": {("rapl", "package-0"): 50.0, ("rapl", "dram-0"): 10.0, ("rapl", "core-0"): 30.0, ("visa", "wall"): 500.0},
}
METAS = {
    ("nvml", "gpu0"): SeriesMeta("gpu", "gpu0", power_period_s=0.1, counter_period_s=0.5, counter_resolution_j=1e-3),
    ("smi", "gpu0"): SeriesMeta("gpu", "gpu0", power_period_s=0.1, comparison=True),
    ("rapl", "package-0"): SeriesMeta("package", "package-0", power_period_s=0.1, counter_period_s=0.1),
    ("rapl", "dram-0"): SeriesMeta("dram", "dram-0", power_period_s=0.1, counter_period_s=0.1),
    ("rapl", "core-0"): SeriesMeta("core", "core-0", power_period_s=0.1, counter_period_s=0.1),
    ("visa", "wall"): SeriesMeta("wall", "wall", power_period_s=0.1),
}


def _log(path: Path) -> SqliteStore:
    st = SqliteStore(path)
    t = T0 + np.arange(0, 121, dtype=np.int64) * S // 10  # 0 … 12 s at 10 Hz
    secs = (t - T0) / S
    batches, declare = [], {}
    for host, series in WATTS.items():
        for (src, dev), w in series.items():
            key = SeriesKey(host, src, dev)
            counter = METAS[(src, dev)].counter_period_s is not None
            energy = w * secs if counter else np.full(t.size, np.nan)
            batches.append(ChunkBatch(key, t, np.full(t.size, w), energy))
            declare[key] = METAS[(src, dev)]
    st.write_batches(batches, declare=declare, since_ns=T0)
    markers = []
    for host, run, gpus in (("gpuhost", "eval-gpu", ("gpu0",)), ("cpuhost", "eval-cpu", ())):
        seq = 0
        for ep, (a, b) in enumerate(((1, 4), (5, 10))):
            for event, t_s in (("start", a), ("end", b)):
                markers.append(Marker(T0 + t_s * S, host, run, "epoch", event, seq, ep, None, None, gpus))
                seq += 1
    st.write_markers(markers)
    return st


def test_gpu_slot_counts_the_gpu_once_and_cpu_slot_adds_package_and_dram_only(tmp_path: Path) -> None:
    st = _log(tmp_path / "log.db")
    dur_s = 3.0 + 5.0  # the two epochs of each run

    gpu = evaluation_energy(st, Config(), "eval-gpu")
    assert gpu is not None
    assert gpu.energy_j == pytest.approx(200.0 * dur_s)  # NVML's figure; nvidia-smi's 190 W is the same GPU
    assert set(gpu.energy_by_device_j) == {"nvml:gpu0"}
    assert gpu.wall_j is None

    cpu = evaluation_energy(st, Config(), "eval-cpu")
    assert cpu is not None
    assert cpu.energy_j == pytest.approx((50.0 + 10.0) * dur_s)  # package + dram; core lies inside the package
    assert set(cpu.energy_by_device_j) == {"rapl:package-0", "rapl:dram-0"}
    assert cpu.wall_j == pytest.approx(500.0 * dur_s)  # the wall meter: beside the total, never in it
    assert "host-wide" in cpu.flags


def test_undeclared_series_fall_back_to_their_source_names(tmp_path: Path) -> None:
    """The same log without declarations (imported samples, an older log): the defaults give the same totals."""
    st = SqliteStore(tmp_path / "log.db")
    src = _log(tmp_path / "declared.db")
    for key in src.series():
        d = src.read_series(key)
        st.write_batches([ChunkBatch(SeriesKey(key.host, key.source, key.device), d.time_ns, d.power_w, d.energy_j)])
    st.write_markers(src.read_markers())
    assert all(k.meta is None for k in st.series())
    gpu = evaluation_energy(st, Config(), "eval-gpu")
    cpu = evaluation_energy(st, Config(), "eval-cpu")
    assert gpu is not None and gpu.energy_j == pytest.approx(200.0 * 8.0)
    assert cpu is not None and cpu.energy_j == pytest.approx(60.0 * 8.0) and cpu.wall_j == pytest.approx(4000.0)
