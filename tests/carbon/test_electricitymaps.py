"""Electricity Maps v3 against a real local HTTP server: parsing, envelopes, cache, retries, 429, outages."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from jouled.carbon.base import NotOffered, ProviderError, dt_to_ns
from jouled.carbon.electricitymaps import ElectricityMaps
from jouled.carbon.http import HttpFetcher
from jouled.carbon.resilient import Resilient
from jouled.carbon.trace import load_trace

from .conftest import DATA, FakeServer, Mono, Resp, Sleeps, need

NOW = datetime(2022, 6, 1, 12, 20, tzinfo=UTC)
NOW_NS = dt_to_ns(NOW)


def iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def latest(ci: float = 433.0, t: str = "2022-06-01T12:00:00.000Z", **kw: object) -> dict[str, object]:
    return {
        "zone": "DE",
        "carbonIntensity": ci,
        "datetime": t,
        "updatedAt": "2022-06-01T12:15:02.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
        "estimationMethod": None,
        **kw,
    }


def make(server: FakeServer, sleeps: Sleeps, mono: Mono, **kw: object) -> ElectricityMaps:
    f = HttpFetcher(
        "electricitymaps",
        server.url,
        timeout_s=kw.pop("timeout_s", 2.0),  # type: ignore[arg-type]
        retries=kw.pop("retries", 2),
        sleep=sleeps,
    )  # type: ignore[arg-type]
    return ElectricityMaps("tok-123", fetcher=f, now_ns=lambda: NOW_NS, monotonic=mono, **kw)  # type: ignore[arg-type]


def test_latest_parsed_with_age_and_auth_header(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(200, latest(isEstimated=True, estimationMethod="TIME_SLICER_AVERAGE"))])
    r = make(server, sleeps, mono).current("DE")
    req = server.requests[0]
    assert req.path == "/v3/carbon-intensity/latest" and req.query == {"zone": "DE"}
    assert req.headers["auth-token"] == "tok-123"
    assert r.intensity_g_per_kwh == 433.0 and r.zone == "DE" and r.provider == "electricitymaps"
    assert r.time == datetime(2022, 6, 1, 12, tzinfo=UTC)
    assert r.age_s == pytest.approx(20 * 60) and r.estimated and not r.stale and not r.forecast
    assert "lifecycle" in r.note and "TIME_SLICER_AVERAGE" in r.note
    p = r.to_point()
    assert (p.time_ns, p.zone, p.provider, p.intensity_g_per_kwh, p.forecast) == (
        r.time_ns,
        "DE",
        "electricitymaps",
        433.0,
        False,
    )


def test_latest_in_data_envelope(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(200, {"data": [latest(400.0, "2022-06-01T11:00:00.000Z"), latest(410.0)]})])
    r = make(server, sleeps, mono).current("DE")
    assert r.intensity_g_per_kwh == 410.0 and r.age_s == pytest.approx(1200)


def test_history_replays_real_trace_values(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    tr = load_trace(need(DATA / "electricitymaps" / "DE_2022_hourly.csv"), "lca")
    end = dt_to_ns(datetime(2022, 6, 1, 12, tzinfo=UTC)) / 1e9
    i1 = int((end - tr.start_s) // 3600) + 1
    rows = [
        {"zone": "DE", "carbonIntensity": float(v), "datetime": iso(t), "isEstimated": False, "emissionFactorType": "lifecycle"}
        for t, v in zip(tr.time_s[i1 - 24 : i1], tr.intensity[i1 - 24 : i1], strict=True)
    ]
    server.script([Resp(200, {"zone": "DE", "history": rows}), Resp(200, {"zone": "DE", "data": rows})])
    em = make(server, sleeps, mono)
    h = em.history("DE")
    assert [r.intensity_g_per_kwh for r in h] == list(tr.intensity[i1 - 24 : i1])
    assert [r.time_s for r in h] == list(tr.time_s[i1 - 24 : i1])
    mono.t += 10_000  # past the history TTL: ask again, this time the newer envelope
    assert [r.intensity_g_per_kwh for r in em.history("DE")] == [r.intensity_g_per_kwh for r in h]
    assert len(server.requests) == 2


def test_forecast_and_not_offered(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    fc = {
        "zone": "DE",
        "forecast": [{"carbonIntensity": 300 + i, "datetime": iso(NOW_NS / 1e9 + 3600 * i)} for i in range(1, 25)],
        "updatedAt": "2022-06-01T12:00:00.000Z",
    }
    server.script([Resp(200, fc)])
    out = make(server, sleeps, mono).forecast("DE")
    assert len(out) == 24 and all(r.forecast for r in out) and out[0].intensity_g_per_kwh == 301
    server.script([Resp(403, {"status": "error", "message": "forecast not in your plan"})])
    with pytest.raises(NotOffered, match="not offered"):
        make(server, sleeps, mono).forecast("DE")


def test_cache_respects_ttl(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(200, latest(433.0)), Resp(200, latest(440.0))])
    em = make(server, sleeps, mono, ttl_current_s=300.0)
    assert em.current("DE").intensity_g_per_kwh == 433.0
    mono.t += 299
    assert em.current("DE").intensity_g_per_kwh == 433.0 and len(server.requests) == 1
    mono.t += 2
    assert em.current("DE").intensity_g_per_kwh == 440.0 and len(server.requests) == 2


def test_429_waits_retry_after_then_succeeds(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(429, {"error": "slow down"}, {"Retry-After": "7"}), Resp(200, latest(401.0))])
    assert make(server, sleeps, mono).current("DE").intensity_g_per_kwh == 401.0
    assert sleeps.calls == [7.0] and len(server.requests) == 2


def test_429_with_too_long_retry_after_is_bounded(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(429, {}, {"Retry-After": "3600"})])
    f = HttpFetcher("electricitymaps", server.url, sleep=sleeps, max_retry_after_s=60)
    em = ElectricityMaps("t", fetcher=f, now_ns=lambda: NOW_NS, monotonic=mono)
    with pytest.raises(ProviderError, match="exceeds the 60 s bound"):
        em.current("DE")
    assert sleeps.calls == [] and len(server.requests) == 1


def test_5xx_retried_with_backoff_then_gives_up(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(500, "boom"), Resp(503, "busy"), Resp(200, latest(399.0))])
    assert make(server, sleeps, mono).current("DE").intensity_g_per_kwh == 399.0
    assert sleeps.calls == [0.5, 1.0]
    server.requests.clear()
    server.script([Resp(500, "boom")])
    with pytest.raises(ProviderError) as e:
        make(server, sleeps, mono).current("DE")
    assert "HTTP 500" in str(e.value) and "3 tries" in str(e.value) and "\n" not in str(e.value)
    assert len(server.requests) == 3


def test_timeout_is_a_provider_error(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(200, latest(), delay_s=1.0)])
    with pytest.raises(ProviderError, match=r"timed out after 0\.2 s"):
        make(server, sleeps, mono, timeout_s=0.2, retries=0).current("DE")


@pytest.mark.parametrize(
    "bad",
    [
        Resp(200, "<html>oops</html>"),
        Resp(200, {"zone": "DE", "carbonIntensity": None, "datetime": "2022-06-01T12:00:00Z"}),
        Resp(200, {"zone": "DE", "carbonIntensity": 1.0, "datetime": "yesterday"}),
        Resp(200, [1, 2, 3]),
    ],
)
def test_garbage_is_a_provider_error(server: FakeServer, sleeps: Sleeps, mono: Mono, bad: Resp) -> None:
    server.script([bad])
    with pytest.raises(ProviderError) as e:
        make(server, sleeps, mono).current("DE")
    assert "\n" not in str(e.value)


def test_outage_keeps_last_value_with_age_and_one_warning(
    server: FakeServer, sleeps: Sleeps, mono: Mono, caplog: pytest.LogCaptureFixture
) -> None:
    now = [NOW_NS]
    f = HttpFetcher("electricitymaps", server.url, retries=0, sleep=sleeps)
    em = ElectricityMaps("t", fetcher=f, now_ns=lambda: now[0], monotonic=mono, ttl_current_s=0)
    res = Resilient(em, fallback_g_per_kwh=999.0, now_ns=lambda: now[0])
    server.script(
        [
            Resp(200, latest(433.0)),
            Resp(500, "down"),
            Resp(200, "garbage{"),
            Resp(502, "x"),
            Resp(200, latest(420.0, "2022-06-01T13:00:00.000Z")),
        ]
    )
    first = res.current("DE")
    assert not first.stale and first.intensity_g_per_kwh == 433.0
    caplog.set_level(logging.DEBUG, logger="jouled.carbon")
    ages = []
    for _ in range(3):
        now[0] += 600 * 10**9
        r = res.current("DE")
        assert r.stale and r.intensity_g_per_kwh == 433.0 and r.time_ns == first.time_ns
        ages.append(r.age_s)
    assert ages == [pytest.approx(first.age_s + 600 * k) for k in (1, 2, 3)]
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "electricitymaps" in warnings[0].getMessage() and "stale" in warnings[0].getMessage()
    fresh = res.current("DE")
    assert not fresh.stale and fresh.intensity_g_per_kwh == 420.0
    assert any("recovered" in rec.getMessage() for rec in caplog.records)


def test_outage_without_last_value_uses_fallback_or_raises(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(500, "down")])
    f = HttpFetcher("electricitymaps", server.url, retries=0, sleep=sleeps)
    em = ElectricityMaps("t", fetcher=f, now_ns=lambda: NOW_NS, monotonic=mono)
    r = Resilient(em, fallback_g_per_kwh=350.0, now_ns=lambda: NOW_NS).current("DE")
    assert r.intensity_g_per_kwh == 350.0 and r.stale and r.estimated and "fallback" in r.note
    with pytest.raises(ProviderError):
        Resilient(em).current("DE")


def test_not_offered_passes_through_resilient(server: FakeServer, sleeps: Sleeps, mono: Mono) -> None:
    server.script([Resp(403, {"message": "plan"})])
    em = make(server, sleeps, mono)
    with pytest.raises(NotOffered):
        Resilient(em, fallback_g_per_kwh=1.0).forecast("DE")
