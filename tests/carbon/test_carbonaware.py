"""Carbon Aware SDK web API against a real local HTTP server."""

from __future__ import annotations

from datetime import UTC, datetime

from jouled.carbon.base import dt_to_ns
from jouled.carbon.carbonaware import CarbonAwareSdk
from jouled.carbon.http import HttpFetcher

from .conftest import FakeServer, Mono, Req, Resp, Sleeps

NOW_NS = dt_to_ns(datetime(2024, 5, 1, 10, 40, tzinfo=UTC))


def test_bylocation_and_forecast(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    def h(req: Req) -> Resp:
        if req.path == "/emissions/bylocation":
            assert req.query["location"] == "eastus"
            return Resp(
                200,
                [
                    {"location": "eastus", "time": "2024-05-01T10:00:00+00:00", "rating": 410.5, "duration": "01:00:00"},
                    {"location": "eastus", "time": "2024-05-01T09:00:00+00:00", "rating": 420.0, "duration": "01:00:00"},
                ],
            )
        if req.path == "/emissions/forecasts/current":
            return Resp(
                200,
                [
                    {
                        "generatedAt": "2024-05-01T10:35:00Z",
                        "location": "eastus",
                        "windowSize": 0,
                        "forecastData": [
                            {"location": "eastus", "timestamp": f"2024-05-01T{11 + i}:00:00Z", "duration": 60, "value": 300.0 + i}
                            for i in range(5)
                        ],
                    }
                ],
            )
        return Resp(404, {"error": req.path})

    server.handler = h
    ca = CarbonAwareSdk(
        server.url, fetcher=HttpFetcher("carbonaware", server.url, sleep=sleeps), now_ns=lambda: NOW_NS, monotonic=mono
    )
    r = ca.current("eastus")
    assert r.intensity_g_per_kwh == 410.5 and r.age_s == 2400 and r.duration_s == 3600
    q = server.requests[0].query
    assert q["time"] == "2024-05-01T08:40:00Z" and q["toTime"] == "2024-05-01T10:40:00Z"
    fc = ca.forecast("eastus")
    assert [x.intensity_g_per_kwh for x in fc] == [300, 301, 302, 303, 304] and fc[0].duration_s == 3600
    assert all(x.forecast for x in fc)
    hist = ca.history("eastus")
    assert [x.intensity_g_per_kwh for x in hist] == [420.0, 410.5]  # sorted by time
