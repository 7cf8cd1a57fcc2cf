"""WattTime API v3: marginal emissions (MOER, lbs/MWh → g/kWh) or, on plans that only allow it, the 0–100 index."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jouled.carbon.base import (
    LBS_PER_MWH_TO_G_PER_KWH,
    AuthError,
    CarbonReading,
    NotOffered,
    ProviderError,
    dt_to_ns,
)
from jouled.carbon.cache import TTLCache
from jouled.carbon.http import (
    HttpAuthError,
    HttpError,
    HttpFetcher,
    expect_dict,
    expect_list,
    expect_num,
    expect_time_ns,
)

DEFAULT_URL = "https://api.watttime.org"
INDEX_NOTE = "index only: percentile 0–100 of the region's recent MOER; an intensity cannot be derived from it"


def _iso(t: datetime) -> str:
    return datetime.fromtimestamp(dt_to_ns(t) / 1e9, UTC).isoformat()


class WattTime:
    """WattTime v3. Logs in with HTTP Basic on ``/login`` for a bearer token valid 30 min; refreshes it after
    ``token_refresh_s`` (25 min) and on a 401. ``current`` is the MOER in force (first forecast point, the
    real-time value); when the plan refuses MOER (403) it returns the signal-index percentile instead,
    with ``intensity_g_per_kwh=None`` and ``percentile`` set."""

    name = "watttime"

    def __init__(
        self,
        username: str,
        password: str,
        *,
        base_url: str = DEFAULT_URL,
        signal_type: str = "co2_moer",
        index_only: bool = False,
        fetcher: HttpFetcher | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        token_refresh_s: float = 25 * 60.0,
        ttl_s: float = 300.0,  # WattTime updates every 5 minutes
    ) -> None:
        self.fetcher = fetcher or HttpFetcher(self.name, base_url)
        self.username = username
        self.password = password
        self.signal_type = signal_type
        self.index_only = index_only
        self._now_ns = now_ns
        self._mono = monotonic
        self.token_refresh_s = token_refresh_s
        self.ttl_s = ttl_s
        self.cache = TTLCache(monotonic)
        self._token: str | None = None
        self._token_at = 0.0
        self.logins = 0

    # ---- auth ----
    def _login(self) -> str:
        try:
            obj = self.fetcher.get_json("/login", auth=(self.username, self.password))
        except HttpAuthError:
            raise AuthError(
                "watttime /login: HTTP 401 — check [carbon] username/password (or JOULED_CARBON_USERNAME/JOULED_CARBON_PASSWORD)"
            ) from None
        tok = expect_dict(obj, "watttime /login").get("token")
        if not isinstance(tok, str) or not tok:
            raise ProviderError("watttime /login: unexpected answer, no 'token'")
        self.logins += 1
        self._token, self._token_at = tok, self._mono()
        return tok

    def _bearer(self) -> str:
        if self._token is None or self._mono() - self._token_at >= self.token_refresh_s:
            return self._login()
        return self._token

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            return self.fetcher.get_json(path, params, {"Authorization": f"Bearer {self._bearer()}"})
        except HttpAuthError:
            # the token expired early or was revoked: log in again, once
            tok = self._login()
            try:
                return self.fetcher.get_json(path, params, {"Authorization": f"Bearer {tok}"})
            except HttpAuthError:
                raise AuthError(f"watttime GET {path}: HTTP 401 even with a fresh token — check the account's plan") from None

    # ---- parsing ----
    def _series(self, obj: Any, zone: str, what: str, *, forecast: bool) -> list[CarbonReading]:
        d = expect_dict(obj, what)
        raw_meta = d.get("meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        units = str(meta.get("units") or "")
        now = self._now_ns()
        out = []
        for item in expect_list(d.get("data"), what):
            p = expect_dict(item, what)
            t = expect_time_ns(p, "point_time", what)
            v = expect_num(p, "value", what)
            age = 0.0 if forecast else max(0.0, (now - t) / 1e9)
            if units == "lbs_co2_per_mwh":
                r = CarbonReading(
                    t,
                    zone,
                    self.name,
                    v * LBS_PER_MWH_TO_G_PER_KWH,
                    forecast=forecast,
                    age_s=age,
                    fetched_at_ns=now,
                    duration_s=300.0,
                    note=f"{self.signal_type} (marginal)",
                )
            elif units == "percentile":
                r = CarbonReading(
                    t,
                    zone,
                    self.name,
                    None,
                    forecast=forecast,
                    age_s=age,
                    percentile=v,
                    fetched_at_ns=now,
                    duration_s=300.0,
                    note=INDEX_NOTE,
                )
            else:
                raise ProviderError(f"{what}: unexpected answer, meta.units = {units!r} (expected lbs_co2_per_mwh)")
            out.append(r)
        return out

    # ---- the interface ----
    def _index(self, zone: str) -> CarbonReading:
        what = f"watttime signal-index {zone}"
        pts = self._series(
            self._get("/v3/signal-index", {"region": zone, "signal_type": self.signal_type}), zone, what, forecast=False
        )
        if not pts:
            raise ProviderError(f"{what}: unexpected answer, no data points")
        return pts[-1]

    def current(self, zone: str) -> CarbonReading:
        cached = self.cache.get(("current", zone))
        if cached is not None:
            return cached.served_at(self._now_ns())
        if self.index_only:
            r = self._index(zone)
        else:
            try:
                fc = self.forecast(zone)
            except NotOffered:
                r = self._index(zone)
            else:
                now = self._now_ns()
                in_force = [p for p in fc if p.time_ns <= now] or fc[:1]
                if not in_force:
                    raise ProviderError(f"watttime forecast {zone}: unexpected answer, no data points")
                p = in_force[-1]
                r = CarbonReading(
                    p.time_ns,
                    zone,
                    self.name,
                    p.intensity_g_per_kwh,
                    age_s=max(0.0, (now - p.time_ns) / 1e9),
                    fetched_at_ns=now,
                    duration_s=p.duration_s,
                    note=p.note,
                )
        self.cache.put(("current", zone), r, self.ttl_s)
        return r

    def history(self, zone: str, start: datetime | None = None, end: datetime | None = None) -> list[CarbonReading]:
        e = end or datetime.now(UTC)
        s = start or e - timedelta(days=1)
        params = {"region": zone, "signal_type": self.signal_type, "start": _iso(s), "end": _iso(e)}
        try:
            obj = self._get("/v3/historical", params)
        except HttpError as err:
            if err.status in (403, 404):
                raise NotOffered(f"watttime historical {zone}: not in this account's plan ({err})") from None
            raise
        return self._series(obj, zone, f"watttime historical {zone}", forecast=False)

    def forecast(self, zone: str) -> list[CarbonReading]:
        cached = self.cache.get(("forecast", zone))
        if cached is not None:
            return list(cached)
        try:
            obj = self._get("/v3/forecast", {"region": zone, "signal_type": self.signal_type})
        except HttpError as err:
            if err.status in (403, 404):
                raise NotOffered(f"watttime forecast {zone}: not in this account's plan ({err})") from None
            raise
        out = self._series(obj, zone, f"watttime forecast {zone}", forecast=True)
        self.cache.put(("forecast", zone), out, self.ttl_s)
        return out
