"""Fixtures shared across test folders: the real NB201 tables from ../shared/data/nas (read there, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.scheduler.space import Benchmark, load_benchmark

REPO = Path(__file__).resolve().parents[1]
NAS_DATA = REPO.parent / "shared" / "data" / "nas"


@pytest.fixture(scope="session")
def bench() -> Benchmark:
    if not (NAS_DATA / "nats_tss_cifar10_avg.csv").is_file():
        pytest.skip(f"shared NAS data not found at {NAS_DATA}")
    return load_benchmark(NAS_DATA)
