"""The daemon polls the configured carbon provider into the log, so energy per epoch has carbon per epoch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jouled.errors import UserError
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon

TRACE = Path(__file__).resolve().parents[3] / "shared" / "data" / "carbon" / "electricitymaps" / "DE_2022_hourly.csv"


@pytest.mark.skipif(not TRACE.exists(), reason="needs ../shared/data")
def test_trace_provider_intensity_lands_in_store(tmp_path: Path) -> None:
    from tests.brokers import free_port

    cfg = make_config(tmp_path, "", embedded_port=free_port())
    cfg.carbon.provider = "trace"
    cfg.carbon.trace_file = str(TRACE)
    cfg.carbon.zone = "DE"
    cfg.carbon.poll_interval_s = 0.2
    bg = start_daemon(cfg, [ScriptedSource()])
    try:
        deadline = time.monotonic() + 10
        while not bg.daemon.store.read_carbon("DE") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        status = bg.stop()
    pts = bg.daemon.store.read_carbon("DE")
    assert pts and all(50 < p.intensity_g_per_kwh < 1000 for p in pts)
    assert status["carbon"]["provider"] == "trace"


def test_bad_provider_fails_at_start(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.carbon.provider = "coal-o-meter"
    with pytest.raises(UserError, match="coal-o-meter"):
        start_daemon(cfg, [ScriptedSource()])
