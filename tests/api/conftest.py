"""A store with known samples and markers for the Python API tests: constant powers, so every energy is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jouled.model import CarbonPoint, Marker, Sample
from jouled.store.sqlite import SqliteStore, sqlite_url

T0_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
GPU_W = 300.0
PKG_W = 50.0
WALL_W = 420.0
HOST = "apihost"


def fill_store(path: Path, *, carbon: bool = True) -> str:
    """Two runs on one host: run 'r1' with 3 epochs of 2 s (train 1.5 s, eval 0.5 s), run 'r2' of 1 s.

    gpu0 (nvml, 10 Hz power and a 2 Hz counter) at 300 W, gpu1 at 300 W too (not in r1's gpus),
    rapl package-0 at 50 W (counter), visa wall at 420 W; a constant 100 g/kWh intensity.
    """
    st = SqliteStore(path)
    samples: list[Sample] = []
    for k in range(0, 12 * 10 + 1):  # 12 s at 10 Hz, starting 1 s before r1
        t = T0_NS + k * 100_000_000
        s = k * 0.1
        for dev in ("gpu0", "gpu1"):
            samples.append(Sample(t, HOST, "nvml", dev, power_w=GPU_W))
            if k % 5 == 0:
                samples.append(Sample(t + 1, HOST, "nvml", dev, energy_j=1000.0 + GPU_W * s))
        samples.append(Sample(t, HOST, "rapl", "package-0", power_w=PKG_W, energy_j=PKG_W * s))
        samples.append(Sample(t, HOST, "visa", "wall", power_w=WALL_W))
    st.write_samples(samples)
    markers: list[Marker] = []
    seq = 0

    def mark(run: str, t_s: float, scope: str, event: str, epoch: int | None = None, phase: str | None = None) -> None:
        nonlocal seq
        markers.append(Marker(T0_NS + round(t_s * 1e9), HOST, run, scope, event, seq, epoch, phase,
                              arch="cell", gpus=("gpu0",)))
        seq += 1

    mark("r1", 1.0, "run", "start")
    for n in range(3):
        a = 1.0 + 2 * n
        mark("r1", a, "epoch", "start", n)
        mark("r1", a, "phase", "start", n, "train")
        mark("r1", a + 1.5, "phase", "end", n, "train")
        mark("r1", a + 1.5, "phase", "start", n, "eval")
        mark("r1", a + 2.0, "phase", "end", n, "eval")
        mark("r1", a + 2.0, "epoch", "end", n)
    mark("r1", 7.0, "run", "end")
    seq = 0
    mark("r2", 9.0, "run", "start")
    mark("r2", 10.0, "run", "end")
    st.write_markers(markers)
    if carbon:
        st.write_carbon([CarbonPoint(T0_NS - 10**12, "DE", "trace", 100.0)])
    st.close()
    return sqlite_url(path)


@pytest.fixture
def api_store(tmp_path: Path) -> str:
    return fill_store(tmp_path / "api.db")


def approx_equal(a: float, b: float, rel: float = 1e-6) -> bool:
    return bool(np.isclose(a, b, rtol=rel))
