"""Fixtures for the simulator tests: the real NB201 tables and carbon traces from ../shared/data (never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.scheduler.space import Benchmark, load_benchmark

REPO = Path(__file__).resolve().parents[2]
NAS_DATA = REPO.parent / "shared" / "data" / "nas"


@pytest.fixture(scope="session")
def bench() -> Benchmark:
    if not (NAS_DATA / "nats_tss_cifar10_avg.csv").is_file():
        pytest.skip(f"shared NAS data not found at {NAS_DATA}")
    return load_benchmark(NAS_DATA)


CARBON = REPO.parent / "shared" / "data" / "carbon"


@pytest.fixture(scope="session")
def de_trace_path() -> Path:
    p = CARBON / "electricitymaps" / "DE_2022_hourly.csv"
    if not p.is_file():
        pytest.skip(f"shared carbon trace not found at {p}")
    return p
