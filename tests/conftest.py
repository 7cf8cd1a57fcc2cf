"""Fixtures shared across test folders: the real NB201 tables from ../shared/data/nas (read there, never copied);
a private runtime dir for the session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from jouled.scheduler.space import Benchmark, load_benchmark

REPO = Path(__file__).resolve().parents[1]
NAS_DATA = REPO.parent / "shared" / "data" / "nas"
# for tests (or parametrized cases) that read the shared NB201 tables themselves: skipped, like the `bench`
# fixture's users, where a checkout has no ../shared beside it
needs_nas_data = pytest.mark.skipif(
    not (NAS_DATA / "nats_tss_cifar10_avg.csv").is_file(), reason=f"shared NAS data not found at {NAS_DATA}"
)

# Daemons write their status into the runtime dir ($XDG_RUNTIME_DIR/jouled, else /run/jouled as root): give the
# test session its own, so tests (and the child processes they start) leave nothing in the machine's /run.
_RUNTIME = tempfile.TemporaryDirectory(prefix="jouled-test-run-")
os.environ["XDG_RUNTIME_DIR"] = _RUNTIME.name


@pytest.fixture(scope="session")
def bench() -> Benchmark:
    if not (NAS_DATA / "nats_tss_cifar10_avg.csv").is_file():
        pytest.skip(f"shared NAS data not found at {NAS_DATA}")
    return load_benchmark(NAS_DATA)
