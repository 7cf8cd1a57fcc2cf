"""Markers sent while the store's disk is full are kept, retried and all stored once space returns (real daemon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jouled.daemon.background import BackgroundDaemon
from jouled.daemon.recorder import attach_marker_recorder
from jouled.daemon.service import Daemon
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.reliability.helpers import PageCappedStore, fill, marker, publish, tiny_tmpfs, wait_for

N_MARKERS = 40


def _send_during_outage(d: BackgroundDaemon, port: int, free: Any) -> dict[str, Any]:
    """Send N_MARKERS (a start/end pair per epoch) while the store fails, redeliver some, then lift the fault."""
    rec = d.daemon.recorder
    # ~3 KB of attrs: each marker needs a fresh page, so a page cap cannot be dodged by free space in the last one
    markers = [marker(i, "start" if i % 2 == 0 else "end", epoch=i // 2, attrs={"pad": "x" * 3000})
               for i in range(N_MARKERS)]
    publish(port, list(markers), interval_s=0.02)
    wait_for(lambda: rec.stats.received == N_MARKERS, what="all markers received")
    wait_for(lambda: rec.stats.store_errors > 0, what="the store fault hit a marker write")
    during = rec.stats.as_dict()
    publish(port, markers[:5])  # QoS-1 redeliveries of markers not stored yet: recognised, not lost
    wait_for(lambda: rec.stats.received == N_MARKERS + 5)
    free()
    wait_for(lambda: rec.stats.stored == N_MARKERS and rec.stats.pending == 0, timeout_s=30,
             what=f"all markers stored after the fault: {rec.stats.as_dict()}")
    return during


def test_disk_full_on_a_real_tiny_filesystem_loses_no_marker(tmp_path: Path) -> None:
    try:
        ctx = tiny_tmpfs(tmp_path / "fs", "8m")
        fs = ctx.__enter__()
    except OSError as e:
        pytest.skip(str(e))
    try:
        port = free_port()
        cfg = make_config(fs, "", embedded_port=port)
        cfg.daemon.status_path = str(tmp_path / "status.json")  # not on the full filesystem
        d = start_daemon(cfg, [ScriptedSource(devices=8)], rate_hz=200)
        try:
            wait_for(lambda: d.daemon.store_health.written > 0)
            filler = fill(fs)
            during = _send_during_outage(d, port, filler.unlink)
            health = d.daemon.status()["store"]
            samples_after = d.daemon.store_health.written
            wait_for(lambda: d.daemon.store_health.written > samples_after)  # samples flow again too
        finally:
            d.stop()
        stored = d.daemon.store.read_markers("r1")
    finally:
        ctx.__exit__(None, None, None)
    assert [m.seq for m in stored] == list(range(N_MARKERS))  # 0 lost
    assert during["pending"] > 0 and during["dropped"] == 0
    assert health["write_errors"] > 0
    assert "database or disk is full" in during["last_error"]
    assert "rollback" not in during["last_error"].lower()
    assert d.daemon.recorder.stats.duplicates == 5
    assert d.daemon.recorder.stats.failed == 0
    assert not d.daemon.recorder.stats.warnings  # every start met its end: pairing saw them in order


def test_store_full_by_page_cap_loses_no_marker(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path, "", embedded_port=port)
    store = PageCappedStore(tmp_path / "log.db")
    daemon = Daemon(config=cfg, sources=[(ScriptedSource(devices=8), 0.005)], store=store,
                    status_path=tmp_path / "status.json")
    attach_marker_recorder(daemon)
    d = BackgroundDaemon(daemon).start()
    try:
        wait_for(lambda: daemon.store_health.written > 0)
        page_count = store._conn().execute("PRAGMA page_count").fetchone()[0]
        store.max_pages = page_count

        def lift() -> None:
            store.max_pages = None

        during = _send_during_outage(d, port, lift)
    finally:
        d.stop()
    stored = store.read_markers("r1")
    assert [m.seq for m in stored] == list(range(N_MARKERS))
    assert during["pending"] > 0 and during["dropped"] == 0
    assert "database or disk is full" in during["last_error"]
    assert daemon.recorder.stats.duplicates == 5
    assert daemon.recorder.stats.failed == 0
