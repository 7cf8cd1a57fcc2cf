"""WattTime v3 against a real local HTTP server: login, token refresh (age and 401), MOER units, index-only plans."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from jouled.carbon.base import LBS_PER_MWH_TO_G_PER_KWH, AuthError, NotOffered, dt_to_ns
from jouled.carbon.http import HttpFetcher
from jouled.carbon.watttime import WattTime

from .conftest import FakeServer, Mono, Req, Resp, Sleeps

NOW_NS = dt_to_ns(datetime(2024, 3, 1, 12, 7, tzinfo=UTC))


def pt(minute: int) -> str:
    return f"2024-03-01T12:{minute:02d}:00+00:00"


class WtServer:
    """Issues tokens on /login (Basic alice:pw), accepts only the newest one, and serves v3 data."""

    def __init__(self, server: FakeServer, *, moer: bool = True) -> None:
        self.tokens = 0
        self.valid: str | None = None
        self.moer = moer
        server.handler = self

    def expire(self) -> None:
        self.valid = None

    def __call__(self, req: Req) -> Resp:
        if req.path == "/login":
            if req.headers.get("authorization") != "Basic " + base64.b64encode(b"alice:pw").decode():
                return Resp(401, {"error": "bad credentials"})
            self.tokens += 1
            self.valid = f"tok{self.tokens}"
            return Resp(200, {"token": self.valid})
        if req.headers.get("authorization") != f"Bearer {self.valid}":
            return Resp(401, {"error": "token expired"})
        if req.path == "/v3/forecast":
            if not self.moer:
                return Resp(403, {"error": "forecast not in plan"})
            data = [{"point_time": pt(m), "value": 1000.0 + m} for m in range(0, 60, 5)]
            return Resp(
                200,
                {
                    "data": data,
                    "meta": {
                        "region": req.query["region"],
                        "signal_type": "co2_moer",
                        "units": "lbs_co2_per_mwh",
                        "generated_at": pt(0),
                    },
                },
            )
        if req.path == "/v3/signal-index":
            return Resp(
                200,
                {
                    "data": [{"point_time": pt(5), "value": 73.0}],
                    "meta": {"region": req.query["region"], "signal_type": "co2_moer", "units": "percentile"},
                },
            )
        if req.path == "/v3/historical":
            return Resp(403, {"error": "historical not in plan"})
        return Resp(404, {"error": req.path})


def make(server: FakeServer, mono: Mono, sleeps: Sleeps, user: str = "alice", **kw: object) -> WattTime:
    f = HttpFetcher("watttime", server.url, sleep=sleeps)
    return WattTime(user, "pw", fetcher=f, now_ns=lambda: NOW_NS, monotonic=mono, **kw)  # type: ignore[arg-type]


def test_current_moer_in_g_per_kwh(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    wt = WtServer(server)
    r = make(server, mono, sleeps).current("CAISO_NORTH")
    # in force at 12:07 is the 12:05 point: 1005 lbs/MWh
    assert r.intensity_g_per_kwh == pytest.approx(1005 * 0.45359237)
    assert LBS_PER_MWH_TO_G_PER_KWH == 0.45359237
    assert r.time == datetime(2024, 3, 1, 12, 5, tzinfo=UTC) and r.age_s == pytest.approx(120) and not r.forecast
    assert wt.tokens == 1 and server.requests[1].query == {"region": "CAISO_NORTH", "signal_type": "co2_moer"}


def test_token_refreshed_after_25_minutes(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    wt = WtServer(server)
    w = make(server, mono, sleeps, ttl_s=0)
    w.forecast("CAISO_NORTH")
    mono.t += 24 * 60
    w.forecast("CAISO_NORTH")
    assert wt.tokens == 1
    mono.t += 2 * 60  # 26 min after login: refresh before the 30-min expiry
    w.forecast("CAISO_NORTH")
    assert wt.tokens == 2 and [r.path for r in server.requests].count("/login") == 2


def test_401_triggers_one_relogin(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    wt = WtServer(server)
    w = make(server, mono, sleeps, ttl_s=0)
    w.forecast("CAISO_NORTH")
    wt.expire()  # the server forgot the token early
    out = w.forecast("CAISO_NORTH")
    assert len(out) == 12 and all(p.forecast for p in out) and wt.tokens == 2
    assert [r.path for r in server.requests] == ["/login", "/v3/forecast", "/v3/forecast", "/login", "/v3/forecast"]


def test_bad_credentials_are_an_auth_error(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    WtServer(server)
    with pytest.raises(AuthError, match="username/password"):
        make(server, mono, sleeps, user="mallory").current("CAISO_NORTH")


def test_index_only_plan_reports_the_percentile_not_an_intensity(server: FakeServer, mono: Mono, sleeps: Sleeps) -> None:
    WtServer(server, moer=False)
    w = make(server, mono, sleeps)
    r = w.current("CAISO_NORTH")
    assert r.intensity_g_per_kwh is None and r.index_only and r.percentile == 73.0
    assert "cannot be derived" in r.note
    with pytest.raises(ValueError, match="index-only"):
        r.to_point()
    with pytest.raises(NotOffered):
        w.forecast("CAISO_NORTH")
    with pytest.raises(NotOffered):
        w.history("CAISO_NORTH")
