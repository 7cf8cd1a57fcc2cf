"""Markers a client left spooled (no broker answered, then it exited) reach the log through the daemon: at its
start and on a timer, never from a live client's spool, deduplicated by (run, seq). Real broker, real daemon,
real marker client; and `jouled run` as a process reading the user's spool folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jouled.daemon import spool as spool_mod
from jouled.daemon.app import build_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.store.sqlite import SqliteStore, sqlite_url
from jouled.trainer.markers import MarkerClient
from tests.brokers import free_port, mosquitto_available, start_amqtt, start_mosquitto
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config

pytestmark = pytest.mark.broker


def _spooled_run(spool: Path, run: str, epochs: int = 1) -> None:
    """A training whose broker never answered: every marker stays in the spool when the client exits."""
    dead = f"mqtt://127.0.0.1:{free_port()}"
    c = MarkerClient(dead, host="testhost", spool_path=spool, connect_timeout_s=0.2)
    with c.run(run, gpus=["gpu0"]) as r:
        for n in range(epochs):
            with r.epoch(n):
                time.sleep(0.01)
    assert c.close(timeout_s=0.3) is False  # not delivered: spooled
    assert list(spool.glob("*.jsonl"))


def _wait(pred, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def test_daemon_records_orphaned_spools_at_start_and_on_a_timer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SCAN_PERIOD_S", 0.3)
    spool = tmp_path / "spool"
    _spooled_run(spool, "before", epochs=2)  # 2 run + 4 epoch markers
    broker = start_mosquitto() if mosquitto_available() else start_amqtt()
    try:
        cfg = make_config(tmp_path, broker.url)
        d = build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], spool_dir=spool)
        bg = BackgroundDaemon(d).start()
        store = SqliteStore(cfg.store.path, readonly=True)
        try:
            _wait(lambda: len(store.read_markers("before")) == 6, 15)
            # delivered: the file goes (just after the markers are committed, so wait for it too)
            _wait(lambda: not list(spool.glob("*.jsonl")), 5)
            # a client that is alive (broker unreachable for it) keeps its spool: the daemon does not take it
            live = MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host="testhost", spool_path=spool,
                                connect_timeout_s=0.2)
            live.mark("run", "start", "live")
            assert live.flush(timeout_s=0.5) is False
            time.sleep(1.0)  # three scans
            assert store.read_markers("live") == []
            live.close(timeout_s=0.2)  # it exits with the marker undelivered: now it is the daemon's to record
            _wait(lambda: len(store.read_markers("live")) == 1, 10)
            # a spool left while the daemon runs: the next scan records it
            _spooled_run(spool, "later", epochs=0)
            _wait(lambda: len(store.read_markers("later")) == 2, 10)
            # the counters below move once the file is deleted, just after the commit: a stop in between leaves the
            # file for the next start (deduplicated there), uncounted
            _wait(lambda: not list(spool.glob("*.jsonl")), 5)
        finally:
            final = bg.stop()
        assert final["spool"]["files"] >= 3 and final["spool"]["markers"] == 9
        assert final["markers"]["stored"] == 9 and final["markers"]["broker"] == broker.url
        ms = store.read_markers("before")
        assert [(m.scope, m.event, m.epoch) for m in ms] == [
            ("run", "start", None), ("epoch", "start", 0), ("epoch", "end", 0), ("epoch", "start", 1),
            ("epoch", "end", 1), ("run", "end", None),
        ]
        assert all(m.gpus == ("gpu0",) and m.host == "testhost" for m in ms)
    finally:
        broker.close()


def test_redelivered_spool_is_deduplicated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SCAN_PERIOD_S", 0.2)
    spool = tmp_path / "spool"
    _spooled_run(spool, "twice", epochs=0)
    copy = {p.name: p.read_bytes() for p in spool.glob("*.jsonl")}
    broker = start_mosquitto() if mosquitto_available() else start_amqtt()
    try:
        cfg = make_config(tmp_path, broker.url)
        d = build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], spool_dir=spool)
        bg = BackgroundDaemon(d).start()
        store = SqliteStore(cfg.store.path, readonly=True)
        try:
            _wait(lambda: len(store.read_markers("twice")) == 2 and not list(spool.glob("*.jsonl")), 10)
            for name, data in copy.items():  # the same lines again, as a crash before the delete would leave them
                (spool / name).write_bytes(data)
            _wait(lambda: not list(spool.glob("*.jsonl")), 10)
        finally:
            final = bg.stop()
        assert len(store.read_markers("twice")) == 2
        assert final["markers"]["duplicates"] == 2
    finally:
        broker.close()


def test_jouled_run_reads_the_users_spool_folder(tmp_path: Path) -> None:
    """The CLI daemon, as a process: markers spooled by an earlier `jouled train` reach its log."""
    spool = tmp_path / "state" / "jouled" / "spool"  # default_spool_dir() under XDG_STATE_HOME
    _spooled_run(spool, "from-train", epochs=0)
    env = dict(os.environ)
    env.update({"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state"),
                "JOULED_MQTT_EMBEDDED_PORT": str(free_port()), "JOULED_DAEMON_HOST": "testhost"})
    for k in ("JOULED_CONFIG", "JOULED_STORE", "JOULED_SPOOL_DIR"):
        env.pop(k, None)
    db = tmp_path / "d.db"
    res = subprocess.run([sys.executable, "-m", "jouled.cli", "run", "--duration", "4", "--source", "estimate",
                          "--store", sqlite_url(db)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "recorded 2 spooled marker(s)" in res.stderr
    assert [(m.scope, m.event) for m in SqliteStore(db, readonly=True).read_markers("from-train")] == [
        ("run", "start"), ("run", "end"),
    ]
    assert not list(spool.glob("*.jsonl"))
