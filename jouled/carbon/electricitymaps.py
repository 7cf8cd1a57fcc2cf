"""Electricity Maps API v3: latest, history (last 24 h) / past-range, and forecast carbon intensity per zone."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jouled.carbon.base import CarbonReading, NotOffered, dt_to_ns
from jouled.carbon.cache import TTLCache
from jouled.carbon.http import HttpError, HttpFetcher, expect_dict, expect_list, expect_num, expect_time_ns

DEFAULT_URL = "https://api.electricitymap.org"


def _unwrap(obj: Any, key: str) -> Any:
    """Newer API versions wrap payloads in ``data``; older ones answer the object (or ``{key: [...]}``) directly."""
    if isinstance(obj, dict) and "data" in obj and key not in obj:
        return obj["data"]
    return obj


class ElectricityMaps:
    """Electricity Maps v3 (header ``auth-token``). Values are lifecycle (LCA) unless the account or
    ``emission_factor_type`` says otherwise; the type the API reports is kept in ``note``."""

    name = "electricitymaps"

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_URL,
        emission_factor_type: str = "",
        fetcher: HttpFetcher | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        ttl_current_s: float = 300.0,  # the hourly value is revised during the hour; 5 min is plenty fresh
        ttl_history_s: float = 900.0,
        ttl_forecast_s: float = 1800.0,
    ) -> None:
        self.fetcher = fetcher or HttpFetcher(self.name, base_url)
        self.headers = {"auth-token": token} if token else {}
        self.emission_factor_type = emission_factor_type
        self._now_ns = now_ns
        self.cache = TTLCache(monotonic)
        self.ttl = {"current": ttl_current_s, "history": ttl_history_s, "forecast": ttl_forecast_s}

    def _params(self, zone: str, **extra: str) -> dict[str, str]:
        p = {"zone": zone, **extra}
        if self.emission_factor_type:
            p["emissionFactorType"] = self.emission_factor_type
        return p

    def _reading(self, item: Any, zone: str, what: str, now: int, *, forecast: bool, note: str = "") -> CarbonReading:
        d = expect_dict(item, what)
        t = expect_time_ns(d, "datetime", what)
        est = bool(d.get("isEstimated") or False)
        notes = [x for x in (note or str(d.get("emissionFactorType") or ""), str(d.get("estimationMethod") or "")) if x]
        return CarbonReading(
            time_ns=t,
            zone=str(d.get("zone") or zone),
            provider=self.name,
            intensity_g_per_kwh=expect_num(d, "carbonIntensity", what),
            forecast=forecast,
            age_s=0.0 if forecast else max(0.0, (now - t) / 1e9),
            estimated=est,
            fetched_at_ns=now,
            note="; ".join(notes),
        )

    def current(self, zone: str) -> CarbonReading:
        cached = self.cache.get(("current", zone))
        if cached is not None:
            return cached.served_at(self._now_ns())
        what = f"{self.name} latest {zone}"
        obj = _unwrap(self.fetcher.get_json("/v3/carbon-intensity/latest", self._params(zone), self.headers), "carbonIntensity")
        if isinstance(obj, list):  # a data envelope holding a list: the latest is the last
            obj = expect_list(obj, what)[-1] if obj else None
        r = self._reading(obj, zone, what, self._now_ns(), forecast=False)
        self.cache.put(("current", zone), r, self.ttl["current"])
        return r

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        key = ("history", zone, start, end)
        cached = self.cache.get(key)
        if cached is not None:
            return list(cached)
        what = f"{self.name} history {zone}"
        if start is None and end is None:
            obj = self.fetcher.get_json("/v3/carbon-intensity/history", self._params(zone), self.headers)
        else:
            e = end or datetime.now(UTC)
            s = start or e - timedelta(days=1)
            iso = {
                "start": datetime.fromtimestamp(dt_to_ns(s) / 1e9, UTC).isoformat().replace("+00:00", "Z"),
                "end": datetime.fromtimestamp(dt_to_ns(e) / 1e9, UTC).isoformat().replace("+00:00", "Z"),
            }
            obj = self.fetcher.get_json("/v3/carbon-intensity/past-range", self._params(zone, **iso), self.headers)
        items = obj.get("history", obj.get("data")) if isinstance(obj, dict) else obj
        now = self._now_ns()
        out = [
            self._reading(i, zone, what, now, forecast=False)
            for i in expect_list(items, what)
            if not (isinstance(i, dict) and i.get("carbonIntensity") is None)
        ]  # gaps come as null
        lo = dt_to_ns(start) if start else None
        hi = dt_to_ns(end) if end else None
        out = [r for r in out if (lo is None or r.time_ns >= lo) and (hi is None or r.time_ns <= hi)]
        self.cache.put(key, out, self.ttl["history"])
        return out

    def forecast(self, zone: str) -> list[CarbonReading]:
        cached = self.cache.get(("forecast", zone))
        if cached is not None:
            return list(cached)
        what = f"{self.name} forecast {zone}"
        try:
            obj = self.fetcher.get_json("/v3/carbon-intensity/forecast", self._params(zone), self.headers)
        except HttpError as e:
            if e.status in (403, 404):
                raise NotOffered(f"{what}: not offered for this token's plan ({e})") from None
            raise
        d = expect_dict(obj, what)
        items = d.get("forecast", d.get("data"))
        now = self._now_ns()
        note = "forecast" + (f"; {d['emissionFactorType']}" if d.get("emissionFactorType") else "")
        out = [self._reading(i, zone, what, now, forecast=True, note=note) for i in expect_list(items, what)]
        self.cache.put(("forecast", zone), out, self.ttl["forecast"])
        return out
