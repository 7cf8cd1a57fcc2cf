"""UK Carbon Intensity API (NESO, no auth): national (zone GB) and regional (GB-1 … GB-17) half-hourly intensity."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jouled.carbon.base import CarbonReading, ProviderError, dt_to_ns
from jouled.carbon.cache import TTLCache
from jouled.carbon.http import HttpFetcher, expect_dict, expect_list, expect_time_ns
from jouled.errors import UserError

DEFAULT_URL = "https://api.carbonintensity.org.uk"
PERIOD_S = 1800.0


def _fmt(t_ns: int) -> str:
    """The API's path time format: ISO 8601 to the minute, UTC."""
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%MZ")


def parse_zone(zone: str) -> int | None:
    """'GB' → None (national); 'GB-7' → region 7."""
    z = zone.strip().upper()
    if z in ("GB", "UK"):
        return None
    m = re.fullmatch(r"(?:GB|UK)-(\d{1,2})", z)
    if m and 1 <= int(m.group(1)) <= 17:
        return int(m.group(1))
    raise UserError(f"zone {zone!r}: UK Carbon Intensity covers GB (national) and GB-1 … GB-17 (regions) — use one")


class UkCarbonIntensity:
    """Half-hour periods; national values have a forecast and, later, an actual (the actual wins when there);
    regional values are forecasts only (flagged ``estimated``)."""

    name = "ukci"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_URL,
        fetcher: HttpFetcher | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        max_ttl_s: float = PERIOD_S,
    ) -> None:
        self.fetcher = fetcher or HttpFetcher(self.name, base_url)
        self._now_ns = now_ns
        self.cache = TTLCache(monotonic)
        self.max_ttl_s = max_ttl_s

    def _readings(self, items: Any, zone: str, what: str, *, regional: bool, forecast: bool) -> list[CarbonReading]:
        now = self._now_ns()
        out = []
        for item in expect_list(items, what):
            d = expect_dict(item, what)
            t0 = expect_time_ns(d, "from", what)
            t1 = expect_time_ns(d, "to", what) if "to" in d else t0 + int(PERIOD_S * 1e9)
            inten = expect_dict(d.get("intensity"), what)
            actual, fc = inten.get("actual"), inten.get("forecast")
            use_actual = not forecast and isinstance(actual, int | float) and not isinstance(actual, bool)
            v = actual if use_actual else fc
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ProviderError(f"{what}: unexpected answer, intensity {inten!r} has no number")
            index = str(inten.get("index") or "")
            kind = "actual" if use_actual else ("regional forecast" if regional else "forecast")
            out.append(
                CarbonReading(
                    time_ns=t0,
                    zone=zone,
                    provider=self.name,
                    intensity_g_per_kwh=float(v),
                    forecast=forecast,
                    age_s=0.0 if forecast else max(0.0, (now - t0) / 1e9),
                    estimated=not use_actual,
                    fetched_at_ns=now,
                    duration_s=(t1 - t0) / 1e9,
                    note=f"{kind}; index {index}" if index else kind,
                )
            )
        return out

    @staticmethod
    def _regional_items(obj: Any, what: str) -> Any:
        """Regional answers nest the periods: {data: [{regionid, ..., data: [...]}]} or {data: {..., data: [...]}}."""
        data = expect_dict(obj, what).get("data")
        if isinstance(data, list):
            if not data:
                raise ProviderError(f"{what}: unexpected answer, empty data")
            data = data[0]
        return expect_dict(data, what).get("data")

    def current(self, zone: str) -> CarbonReading:
        region = parse_zone(zone)
        cached = self.cache.get(("current", zone))
        if cached is not None:
            return cached.served_at(self._now_ns())
        what = f"ukci current {zone}"
        if region is None:
            items = expect_dict(self.fetcher.get_json("/intensity"), what).get("data")
        else:
            items = self._regional_items(self.fetcher.get_json(f"/regional/regionid/{region}"), what)
        rs = self._readings(items, zone, what, regional=region is not None, forecast=False)
        if not rs:
            raise ProviderError(f"{what}: unexpected answer, no periods")
        r = rs[-1]
        # the value is for a half-hour period: keep it until the period ends (at least a minute, at most max_ttl_s)
        left_s = (r.time_ns + r.duration_s * 1e9 - self._now_ns()) / 1e9
        self.cache.put(("current", zone), r, min(self.max_ttl_s, max(60.0, left_s)))
        return r

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        region = parse_zone(zone)
        e = dt_to_ns(end) if end else self._now_ns()
        s = dt_to_ns(start) if start else e - int(timedelta(days=1).total_seconds() * 1e9)
        what = f"ukci history {zone}"
        if region is None:
            items = expect_dict(self.fetcher.get_json(f"/intensity/{_fmt(s)}/{_fmt(e)}"), what).get("data")
        else:
            obj = self.fetcher.get_json(f"/regional/intensity/{_fmt(s)}/{_fmt(e)}/regionid/{region}")
            items = self._regional_items(obj, what)
        return self._readings(items, zone, what, regional=region is not None, forecast=False)

    def forecast(self, zone: str) -> list[CarbonReading]:
        region = parse_zone(zone)
        cached = self.cache.get(("forecast", zone))
        if cached is not None:
            return list(cached)
        now = _fmt(self._now_ns())
        what = f"ukci forecast {zone}"
        if region is None:
            items = expect_dict(self.fetcher.get_json(f"/intensity/{now}/fw24h"), what).get("data")
        else:
            items = self._regional_items(self.fetcher.get_json(f"/regional/intensity/{now}/fw24h/regionid/{region}"), what)
        out = self._readings(items, zone, what, regional=region is not None, forecast=True)
        self.cache.put(("forecast", zone), out, self.max_ttl_s)
        return out
