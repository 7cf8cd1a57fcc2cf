"""The daemon as a real subprocess, markers through a real Mosquitto that restarts mid-run: none lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jouled.store.sqlite import SqliteStore, sqlite_url
from tests.brokers import mosquitto_available, start_mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.skipif(not mosquitto_available(), reason="needs mosquitto")]


def _stored(db: Path, run: str) -> int:
    if not db.exists():
        return 0
    return len(SqliteStore(db, readonly=True).read_markers(run))


def _wait(pred, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_broker_restart_loses_no_marker(tmp_path: Path) -> None:
    from jouled.trainer.markers import MarkerClient

    broker = start_mosquitto(persistence=True)
    db = tmp_path / "log.db"
    env = dict(os.environ, JOULED_MQTT_URL=broker.url, XDG_DATA_HOME=str(tmp_path))
    daemon = subprocess.Popen([sys.executable, "-m", "jouled.cli", "run", "--source", "estimate", "--rate", "20",
                               "--store", sqlite_url(db)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    client = MarkerClient(broker.url, host="e2e", spool_path=tmp_path / "spool")
    try:
        assert _wait(lambda: (tmp_path / "log.status.json").exists(), 20)
        time.sleep(1.0)  # subscribed
        r = client.run("e2e-run").start()
        for n in range(5):
            with r.epoch(n):
                pass
        assert _wait(lambda: _stored(db, "e2e-run") == 11, 15)
        broker.stop()  # the broker goes away mid-run: the client spools, the daemon reconnects in a loop
        for n in range(5, 10):
            with r.epoch(n):
                pass
        r.end()
        time.sleep(1.0)
        broker.start()
        assert client.flush(timeout_s=30)
        assert _wait(lambda: _stored(db, "e2e-run") == 22, 30), _stored(db, "e2e-run")
    finally:
        client.close(timeout_s=5)
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
        broker.close()
    assert daemon.returncode == 0, err[-2000:]
    ms = SqliteStore(db, readonly=True).read_markers("e2e-run")
    assert [m.seq for m in ms] == list(range(22))
    assert [m.epoch for m in ms if m.scope == "epoch" and m.event == "start"] == list(range(10))
