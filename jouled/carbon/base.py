"""The carbon-provider interface: CarbonReading, the CarbonProvider protocol, clocks, and provider errors."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from jouled.model import CarbonPoint
from jouled.timefmt import TimeFormatError, parse_rfc3339_ns

# WattTime reports marginal emissions (MOER) in lbs CO2 per MWh; 1 lb = 0.45359237 kg, so lbs/MWh × 0.45359237 = g/kWh.
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237


class ProviderError(Exception):
    """The provider is down, refused us, or answered something we cannot use (one-line message)."""


class AuthError(ProviderError):
    """The provider rejected our credentials (and a re-login, where there is one, did not help)."""


class NotOffered(Exception):
    """The provider (or the plan behind the token) has no such endpoint, e.g. no forecast.

    Not a ProviderError: a resilient wrapper must not hide it behind a stale value.
    """


@dataclass(frozen=True, slots=True)
class CarbonReading:
    """One intensity value as a provider reports it, with how old it is and how trustworthy.

    ``intensity_g_per_kwh`` is None when the provider gives only a relative index (WattTime's
    signal-index percentile): an intensity cannot be derived from a percentile, so none is invented.
    """

    time_ns: int  # UTC, start of the period the value is for
    zone: str
    provider: str
    intensity_g_per_kwh: float | None
    forecast: bool = False
    age_s: float = 0.0  # when served − time; grows while a stale value is served
    estimated: bool = False  # the provider says it is estimated/modelled, or it is a fallback constant
    stale: bool = False  # the provider failed; this is the last good value (or the fallback)
    percentile: float | None = None  # 0–100 relative index (WattTime signal-index) when that is all there is
    fetched_at_ns: int = 0
    duration_s: float = 0.0  # the period the value covers, 0 when unknown
    note: str = ""  # e.g. "lifecycle", "direct", "perfect foresight", "index only"

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, tz=UTC)

    @property
    def time_s(self) -> float:
        return self.time_ns / 1e9

    @property
    def index_only(self) -> bool:
        return self.intensity_g_per_kwh is None

    def to_point(self) -> CarbonPoint:
        """The stored form (measurement `carbon`); an index-only reading has no intensity to store."""
        if self.intensity_g_per_kwh is None:
            raise ValueError(f"{self.provider} {self.zone}: index-only reading (percentile) has no g/kWh to store")
        return CarbonPoint(
            time_ns=self.time_ns,
            zone=self.zone,
            provider=self.provider,
            intensity_g_per_kwh=float(self.intensity_g_per_kwh),
            forecast=self.forecast,
        )

    def served_at(self, now_ns: int, *, stale: bool | None = None) -> CarbonReading:
        """The same value served at ``now_ns``: its age is recomputed."""
        return replace(
            self,
            age_s=max(0.0, (now_ns - self.time_ns) / 1e9),
            stale=self.stale if stale is None else stale,
        )


def to_points(readings: list[CarbonReading]) -> list[CarbonPoint]:
    """Readings with an intensity, as CarbonPoints for ``store.write_carbon``."""
    return [r.to_point() for r in readings if r.intensity_g_per_kwh is not None and math.isfinite(r.intensity_g_per_kwh)]


@runtime_checkable
class CarbonProvider(Protocol):
    """A source of grid carbon intensity. Times are UTC; ``start``/``end`` are datetimes or None."""

    name: str

    def current(self, zone: str) -> CarbonReading: ...

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]: ...

    def forecast(self, zone: str) -> list[CarbonReading]: ...


# ---- clocks ---------------------------------------------------------------------------------------------


class TimeSource(Protocol):
    """Anything that tells the current UTC time in seconds since the epoch."""

    def now_s(self) -> float: ...


class WallClock:
    """Real time."""

    def now_s(self) -> float:
        return time.time()


class VirtualClock:
    """A fast clock for replaying traces live: t = start_s + speedup × (monotonic elapsed since creation)."""

    def __init__(self, start_s: float, speedup: float = 1.0, *, monotonic: Callable[[], float] | None = None) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be > 0")
        self.start_s = float(start_s)
        self.speedup = float(speedup)
        self._mono: Callable[[], float] = monotonic or time.monotonic
        self._t0 = self._mono()

    def now_s(self) -> float:
        return self.start_s + self.speedup * (self._mono() - self._t0)


class ManualClock:
    """A clock that moves only when told to (tests, simulation)."""

    def __init__(self, t_s: float) -> None:
        self.t_s = float(t_s)

    def now_s(self) -> float:
        return self.t_s

    def set(self, t_s: float) -> None:
        self.t_s = float(t_s)

    def advance(self, dt_s: float) -> None:
        self.t_s += float(dt_s)


def dt_to_ns(t: datetime) -> int:
    """An aware datetime (naive = UTC) → ns since the epoch."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000  # integers: exact to the µs a datetime holds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_iso_ns(text: str) -> int:
    """RFC 3339 / ISO 8601 as the providers write it ('2024-01-01T00:00:00.000Z', '2018-01-20T12:00Z') → ns.

    RFC 3339 (naive = UTC) goes through jouled's one ns-exact parser; the other ISO 8601 shapes providers
    write (no seconds, basic format) through datetime.
    """
    try:
        return parse_rfc3339_ns(text, naive_utc=True)
    except TimeFormatError:
        pass
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    return dt_to_ns(datetime.fromisoformat(s))
