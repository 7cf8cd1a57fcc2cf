"""The `carbon` CLI, the provider factory (names, secrets from file/env) and poll_to_store into a real SQLite store."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.carbon import (
    PROVIDERS,
    ConstantProvider,
    ManualClock,
    Resilient,
    TraceProvider,
    load_trace,
    make_provider,
    poll_to_store,
)
from jouled.carbon.electricitymaps import ElectricityMaps
from jouled.carbon.watttime import WattTime
from jouled.carbon_cli import carbon_app
from jouled.config import CarbonConfig
from jouled.errors import UserError

from .conftest import DATA, FakeServer, Req, Resp, need

runner = CliRunner()


def cfg_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "jouled.toml"
    p.write_text(body)
    return p


def test_make_provider_names_and_secrets(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        make_provider(CarbonConfig(provider="electricitymap"), environ={})
    assert all(n in e.value.message for n in PROVIDERS)
    with pytest.raises(UserError, match="token_file"):
        make_provider(CarbonConfig(provider="electricitymaps"), environ={})
    tok = tmp_path / "tok"
    tok.write_text("secret-from-file\n")
    em = make_provider(CarbonConfig(provider="electricitymaps", token_file=str(tok)), environ={"JOULED_CARBON_TOKEN": "x"})
    assert isinstance(em, ElectricityMaps) and em.headers == {"auth-token": "secret-from-file"}
    em2 = make_provider(CarbonConfig(provider="electricitymaps"), environ={"JOULED_CARBON_TOKEN": "env-tok"})
    assert isinstance(em2, ElectricityMaps) and em2.headers == {"auth-token": "env-tok"}
    with pytest.raises(UserError, match="credentials"):
        make_provider(CarbonConfig(provider="watttime"), environ={})
    wt = make_provider(CarbonConfig(provider="watttime"), environ={"JOULED_CARBON_USERNAME": "u", "JOULED_CARBON_PASSWORD": "p"})
    assert isinstance(wt, WattTime) and (wt.username, wt.password) == ("u", "p")
    with pytest.raises(UserError, match=r"\[carbon\] url"):
        make_provider(CarbonConfig(provider="carbonaware"), environ={})
    with pytest.raises(UserError, match="none configured"):
        make_provider(CarbonConfig(), environ={})
    c = make_provider(CarbonConfig(constant_g_per_kwh=300), environ={}, resilient=True, fallback_g_per_kwh=1.0)
    assert isinstance(c, Resilient) and isinstance(c.inner, ConstantProvider)
    assert c.current("X").intensity_g_per_kwh == 300


def test_cli_now_against_local_ukci(server: FakeServer, tmp_path: Path) -> None:
    server.script(
        [
            Resp(
                200,
                {
                    "data": [
                        {
                            "from": "2024-01-20T12:00Z",
                            "to": "2024-01-20T12:30Z",
                            "intensity": {"forecast": 180, "actual": 171, "index": "moderate"},
                        }
                    ]
                },
            )
        ]
    )
    cfg = cfg_file(tmp_path, f'[carbon]\nprovider = "ukci"\nzone = "GB"\nurl = "{server.url}"\n')
    res = runner.invoke(carbon_app, ["now", "--config", str(cfg), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out[0]["intensity_g_per_kwh"] == 171 and out[0]["zone"] == "GB" and out[0]["provider"] == "ukci"
    res = runner.invoke(carbon_app, ["now", "--config", str(cfg)])
    assert res.exit_code == 0 and "171.0" in res.output and "ukci" in res.output


def test_cli_provider_down_is_one_line_exit_2(server: FakeServer, tmp_path: Path) -> None:
    server.script([Resp(200, "not json")])
    cfg = cfg_file(tmp_path, f'[carbon]\nprovider = "ukci"\nurl = "{server.url}"\n')
    res = runner.invoke(carbon_app, ["now", "--config", str(cfg), "--zone", "GB"])
    assert res.exit_code == 2 and "garbage" in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if "garbage" in ln]) == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["now", "--provider", "nope", "--zone", "DE"], "unknown"),
        (["now", "--provider", "ukci", "--zone", "FR"], "GB-1"),
        (["now", "--provider", "ukci"], "no zone"),
        (["now", "--provider", "ukci", "--zone", "GB", "--format", "xml"], "--format"),
        (["history", "--provider", "ukci", "--zone", "GB", "--start", "tomorrow"], "not a time"),
        (["now", "--trace", "/nonexistent/trace.csv"], "file not found"),
    ],
)
def test_cli_bad_input_is_a_one_line_user_error(tmp_path: Path, args: list[str], words: str) -> None:
    cfg = cfg_file(tmp_path, "")
    res = runner.invoke(carbon_app, [*args, "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert words in res.output and "Traceback" not in res.output


def test_cli_trace_history_and_forecast(tmp_path: Path) -> None:
    trace = need(DATA / "electricitymaps" / "GB_2022_hourly.csv")
    cfg = cfg_file(tmp_path, "")
    res = runner.invoke(
        carbon_app, ["forecast", "--trace", str(trace), "--column", "lca", "--format", "json", "--config", str(cfg)]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    tr = load_trace(trace, "lca")
    # the default clock replays from the trace start: the forecast is the next 24 hours after it
    assert [o["intensity_g_per_kwh"] for o in out] == list(tr.intensity[1:25])
    assert all(o["forecast"] and "perfect foresight" in o["note"] and "lca" in o["note"] for o in out)
    res = runner.invoke(
        carbon_app,
        [
            "history",
            "--trace",
            str(trace),
            "--start",
            "2022-03-01T00:00:00Z",
            "--end",
            "2022-03-01T05:00:00Z",
            "--format",
            "json",
            "--config",
            str(cfg),
        ],
    )
    # the trace clock sits at the start of 2022, so nothing after it is history: an empty window is exit 1
    # with one line saying so (not an empty table and exit 0)
    assert res.exit_code == 1, res.output
    assert "no intensity" in res.output and "--at" in res.output
    res = runner.invoke(
        carbon_app,
        [
            "history",
            "--trace",
            str(trace),
            "--at",
            "2022-03-01T05:30:00Z",
            "--start",
            "2022-03-01T00:00:00Z",
            "--format",
            "json",
            "--config",
            str(cfg),
        ],
    )
    assert res.exit_code == 0, res.output
    i = int((datetime(2022, 3, 1, tzinfo=UTC).timestamp() - tr.start_s) // 3600)
    direct = load_trace(trace)
    assert [o["intensity_g_per_kwh"] for o in json.loads(res.output)] == list(direct.intensity[i : i + 6])
    res = runner.invoke(
        carbon_app, ["now", "--provider", "ukci", "--zone", "GB", "--at", "2022-03-01T00:00:00Z", "--config", str(cfg)]
    )
    assert res.exit_code == 2 and "only a trace" in res.output


class ListStore:
    def __init__(self) -> None:
        self.points: list[object] = []

    def write_carbon(self, points: list[object]) -> int:
        self.points.extend(points)
        return len(points)


def test_poll_to_store_writes_each_new_value_once(tmp_path: Path) -> None:
    from jouled.store.sqlite import SqliteStore

    tr = load_trace(need(DATA / "electricitymaps" / "DE_2022_hourly.csv"))
    clock = ManualClock(tr.start_s)
    provider = TraceProvider(tr, clock)
    store = SqliteStore(tmp_path / "j.db")
    stop = threading.Event()
    ticks = [0]

    real_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        """Advance the trace clock 30 min per poll; stop after 6 polls (3 trace hours)."""
        ticks[0] += 1
        clock.advance(1800)
        if ticks[0] >= 6:
            stop.set()
        return real_wait(0)

    stop.wait = wait  # type: ignore[method-assign]
    n = poll_to_store(provider, "DE", store, 0.0, stop)
    pts = store.read_carbon("DE")
    assert n == 3 and [p.intensity_g_per_kwh for p in pts] == list(tr.intensity[:3])
    assert [p.time_ns for p in pts] == [int(t * 1e9) for t in tr.time_s[:3]]


def test_poll_to_store_survives_outage_and_skips_stale(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    from jouled.carbon.http import HttpFetcher
    from jouled.carbon.ukci import UkCarbonIntensity

    answers = iter(
        [
            Resp(
                200,
                {
                    "data": [
                        {
                            "from": "2024-01-20T12:00Z",
                            "to": "2024-01-20T12:30Z",
                            "intensity": {"forecast": 180, "actual": 170, "index": "moderate"},
                        }
                    ]
                },
            ),
            Resp(500, "down"),
            Resp(500, "down"),
        ]
    )

    def h(req: Req) -> Resp:
        return next(answers, Resp(500, "down"))

    server.handler = h
    uk = UkCarbonIntensity(fetcher=HttpFetcher("ukci", server.url, retries=0), max_ttl_s=0)
    uk.cache.put = lambda *a, **k: None  # type: ignore[method-assign]  # poll every time
    store = ListStore()
    stop = threading.Event()
    calls = [0]
    real_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        calls[0] += 1
        if calls[0] >= 4:
            stop.set()
        return real_wait(0)

    stop.wait = wait  # type: ignore[method-assign]
    n = poll_to_store(Resilient(uk), "GB", store, 0.0, stop)
    assert n == 1 and len(store.points) == 1  # the stale repeats are not stored
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
