"""The source protocol: open / read / close, each reading stamped on the shared monotonic-anchored clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from jouled.model import Reading, SourceKind
from jouled.series import SeriesMeta


@dataclass
class SourceInfo:
    """What `jouled sources` shows for one source."""

    name: str
    kind: SourceKind
    available: bool
    devices: list[str] = field(default_factory=list)
    reason: str = ""  # why unavailable, with the fix
    period_s: float = 0.1
    notes: list[str] = field(default_factory=list)  # fallbacks in use, MIG, …
    counter: bool = False  # offers a cumulative energy counter
    # what each device's series is (jouled.series): role, measured/estimated, periods (TICK: the sampler's period);
    # the daemon stores it with the data. A device left out gets jouled.series.default_meta from the source name.
    series: dict[str, SeriesMeta] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """A power source. ``open`` raises ``SourceUnavailable`` with the reason and fix when it cannot run.

    ``read`` is blocking and is called from the source's own thread; it returns one reading per device
    (a failing device raises; the sampler retries with backoff). ``read_counters`` reads only the energy
    counters, called on every marker so window edges sit on fresh counter values. Both return new `Reading`s at
    each call: the sampler keeps them until the next flush (jouled/columns.py), so a reading must not be changed
    once returned.
    """

    name: str
    kind: SourceKind
    # Optional ``blocking = False``: read() never waits on I/O, so the source may share one sampling thread with the
    # others that say so (one wake-up per tick for all). Without it the source gets its own thread.

    def open(self) -> SourceInfo: ...

    def read(self) -> list[Reading]: ...

    def read_counters(self) -> list[Reading]: ...

    def close(self) -> None: ...
