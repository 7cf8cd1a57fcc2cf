"""The read side every store offers (SQLite log, InfluxDB v1/v2): what the query core, `energy` and `export` call.

A structural `Protocol`: `SqliteStore` and the InfluxDB stores satisfy it without inheriting from it, so the query
core depends on what a store can answer, not on where the samples live.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # numpy-heavy types, for annotations only: this module stays light
    from jouled.model import CarbonPoint, Marker
    from jouled.series import SeriesMeta
    from jouled.store.sqlite import SeriesData, SeriesKey


@runtime_checkable
class ReadStore(Protocol):
    """A read-only store. `path` names it in messages (a file path, or a URL with its password redacted)."""

    @property
    def path(self) -> Path | str: ...

    def series(self) -> list[SeriesKey]:
        """Every series, ordered by (source, device, host), each with its latest metadata (None: never declared)."""
        ...

    def series_meta_history(self, key: SeriesKey) -> list[tuple[int, SeriesMeta]]:
        """(since_ns, meta) of each declaration of one series, oldest first (empty: never declared)."""
        ...

    def series_meta_at(self, key: SeriesKey, t_ns: int) -> SeriesMeta | None:
        """The declaration in force at t_ns (the latest at or before it, else the first; None: never declared)."""
        ...

    def read_series(
        self, key: SeriesKey, start_ns: int | None = None, end_ns: int | None = None, *, extras: bool = False
    ) -> SeriesData:
        """The samples of one series with start_ns <= time <= end_ns, sorted by time (NaN: field absent)."""
        ...

    def time_range(self) -> tuple[int, int] | None:
        """(first, last) sample time over all series; None when there is no sample."""
        ...

    def read_markers(self, run: str | None = None, host: str | None = None, *, attrs: bool = True) -> list[Marker]:
        """Markers of `run` (None: all) on `host` (None: any), ordered by run, then seq; `attrs=False`: each with
        empty attrs (what pairing and energy read; the attrs of 20,000 markers are 20,000 JSON parses)."""
        ...

    def runs(self) -> list[str]:
        """The run ids that have markers, sorted."""
        ...

    def read_carbon(
        self, zone: str | None = None, start_ns: int | None = None, end_ns: int | None = None, *, forecast: bool = False
    ) -> list[CarbonPoint]:
        """Carbon intensity points (of `zone`, None: any) in [start_ns, end_ns], ordered by time."""
        ...

    def watermarks(self) -> dict[SeriesKey, int]:
        """Per series, the time before which the store is complete (empty where nobody vouches for it)."""
        ...

    def close(self) -> None: ...


def meta_at(history: list[tuple[int, SeriesMeta]], t_ns: int) -> SeriesMeta | None:
    """From a declaration history (oldest first), the one in force at t_ns: the latest at or before it, else the
    first (a window before the first declaration is judged by it), None when there is none (pure)."""
    if not history:
        return None
    before = [m for since, m in history if since <= t_ns]
    return before[-1] if before else history[0][1]
