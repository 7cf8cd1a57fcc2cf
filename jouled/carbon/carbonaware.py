"""Carbon Aware SDK web API (self-hosted; base URL from [carbon] url): emissions by location and current forecasts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jouled.carbon.base import CarbonReading, NotOffered, ProviderError, dt_to_ns
from jouled.carbon.cache import TTLCache
from jouled.carbon.http import HttpError, HttpFetcher, expect_dict, expect_list, expect_num, expect_time_ns


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration_s(v: Any) -> float:
    """The SDK writes durations as minutes (number) or as a TimeSpan string 'hh:mm:ss'."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v) * 60.0
    if isinstance(v, str):
        parts = v.split(":")
        try:
            if len(parts) == 3:
                days, _, hh = parts[0].rpartition(".")
                return (float(days or 0) * 24 + float(hh)) * 3600 + float(parts[1]) * 60 + float(parts[2])
        except ValueError:
            return 0.0
    return 0.0


class CarbonAwareSdk:
    """``/emissions/bylocation`` (rating in g/kWh) and ``/emissions/forecasts/current``."""

    name = "carbonaware"

    def __init__(
        self,
        base_url: str,
        *,
        fetcher: HttpFetcher | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        ttl_s: float = 300.0,
        lookback_s: float = 2 * 3600.0,
    ) -> None:
        self.fetcher = fetcher or HttpFetcher(self.name, base_url)
        self._now_ns = now_ns
        self.cache = TTLCache(monotonic)
        self.ttl_s = ttl_s
        self.lookback_s = lookback_s

    def _emissions(self, zone: str, s_ns: int, e_ns: int, what: str) -> list[CarbonReading]:
        obj = self.fetcher.get_json("/emissions/bylocation", {"location": zone, "time": _iso(s_ns), "toTime": _iso(e_ns)})
        now = self._now_ns()
        out = []
        for item in expect_list(obj, what):
            d = expect_dict(item, what)
            t = expect_time_ns(d, "time", what)
            out.append(
                CarbonReading(
                    t,
                    str(d.get("location") or zone),
                    self.name,
                    expect_num(d, "rating", what),
                    age_s=max(0.0, (now - t) / 1e9),
                    fetched_at_ns=now,
                    duration_s=_duration_s(d.get("duration")),
                )
            )
        out.sort(key=lambda r: r.time_ns)
        return out

    def current(self, zone: str) -> CarbonReading:
        cached = self.cache.get(("current", zone))
        if cached is not None:
            return cached.served_at(self._now_ns())
        now = self._now_ns()
        what = f"carbonaware bylocation {zone}"
        pts = [r for r in self._emissions(zone, now - int(self.lookback_s * 1e9), now, what) if r.time_ns <= now]
        if not pts:
            raise ProviderError(f"{what}: no emissions data in the last {self.lookback_s / 3600:g} h")
        self.cache.put(("current", zone), pts[-1], self.ttl_s)
        return pts[-1]

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        e = dt_to_ns(end) if end else self._now_ns()
        s = dt_to_ns(start) if start else e - int(timedelta(days=1).total_seconds() * 1e9)
        return self._emissions(zone, s, e, f"carbonaware bylocation {zone}")

    def forecast(self, zone: str) -> list[CarbonReading]:
        cached = self.cache.get(("forecast", zone))
        if cached is not None:
            return list(cached)
        what = f"carbonaware forecasts/current {zone}"
        try:
            obj = self.fetcher.get_json("/emissions/forecasts/current", {"location": zone})
        except HttpError as err:
            if err.status in (404, 501):
                raise NotOffered(f"{what}: this SDK instance has no forecast data source ({err})") from None
            raise
        batches = expect_list(obj, what)
        if not batches:
            raise ProviderError(f"{what}: unexpected answer, empty list")
        now = self._now_ns()
        out = []
        for item in expect_list(expect_dict(batches[0], what).get("forecastData"), what):
            d = expect_dict(item, what)
            out.append(
                CarbonReading(
                    expect_time_ns(d, "timestamp", what),
                    str(d.get("location") or zone),
                    self.name,
                    expect_num(d, "value", what),
                    forecast=True,
                    fetched_at_ns=now,
                    duration_s=_duration_s(d.get("duration")),
                    note="forecast",
                )
            )
        self.cache.put(("forecast", zone), out, self.ttl_s)
        return out
