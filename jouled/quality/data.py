"""What the quality commands know about one run (pure: `load.load_run` fills it, `assess`, `compare`, `report` read it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jouled.energy import SeriesArrays
from jouled.series import SeriesMeta

from .compare import EpochWindow


@dataclass
class RunData:
    """What the quality commands need of one run (one host: the run's first)."""

    run: str
    host: str
    start_ns: int
    end_ns: int
    gpus: tuple[str, ...]
    windows: list[EpochWindow]
    rows: list[dict[str, Any]]  # `energy epochs` rows, scope epoch
    run_total: dict[str, Any] | None  # `energy runs` row of this run
    series: dict[tuple[str, str], SeriesArrays]
    avg_power: dict[tuple[str, str], SeriesArrays]
    metas: dict[tuple[str, str], SeriesMeta]
    total_keys: tuple[str, ...]
    limits_w: dict[str, tuple[float, float]] = field(default_factory=dict)
    limits_from: str = ""
    problems: list[str] = field(default_factory=list)


def run_series(data: RunData) -> dict[tuple[str, str], SeriesArrays]:
    """The run's series restricted to its GPUs (others' GPUs are not this run's) and its host devices."""
    if not data.gpus:
        return data.series
    want = set(data.gpus)
    return {k: s for k, s in data.series.items()
            if data.metas[k].role != "gpu" or data.metas[k].for_device(k[1]) in want}
