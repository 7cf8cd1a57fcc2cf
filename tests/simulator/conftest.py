"""Fixtures for the simulator tests: the real carbon traces from ../shared/data (never copied); `bench` is in tests/conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO

CARBON = REPO.parent / "shared" / "data" / "carbon"


@pytest.fixture(scope="session")
def de_trace_path() -> Path:
    p = CARBON / "electricitymaps" / "DE_2022_hourly.csv"
    if not p.is_file():
        pytest.skip(f"shared carbon trace not found at {p}")
    return p
