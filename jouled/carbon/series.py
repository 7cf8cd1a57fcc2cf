"""Grid carbon intensity as a step function of time: the one intensity series type (pure numpy, no I/O).

Used by the energy math (carbon per window, jouled.energy / jouled.query), the trace replayer (a `Trace` is an
`IntensitySeries` with the file's name), the simulator (exact ∫ CI dt per period) and the policies (Cmin/Cmax over a
trailing window, forecasts ahead). Times are stored in integer nanoseconds (UTC epoch, as the log stores them);
the scheduler works in float seconds, so `time_s` is the same instants in seconds (computed once).

Semantics: ``g_per_kwh[i]`` is in force from ``time_ns[i]`` until the next time. Outside the points, `at` and the
integrals extend the series both ways (the first value holds before its time, the last after it), so a constant
from the configuration is simply a one-point series (`IntensitySeries.constant`). Where the series ends matters
only to a replayed trace: `end_s` (the last time plus the typical spacing) and the strict `index_at`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

J_PER_KWH = 3.6e6
NS_PER_S = 1_000_000_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
S = TypeVar("S", bound="IntensitySeries")


class _Point(Protocol):
    """What a stored carbon point or a provider's reading has (jouled.model.CarbonPoint, carbon.base.CarbonReading)."""

    @property
    def time_ns(self) -> int: ...

    @property
    def intensity_g_per_kwh(self) -> float | None: ...


@dataclass(frozen=True, eq=False)
class IntensitySeries:
    """Intensity in gCO2e/kWh as a step function: ``g_per_kwh[i]`` holds from ``time_ns[i]`` until the next.

    Sorted by time for `at`, the integrals and the windows (the ``from_*`` constructors sort); the energy math
    also accepts repeated times (it averages them).
    """

    time_ns: IntArray
    g_per_kwh: FloatArray

    def __post_init__(self) -> None:
        t = np.asarray(self.time_ns, dtype=np.int64)
        v = np.asarray(self.g_per_kwh, dtype=np.float64)
        if t.shape != v.shape or t.ndim != 1:
            raise ValueError("time_ns and g_per_kwh must be 1-D arrays of the same length")
        object.__setattr__(self, "time_ns", t)
        object.__setattr__(self, "g_per_kwh", v)

    # --- constructors -------------------------------------------------------------------------------------------

    @classmethod
    def empty(cls: type[S], **meta: Any) -> S:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0), **meta)

    @classmethod
    def constant(cls: type[S], g_per_kwh: float, **meta: Any) -> S:
        """One value for all time (a one-point series at t = 0: the first value holds before it, the last after)."""
        return cls(np.zeros(1, dtype=np.int64), np.array([float(g_per_kwh)]), **meta)

    @classmethod
    def from_seconds(cls: type[S], time_s: npt.ArrayLike, g_per_kwh: npt.ArrayLike, **meta: Any) -> S:
        """From float UTC epoch seconds (sorted by time, stably); nanoseconds are the seconds rounded."""
        t = np.round(np.asarray(time_s, dtype=np.float64) * NS_PER_S).astype(np.int64)
        v = np.asarray(g_per_kwh, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        return cls(t[order], v[order], **meta)

    @classmethod
    def from_points(cls: type[S], points: Iterable[_Point], **meta: Any) -> S:
        """From stored carbon points or provider readings (those without an intensity, index-only, are skipped)."""
        pts = [(p.time_ns, float(p.intensity_g_per_kwh)) for p in points if p.intensity_g_per_kwh is not None]
        t = np.array([p[0] for p in pts], dtype=np.int64)
        v = np.array([p[1] for p in pts], dtype=np.float64)
        order = np.argsort(t, kind="stable")
        return cls(t[order], v[order], **meta)

    # --- the arrays -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.time_ns.size)

    @functools.cached_property
    def time_s(self) -> FloatArray:
        """The times in float UTC epoch seconds (what the scheduler's clocks use)."""
        return self.time_ns / 1e9

    @property
    def intensity_g_per_kwh(self) -> FloatArray:
        """`g_per_kwh` under the name carbon readings and points use."""
        return self.g_per_kwh

    def _slice(self, lo: int, hi: int) -> IntensitySeries:
        out = IntensitySeries(self.time_ns[lo:hi], self.g_per_kwh[lo:hi])
        if "time_s" in self.__dict__:  # keep the seconds already computed (same values, no recomputation)
            out.__dict__["time_s"] = self.time_s[lo:hi]
        return out

    # --- extent (for replayed traces) -----------------------------------------------------------------------------

    @property
    def step_s(self) -> float:
        """The typical spacing (median), used as the length of the last period; 3600 s below two points."""
        if self.time_ns.size < 2:
            return 3600.0
        return float(np.median(np.diff(self.time_s)))

    @property
    def start_s(self) -> float:
        return float(self.time_s[0])

    @property
    def end_s(self) -> float:
        """End of the last period (exclusive): the last time plus `step_s`."""
        return float(self.time_s[-1]) + self.step_s

    def index_at(self, t_s: float) -> int:
        """Index of the value in force at ``t_s`` (the last point with time ≤ t); ValueError outside
        [start_s, end_s) — for a replayed trace a time it does not cover is an error, not the nearest value."""
        i = int(np.searchsorted(self.time_s, t_s, side="right")) - 1
        if i < 0 or t_s >= self.end_s:
            raise ValueError(f"time {t_s} is outside the trace [{self.start_s}, {self.end_s})")
        return i

    # --- values ---------------------------------------------------------------------------------------------------

    def at(self, t_s: float) -> float:
        """The intensity in force at ``t_s`` (step function, no interpolation; extended both ways)."""
        if self.time_ns.size == 0:
            raise ValueError("an empty intensity series has no value")
        i = int(np.searchsorted(self.time_s, t_s, side="right")) - 1
        return float(self.g_per_kwh[min(max(i, 0), self.time_ns.size - 1)])

    @functools.cached_property
    def _cum(self) -> FloatArray:
        """∫ CI dt from the first point to each point (g/kWh·s); the last period is `step_s` long."""
        t, v = self.time_s, self.g_per_kwh
        ends = np.append(t[1:], self.end_s)
        return np.concatenate([[0.0], np.cumsum(v * (ends - t))])

    def _integral_to(self, t_s: float) -> float:
        t = self.time_s
        i = int(np.searchsorted(t, t_s, side="right")) - 1
        i = min(max(i, 0), len(t) - 1)
        return float(self._cum[i] + self.g_per_kwh[i] * (t_s - t[i]))

    def integral_s(self, a_s: float, b_s: float) -> float:
        """∫ CI(t) dt over [a_s, b_s] in g/kWh · s, exact for the step function; 0 when b ≤ a."""
        if self.time_ns.size == 0:
            raise ValueError("an empty intensity series has no value")
        return self._integral_to(b_s) - self._integral_to(a_s) if b_s > a_s else 0.0

    def carbon_g(self, a_s: float, b_s: float, power_w: float) -> float:
        """Grams CO2e of a constant ``power_w`` drawn over [a_s, b_s]: P · ∫ CI dt / (J per kWh).
        (Measured, varying power: jouled.energy.window_carbon_many integrates ∫ P·CI dt sample by sample.)"""
        return power_w * self.integral_s(a_s, b_s) / J_PER_KWH

    # --- windows --------------------------------------------------------------------------------------------------

    def window(self, a_s: float, b_s: float) -> IntensitySeries:
        """The points with a_s ≤ time < b_s."""
        lo = int(np.searchsorted(self.time_s, a_s, side="left"))
        hi = int(np.searchsorted(self.time_s, b_s, side="left"))
        return self._slice(lo, hi)

    def upto(self, now_s: float) -> IntensitySeries:
        """The points with time ≤ now_s: what was known at ``now_s``."""
        return self._slice(0, int(np.searchsorted(self.time_s, now_s, side="right")))

    def trailing(self, now_s: float, window_s: float) -> FloatArray:
        """Values with now_s − window_s < time ≤ now_s: the past only."""
        lo = int(np.searchsorted(self.time_s, now_s - window_s, side="right"))
        hi = int(np.searchsorted(self.time_s, now_s, side="right"))
        return self.g_per_kwh[lo:hi]

    def trailing_range(self, now_s: float, window_s: float, current: float | None = None) -> tuple[float, float]:
        """(Cmin, Cmax) over the trailing window and the ``current`` value; (nan, nan) when there is neither."""
        vals = self.trailing(now_s, window_s)
        if current is not None:
            vals = np.append(vals, current)
        if vals.size == 0:
            return float("nan"), float("nan")
        return float(vals.min()), float(vals.max())

    def ahead(self, now_s: float, horizon_s: float) -> tuple[FloatArray, FloatArray]:
        """Points with now_s < time < now_s + horizon_s (for forecasts): (time_s, g_per_kwh)."""
        lo = int(np.searchsorted(self.time_s, now_s, side="right"))
        hi = int(np.searchsorted(self.time_s, now_s + horizon_s, side="left"))
        return self.time_s[lo:hi], self.g_per_kwh[lo:hi]


__all__ = ["J_PER_KWH", "IntensitySeries"]
