"""Keep serving when a provider fails: the last good value with its age (stale), else a configured fallback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from jouled.carbon.base import CarbonProvider, CarbonReading, ProviderError

log = logging.getLogger("jouled.carbon")


class ConstantProvider:
    """A fixed intensity (config ``constant_g_per_kwh``): no history, no forecast beyond the constant."""

    def __init__(self, intensity_g_per_kwh: float, *, name: str = "constant", now_ns: Callable[[], int] = time.time_ns) -> None:
        self.value = float(intensity_g_per_kwh)
        self.name = name
        self._now_ns = now_ns

    def current(self, zone: str) -> CarbonReading:
        now = self._now_ns()
        return CarbonReading(now, zone, self.name, self.value, estimated=True, fetched_at_ns=now, note="constant")

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        return []

    def forecast(self, zone: str) -> list[CarbonReading]:
        return []


class Resilient:
    """Wrap a provider: on ProviderError serve the last good value (``stale=True``, age growing) and log ONE
    warning line per outage; with no last value, serve ``fallback_g_per_kwh`` (flagged stale and estimated) or
    re-raise when there is none. NotOffered passes through: a missing endpoint is not an outage."""

    def __init__(
        self,
        provider: CarbonProvider,
        fallback_g_per_kwh: float | None = None,
        *,
        logger: logging.Logger | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.inner = provider
        self.name = provider.name
        self.fallback_g_per_kwh = fallback_g_per_kwh
        self.log = logger or log
        self._now_ns = now_ns
        self._last: dict[str, CarbonReading] = {}
        self._last_lists: dict[tuple[str, str], list[CarbonReading]] = {}
        self._failing: set[tuple[str, str]] = set()
        self.failures = 0

    def _failed(self, what: str, zone: str, err: Exception, serving: str) -> None:
        self.failures += 1
        key = (what, zone)
        if key in self._failing:
            self.log.debug("carbon %s %s %s still failing: %s", self.name, zone, what, err)
            return
        self._failing.add(key)
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        self.log.warning("carbon %s %s %s failed: %s; %s", self.name, zone, what, msg, serving)

    def _ok(self, what: str, zone: str) -> None:
        if (what, zone) in self._failing:
            self._failing.discard((what, zone))
            self.log.info("carbon %s %s %s recovered", self.name, zone, what)

    def current(self, zone: str) -> CarbonReading:
        try:
            r = self.inner.current(zone)
        except ProviderError as e:
            now = self._now_ns()
            last = self._last.get(zone)
            if last is not None:
                out = last.served_at(now, stale=True)
                self._failed("current", zone, e, f"serving the last value, {out.age_s:.0f} s old (stale)")
                return out
            if self.fallback_g_per_kwh is not None:
                self._failed("current", zone, e, f"no last value, serving the fallback {self.fallback_g_per_kwh:g} g/kWh")
                return CarbonReading(
                    now,
                    zone,
                    self.name,
                    float(self.fallback_g_per_kwh),
                    estimated=True,
                    stale=True,
                    fetched_at_ns=now,
                    note="fallback: provider failed and no last value",
                )
            self._failed("current", zone, e, "no last value and no fallback")
            raise
        self._ok("current", zone)
        self._last[zone] = r
        return r

    def _list(self, what: str, zone: str, call: Callable[[], list[CarbonReading]]) -> list[CarbonReading]:
        try:
            out = call()
        except ProviderError as e:
            last = self._last_lists.get((what, zone))
            if last is None:
                self._failed(what, zone, e, "no earlier answer to serve")
                raise
            self._failed(what, zone, e, f"serving the earlier answer ({len(last)} points, stale)")
            return [replace(r, stale=True) for r in last]
        self._ok(what, zone)
        self._last_lists[(what, zone)] = out
        return out

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        return self._list("history", zone, lambda: self.inner.history(zone, start, end))

    def forecast(self, zone: str) -> list[CarbonReading]:
        return self._list("forecast", zone, lambda: self.inner.forecast(zone))
