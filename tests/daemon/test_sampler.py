"""The sampler and daemon loop with real threads, a real asyncio loop and a real SQLite log."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jouled.config import Config
from jouled.daemon.service import Daemon
from jouled.model import Reading
from jouled.sampler import Sampler
from jouled.store.sqlite import SeriesKey, SqliteStore
from tests.daemon.fakes import ScriptedSource


def _daemon(tmp_path: Path, sources: list[tuple[ScriptedSource, float]]) -> Daemon:
    cfg = Config()
    cfg.daemon.host = "h"
    cfg.daemon.flush_interval_s = 0.1
    cfg.daemon.health_interval_s = 0.1
    return Daemon(cfg, sources, SqliteStore(tmp_path / "log.db"), tmp_path / "status.json")  # type: ignore[arg-type]


def _sampled(src: ScriptedSource, period_s: float, seconds: float) -> tuple[Sampler, dict[str, Any]]:
    """One source sampled for `seconds` by real threads, then stopped: the sampler (to drain) and its health."""
    s = Sampler([(src, period_s)])  # type: ignore[list-item]
    s.start()
    time.sleep(seconds)
    s.stop()
    return s, s.health()[0]


def test_sampler_rate_and_jitter() -> None:
    src = ScriptedSource()
    s, h = _sampled(src, 0.01, 1.0)
    assert 80 <= h["delivered"] <= 110
    assert h["delivered_ratio"] > 0.95
    assert h["jitter_p99_ms"] < 20  # loose: the CI box is shared; bench/ measures the real figure
    assert src.closed.is_set()
    batches = s.drain("h")
    assert sum(len(b) for b in batches) == h["readings"]
    assert len(batches) == 1 and batches[0].key.host == "h"
    assert np.all(np.diff(batches[0].time_ns) > 0)


def test_daemon_stores_everything_read_and_writes_status(tmp_path: Path) -> None:
    a, b = ScriptedSource("a", devices=2), ScriptedSource("b")
    d = _daemon(tmp_path, [(a, 0.02), (b, 0.05)])
    final = asyncio.run(d.run(duration_s=1.0))
    st = d.store
    n_a = sum(len(st.read_series(SeriesKey("h", "a", f"dev{i}"))) for i in range(2))
    n_b = len(st.read_series(SeriesKey("h", "b", "dev0")))
    assert n_a == 2 * (a.reads) and n_b == b.reads  # nothing read is lost, the final flush included
    assert final["store"]["written"] == n_a + n_b and final["store"]["pending"] == 0
    status = json.loads((tmp_path / "status.json").read_text())
    assert {s["name"] for s in status["sources"]} == {"a", "b"}
    assert all(s["state"] == "stopped" for s in status["sources"])


def test_failing_device_retries_while_others_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jouled.sampler.BACKOFF_MIN_S", 0.05)
    bad = ScriptedSource("bad", fail_reads=range(2, 6))
    good = ScriptedSource("good")
    d = _daemon(tmp_path, [(bad, 0.02), (good, 0.02)])
    asyncio.run(d.run(duration_s=2.0))
    hb = next(s for s in d.sampler.health() if s["name"] == "bad")
    hg = next(s for s in d.sampler.health() if s["name"] == "good")
    assert hb["errors"] == 4 and "stopped answering" in hb["last_error"]
    assert bad.opens >= 2  # reopened after repeated failures
    assert bad.reads > 6  # came back after the failures
    assert hg["errors"] == 0 and hg["delivered"] > 80
    # the good source kept sampling while the bad one backed off: no hole > 0.2 s in its series
    t = d.store.read_series(SeriesKey("h", "good", "dev0")).time_ns
    assert np.max(np.diff(t)) < 0.2e9


def test_unavailable_source_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = ScriptedSource("gone", unavailable="no device — plug it in")
    ok = ScriptedSource("ok")
    d = _daemon(tmp_path, [(gone, 0.05), (ok, 0.05)])
    asyncio.run(d.run(duration_s=0.5))
    h = {s["name"]: s for s in d.sampler.health()}
    assert h["gone"]["state"] == "unavailable" and "plug it in" in h["gone"]["reason"]
    assert sum("gone unavailable" in r.getMessage() for r in caplog.records) == 1
    assert h["ok"]["delivered"] > 5


def test_snapshot_reads_counters_at_once() -> None:
    src = ScriptedSource()
    s = Sampler([(src, 1.0)])  # type: ignore[list-item]
    s.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    s.snapshot()
    while src.counter_reads == 0 and time.monotonic() - t0 < 1:
        time.sleep(0.001)
    waited = time.monotonic() - t0
    s.stop()
    assert src.counter_reads == 1 and waited < 0.1  # not the 1 s period


def test_store_outage_keeps_samples_and_retries(tmp_path: Path) -> None:
    src = ScriptedSource()
    d = _daemon(tmp_path, [(src, 0.01)])
    real = d.store.write_batches
    calls = {"n": 0}

    def flaky(*args, **kw):  # the disk fails for the first three flushes
        calls["n"] += 1
        if calls["n"] <= 3:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args, **kw)

    d.store.write_batches = flaky  # type: ignore[method-assign]
    asyncio.run(d.run(duration_s=1.0))
    assert d.store_health.write_errors == 3
    assert len(d.store.read_series(SeriesKey("h", "fake", "dev0"))) == src.reads


def test_partial_read_keeps_healthy_devices() -> None:
    from jouled.sources.common import PartialRead

    class HalfBroken(ScriptedSource):
        def read(self):  # type: ignore[no-untyped-def]
            good = super().read()
            if self.reads == 3:
                raise PartialRead(self.name, good[:1], {"dev1": "GPU is lost — reset it"})
            return good

    src = HalfBroken(devices=2)
    s, h = _sampled(src, 0.02, 0.3)
    per_device = {b.key.device: len(b) for b in s.drain("h")}
    assert h["errors"] == 1 and "GPU is lost" in h["last_error"]
    assert per_device["dev0"] == src.reads  # dev0 never missed a read
    assert per_device["dev1"] == src.reads - 1


class QuickSource(ScriptedSource):
    """A source that says its reads never wait: it shares the sampling thread."""

    blocking = False


def test_non_blocking_sources_share_one_thread_and_a_failing_one_holds_no_one_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jouled.sampler.BACKOFF_MIN_S", 0.05)
    bad = QuickSource("bad", fail_reads=range(2, 6))
    good = QuickSource("good", devices=2)
    meter = ScriptedSource("meter")  # may block: a thread of its own
    d = _daemon(tmp_path, [(bad, 0.02), (good, 0.02), (meter, 0.05)])
    assert sorted(len(t.runners) for t in d.sampler.threads) == [1, 2]
    asyncio.run(d.run(duration_s=2.0))
    h = {s["name"]: s for s in d.sampler.health()}
    assert h["bad"]["errors"] == 4 and bad.opens >= 2 and bad.reads > 6  # backed off, reopened, came back
    assert h["good"]["errors"] == 0 and h["good"]["delivered"] > 80
    # the backoff of its thread-mate never blocked the good source: no hole > 0.2 s in its series
    t = d.store.read_series(SeriesKey("h", "good", "dev1")).time_ns
    assert np.max(np.diff(t)) < 0.2e9
    assert all(s["state"] == "stopped" for s in h.values()) and good.closed.is_set() and meter.closed.is_set()


def test_shared_thread_can_be_turned_off(tmp_path: Path) -> None:
    cfg = Config()
    cfg.daemon.shared_sampling_thread = False
    d = Daemon(cfg, [(QuickSource("a"), 0.1), (QuickSource("b"), 0.1)], SqliteStore(tmp_path / "log.db"),  # type: ignore[list-item]
               tmp_path / "status.json")
    assert [len(t.runners) for t in d.sampler.threads] == [1, 1]


class _MalformedSource(ScriptedSource):
    """Every third read adds, after its good reading, one whose power is text (a third-party source's bug)."""

    def read(self) -> list[Reading]:
        out = super().read()
        if self.reads % 3 == 0:
            out = [*out, Reading(out[0].time_ns + 1, out[0].device, "lots", 1.0)]  # type: ignore[arg-type]
        return out


def test_a_malformed_reading_is_an_error_and_the_source_samples_on() -> None:
    s, h = _sampled(_MalformedSource(), 0.01, 0.5)
    assert h["errors"] >= 5 and "not numeric" in h["last_error"] and "device dev0" in h["last_error"]
    (b,) = s.drain("h")
    assert len(b) == h["readings"] >= 20 and np.all(np.asarray(b.power_w) == ScriptedSource.POWER_W)


def test_wake_is_one_pending_wake_up_that_any_thread_gives() -> None:
    from jouled.sampler import Wake

    w = Wake()
    assert w.wait(0.0) is False  # nothing pending: the timeout passes
    w.set()
    w.set()  # a second set while one is pending is the same wake-up (no error, no second one)
    assert w.wait(0.0) is True
    assert w.wait(0.0) is False
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(w.wait(30.0)))
    t.start()
    w.set()  # from another thread: the waiter returns long before its timeout
    t.join(10.0)
    assert got == [True]
