"""Shared helpers for the trainer tests: a marker recorder and small, fast data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch


class RecordingRun:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log
        self.current_epoch: int | None = None

    @contextlib.contextmanager
    def epoch(self, n: int) -> Iterator[None]:
        self.current_epoch = n
        self.log.append(("epoch", "start", n))
        yield
        self.log.append(("epoch", "end", n))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.log.append(("phase", "start", self.current_epoch, name))
        yield
        self.log.append(("phase", "end", self.current_epoch, name))


class RecordingMarkers:
    """Implements the trainer's Markers protocol and records every call, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.runs: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def run(self, run_id: str, *, arch: str = "", gpus: list[str] | None = None) -> Iterator[RecordingRun]:
        self.runs.append({"run_id": run_id, "arch": arch, "gpus": list(gpus or [])})
        self.log.append(("run", "start", run_id))
        yield RecordingRun(self.log)
        self.log.append(("run", "end", run_id))


@pytest.fixture(autouse=True)
def _few_threads() -> Iterator[None]:
    # The CI box has 2 cores shared with other suites: keep torch from oversubscribing them.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits() -> Any:
    from jouled.trainer.data import load_data

    return load_data("digits", batch_size=64, seed=0)
