"""UK Carbon Intensity against a real local HTTP server: national and regional shapes, paths, zones, cache."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jouled.carbon.base import dt_to_ns
from jouled.carbon.http import HttpFetcher
from jouled.carbon.ukci import UkCarbonIntensity, parse_zone
from jouled.errors import UserError

from .conftest import FakeServer, Mono, Req, Resp, Sleeps

NOW_NS = dt_to_ns(datetime(2024, 1, 20, 12, 10, tzinfo=UTC))


def period(frm: str, to: str, fc: float, actual: float | None, index: str = "moderate") -> dict[str, object]:
    return {"from": frm, "to": to, "intensity": {"forecast": fc, "actual": actual, "index": index}}


def make(server: FakeServer, mono: Mono, sleeps: Sleeps) -> UkCarbonIntensity:
    return UkCarbonIntensity(fetcher=HttpFetcher("ukci", server.url, sleep=sleeps), now_ns=lambda: NOW_NS, monotonic=mono)


def test_national_current_prefers_actual(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    server.script([Resp(200, {"data": [period("2024-01-20T12:00Z", "2024-01-20T12:30Z", 180, 172)]})])
    r = make(server, mono, sleeps).current("GB")
    assert server.requests[0].path == "/intensity"
    assert r.intensity_g_per_kwh == 172 and not r.estimated and r.duration_s == 1800
    assert r.age_s == pytest.approx(600) and "actual" in r.note and "moderate" in r.note


def test_national_current_without_actual_is_the_forecast_flagged_estimated(
    server: FakeServer, mono: Mono, sleeps: Sleeps
) -> None:
    server.script([Resp(200, {"data": [period("2024-01-20T12:00Z", "2024-01-20T12:30Z", 180, None)]})])
    r = make(server, mono, sleeps).current("GB")
    assert r.intensity_g_per_kwh == 180 and r.estimated and "forecast" in r.note


def test_current_cached_until_the_half_hour_ends(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    server.script([Resp(200, {"data": [period("2024-01-20T12:00Z", "2024-01-20T12:30Z", 180, 172)]})])
    uk = make(server, mono, sleeps)
    uk.current("GB")
    mono.t += 19 * 60  # 12:29 in cache time: still the same period
    uk.current("GB")
    assert len(server.requests) == 1
    mono.t += 2 * 60
    uk.current("GB")
    assert len(server.requests) == 2


def test_regional_shapes(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    periods = [period("2024-01-20T12:00Z", "2024-01-20T12:30Z", 95, None, "low")]
    region = {"regionid": 13, "dnoregion": "UKPN London", "shortname": "London", "data": periods}

    def h(req: Req) -> Resp:
        if req.path == "/regional/regionid/13":
            return Resp(200, {"data": [region]})
        if req.path.startswith("/regional/intensity/2024-01-20T12:10Z/fw24h/regionid/13"):
            return Resp(200, {"data": {**region, "data": periods * 3}})
        if req.path == "/regional/intensity/2024-01-19T12:10Z/2024-01-20T12:10Z/regionid/13":
            return Resp(200, {"data": {**region, "data": periods * 2}})
        return Resp(404, {"error": req.path})

    server.handler = h
    uk = make(server, mono, sleeps)
    r = uk.current("GB-13")
    assert r.intensity_g_per_kwh == 95 and r.zone == "GB-13" and r.estimated and "regional forecast" in r.note
    assert len(uk.forecast("gb-13")) == 3 and all(x.forecast for x in uk.forecast("gb-13"))
    assert len(uk.history("GB-13")) == 2


def test_national_forecast_and_history_paths(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    def h(req: Req) -> Resp:
        if req.path == "/intensity/2024-01-20T12:10Z/fw24h":
            return Resp(
                200,
                {
                    "data": [
                        period(f"2024-01-20T{12 + i // 2:02d}:{30 * (i % 2):02d}Z", "2024-01-20T23:59Z", 150 + i, None)
                        for i in range(4)
                    ]
                },
            )
        if req.path == "/intensity/2024-01-20T00:00Z/2024-01-20T06:00Z":
            return Resp(200, {"data": [period("2024-01-20T00:00Z", "2024-01-20T00:30Z", 100, 99)]})
        return Resp(404, {"error": req.path})

    server.handler = h
    uk = make(server, mono, sleeps)
    fc = uk.forecast("GB")
    assert [x.intensity_g_per_kwh for x in fc] == [150, 151, 152, 153] and all(x.forecast for x in fc)
    hist = uk.history("GB", datetime(2024, 1, 20, tzinfo=UTC), datetime(2024, 1, 20, 6, tzinfo=UTC))
    assert [x.intensity_g_per_kwh for x in hist] == [99]


@pytest.mark.parametrize("zone", ["DE", "GB-0", "GB-18", "GB-x", ""])
def test_bad_zone_is_a_user_error(zone: str) -> None:
    with pytest.raises(UserError, match="GB-1"):
        parse_zone(zone)
