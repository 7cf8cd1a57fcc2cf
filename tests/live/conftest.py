"""Fixtures for the live-search tests: a carbon trace with a clean, a dirty and a middle hour after a day of history."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.scheduler.space import default_data_dir

# one day of history spanning 100..500 g/kWh, then the searched hours: clean, dirty, middle
HISTORY_G_PER_KWH = [100.0 + 400.0 * (i % 2) for i in range(24)]
SEARCH_G_PER_KWH = [100.0, 500.0, 300.0]
T0_S = 1_650_000_000 - 1_650_000_000 % 3600


@pytest.fixture()
def trace_file(tmp_path: Path) -> Path:
    p = tmp_path / "trace.csv"
    vals = HISTORY_G_PER_KWH + SEARCH_G_PER_KWH + [300.0]
    p.write_text("time_s,intensity_g_per_kwh,zone\n" + "".join(
        f"{T0_S + 3600 * i},{v},DE\n" for i, v in enumerate(vals)), encoding="utf-8")
    return p


@pytest.fixture()
def nas_data() -> Path:
    d = default_data_dir()
    if not (d / "nats_tss_cifar10_avg.csv").is_file():
        pytest.skip(f"NAS-Bench-201 tables not at {d}")
    return d
