"""Sources come back: a LAN meter unplugged mid-run or absent at start is read again within seconds (real
`jouled run`, a WT310 on a real TCP socket through pyvisa-py), while the estimate source keeps its rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from jouled.config import Config
from jouled.daemon.service import Daemon
from jouled.sampler import BACKOFF_MAX_S, backoff_s
from jouled.store.sqlite import SqliteStore
from tests.daemon.fakes import ScriptedSource
from tests.faults.procs import meter_recovery


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff_s(n) for n in range(1, 40) for _ in range(20)]
    assert max(delays) <= BACKOFF_MAX_S <= 5.0
    late = [backoff_s(30) for _ in range(200)]
    assert min(late) >= BACKOFF_MAX_S / 2 and len(set(late)) > 100  # jitter: no two daemons retry in step


class ComesLater(ScriptedSource):
    """Absent until ``after_s``, then a device like any other; re-probed at its own (short) interval."""

    open_retry_s = 0.2

    def __init__(self, after_s: float) -> None:
        super().__init__("later")
        self.at = time.monotonic() + after_s

    def open(self):  # type: ignore[no-untyped-def]
        self.unavailable = "no device yet — plug it in" if time.monotonic() < self.at else ""
        return super().open()


def test_source_absent_at_start_is_reprobed(tmp_path: Path) -> None:
    later, ok = ComesLater(after_s=0.6), ScriptedSource("ok")
    cfg = Config()
    cfg.daemon.host = "h"
    d = Daemon(cfg, [(later, 0.02), (ok, 0.02)], SqliteStore(tmp_path / "log.db"), tmp_path / "status.json")  # type: ignore[list-item]

    seen: list[dict] = []  # type: ignore[type-arg]

    async def main() -> dict:  # type: ignore[type-arg]
        task = asyncio.create_task(d.run(duration_s=2.0))
        await asyncio.sleep(0.3)
        seen.append(next(s for s in d.sampler.health() if s["name"] == "later"))
        return await task

    asyncio.run(main())
    h = {s["name"]: s for s in d.sampler.health()}
    assert seen[0]["state"] == "unavailable" and seen[0]["next_try_s"] is not None and seen[0]["next_try_s"] <= 0.2
    assert later.opens >= 2 and later.reads > 30  # opened on a re-probe, then sampled
    assert h["ok"]["delivered"] > 80


def test_meter_unplugged_and_absent_at_start_comes_back_within_5_s(tmp_path: Path) -> None:
    pytest.importorskip("pyvisa_py")
    r = meter_recovery(tmp_path, outages=1, outage_s=4.0, absent_s=3.0)
    assert r["absent_state"]["state"] == "unavailable" and r["absent_state"]["next_try_s"] is not None
    assert r["absent_at_start_recovery_s"] <= 5.0, r
    assert r["retrying_status"][0]["state"] == "retrying" and r["retrying_status"][0]["next_try_s"] is not None
    assert r["recovery_max_s"] <= 5.0, r
    assert min(r["estimate_rate_during_outage_hz"]) >= 90.0, r  # the others keep their rate (100 Hz)
