"""The one carrier of readings from a source to the store: sampler threads hand over each tick's checked readings, a
drain appends them to per-series columns and hands those on as array chunks (`ChunkBatch`), which the store writes
as they are.

No object per sample outlives the drain: a reading's numbers go into its series' lists, and each list becomes one
array. (Before: a tuple per reading in a queue, then a `Sample` per reading, then columns again — three passes and
two objects per reading, the largest cost of the daemon's loop in a 100 Hz profile.)
The columns are the stdlib's `array`s, not numpy's: the daemon's process never loads numpy (jouled/store/chunkcodec.py).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from jouled.model import Reading

if TYPE_CHECKING:
    import numpy as np

    from jouled.store.sqlite import SeriesKey

# a batch's column: the sink makes arrays; importers, tests and benches may hand numpy arrays to the store
IntColumn: TypeAlias = "array[int] | np.ndarray[Any, Any]"
FloatColumn: TypeAlias = "array[float] | np.ndarray[Any, Any]"

NAN = float("nan")


@dataclass
class ChunkBatch:
    """One series' samples as columns (time-ordered, NaN = the field was absent), ready to store as one chunk."""

    key: SeriesKey
    time_ns: IntColumn
    power_w: FloatColumn
    energy_j: FloatColumn
    extras: dict[str, FloatColumn] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time_ns)


class _Lists:
    __slots__ = ("e", "p", "t", "x")

    def __init__(self) -> None:
        # lists, turned into arrays once per drain: Python 3.11 specialises list.append, and a list append plus
        # the array's C conversion at the drain is cheaper than an array append per value
        self.t: list[int] = []
        self.p: list[float] = []
        self.e: list[float] = []
        # (row, that row's extras): the extra columns are made at `batch`, NaN where a row has none, so a row without
        # extras (most of them: NVML's come once a second) costs nothing here; padding every extra column at every row
        # cost a GPU series five appends a row (the daemon's drain at 10 Hz: 441 → 391 µs a flush, within noise)
        self.x: list[tuple[int, dict[str, float]]] = []

    def add(self, t: int, p: float | None, e: float | None, x: dict[str, float]) -> None:
        if x:
            self.x.append((len(self.t), x))
        self.t.append(t)
        self.p.append(NAN if p is None else p)
        self.e.append(NAN if e is None else e)

    def batch(self, key: SeriesKey) -> ChunkBatch:
        extras: dict[str, array[float]] = {}
        if self.x:
            n = len(self.t)
            for k, x in self.x:
                for name, v in x.items():
                    col = extras.get(name)
                    if col is None:
                        col = extras[name] = array("d", [NAN]) * n
                    col[k] = v
        return ChunkBatch(key, array("q", self.t), array("d", self.p), array("d", self.e),
                          cast("dict[str, FloatColumn]", extras))


class MalformedReading(ValueError):
    """`ColumnSink.add` left out a reading that is not numeric; ``added`` is what it appended of the others (its
    return value: how many, earliest and latest time_ns)."""

    def __init__(self, message: str, added: tuple[int, int, int]) -> None:
        super().__init__(message)
        self.added = added


class ColumnSink:
    """Where sampler threads put their readings (`add`), and the daemon or `jouled.measure` takes them (`drain`).

    `add` checks a tick's readings and keeps the list as it came; `drain` appends them to their series' columns.
    Why not append at `add`: a tick runs after a sleep, when little of the process is in the CPU's caches, and an
    append into 36 column lists touches them all; the readings themselves were just built and are still cached. On
    this project's VM, 12 readings a tick (`tick_cost` in bench/results/observer.json, alternating): 71–87 µs a tick
    after a 10 ms sleep against 98–102 when `add` appended, 79–80 against 137–139 after 100 ms; the daemon at
    100 Hz 5.83–5.96 % of a core against 6.05–6.06 %. The drain does the appends for a whole flush interval in one
    hot loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ticks: list[tuple[str, list[Reading]]] = []
        self._n = 0

    def __len__(self) -> int:
        """Readings added and not yet drained."""
        return self._n

    def add(self, source: str, readings: Iterable[Reading]) -> tuple[int, int, int]:
        """Take a tick's readings for the next drain; returns (how many, earliest and latest time_ns among them) for
        the sampler's health.

        A reading that is not numeric is left out and the others are kept; then `MalformedReading` (a ValueError
        naming the first bad one) is raised, carrying what the return value would have been. The readings must not
        be changed once given (sources return new ones at each read); the list is copied."""
        kept = list(readings)  # the sink's own list: a source may reuse its own (the readings themselves are new)
        first_ns, last_ns = 1 << 63, -(1 << 63)
        bad: ValueError | None = None
        fixed: dict[int, Reading | None] = {}  # index -> the reading with its numbers converted, or None: refused
        for i, r in enumerate(kept):
            t, p, e, x = r.time_ns, r.power_w, r.energy_j, r.extras
            # every value checked here, in the source's thread, so a bad reading is refused before it reaches a
            # column (the typed arrays would refuse what a list took); exact types are the cheap path
            if type(t) is not int or (p is not None and type(p) is not float) or (
                    e is not None and type(e) is not float) or (x and not all(type(v) is float for v in x.values())):
                try:
                    t, pf, ef, x = _coerce(source, r)
                except ValueError as err:
                    bad = bad or err
                    fixed[i] = None
                    continue
                fixed[i] = Reading(t, r.device, pf, ef, x)
            if t < first_ns:
                first_ns = t
            if t > last_ns:
                last_ns = t
        if fixed:
            kept = [f for f in (fixed.get(i, r) for i, r in enumerate(kept)) if f is not None]
        n = len(kept)
        if n:
            with self._lock:
                self._ticks.append((source, kept))
                self._n += n
        if bad is not None:
            raise MalformedReading(str(bad), (n, first_ns, last_ns))
        return n, first_ns, last_ns

    def drain(self, host: str) -> list[ChunkBatch]:
        """Everything added so far, one `ChunkBatch` per (source, device), keys tagged with ``host``."""
        from jouled.store.sqlite import SeriesKey

        with self._lock:
            ticks, self._ticks, self._n = self._ticks, [], 0
        series: dict[tuple[str, str], _Lists] = {}
        for source, readings in ticks:
            for r in readings:
                cols = series.get((source, r.device))
                if cols is None:
                    cols = series[(source, r.device)] = _Lists()
                cols.add(r.time_ns, r.power_w, r.energy_j, r.extras)
        return [c.batch(SeriesKey(host, source, device)) for (source, device), c in series.items()]


def _coerce(source: str, r: Reading) -> tuple[int, float, float, dict[str, float]]:
    """A reading's numbers as int ns and floats (a numpy scalar, an int watt), or ValueError naming the reading."""
    t: object = r.time_ns  # typed int; a third-party source may still hand a float or a numpy integer
    try:
        if isinstance(t, float) and not t.is_integer():
            raise ValueError(f"time_ns {t!r} is not a whole number of nanoseconds")
        return (
            int(t),  # type: ignore[call-overload]  # anything else fails here, as the except expects
            NAN if r.power_w is None else float(r.power_w),
            NAN if r.energy_j is None else float(r.energy_j),
            {k: float(v) for k, v in r.extras.items()},
        )
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(
            f"source {source}, device {r.device}: a reading that is not numeric ({err}) — a source returns time_ns "
            "as int nanoseconds and power_w, energy_j and extras as numbers; the reading was dropped"
        ) from None


def batches_from_rows(rows: Iterable[tuple[SeriesKey, int, float | None, float | None, dict[str, float]]]) -> list[ChunkBatch]:
    """Group (key, time_ns, power_w, energy_j, extras) rows into per-series batches in their given order (importers)."""
    groups: dict[SeriesKey, _Lists] = {}
    for key, t, p, e, x in rows:
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Lists()
        g.add(t, p, e, x)
    return [g.batch(key) for key, g in groups.items()]
