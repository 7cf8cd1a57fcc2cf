"""The status file lives outside the store's filesystem and `jouled status` finds it; a full store shows there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.config import Config
from jouled.daemon.background import BackgroundDaemon
from jouled.daemon.recorder import attach_marker_recorder
from jouled.daemon.service import Daemon
from jouled.statusfile import beside_store_path, default_status_path, runtime_dir, status_candidates, status_file_name
from jouled.store.sqlite import sqlite_url
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.reliability.helpers import PageCappedStore, wait_for

runner = CliRunner()


def test_runtime_dir_order(tmp_path: Path) -> None:
    env = {"RUNTIME_DIRECTORY": "/run/jouled:/run/other", "XDG_RUNTIME_DIR": "/run/user/1000", "HOME": str(tmp_path)}
    assert runtime_dir(env) == Path("/run/jouled")  # systemd's RuntimeDirectory= first
    env.pop("RUNTIME_DIRECTORY")
    assert runtime_dir(env) == Path("/run/user/1000/jouled")
    env.pop("XDG_RUNTIME_DIR")
    import os

    expected = Path("/run/jouled") if os.geteuid() == 0 else tmp_path / ".local" / "state" / "jouled"
    assert runtime_dir(env) == expected
    # one file per log, named after it; a user's `jouled status` also looks where the service writes
    a, b = status_file_name(tmp_path / "a" / "jouled.db"), status_file_name(tmp_path / "b" / "jouled.db")
    assert a != b and a.startswith("jouled-") and a.endswith(".status.json")
    cands = status_candidates(tmp_path / "x.db", {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": str(tmp_path)})
    assert cands[0].parent == Path("/run/user/1000/jouled")
    assert Path("/run/jouled") / cands[0].name in cands and cands[-1] == tmp_path / "x.status.json"


def _status(db: Path, monkeypatch: pytest.MonkeyPatch) -> dict:  # type: ignore[type-arg]
    res = runner.invoke(app, ["status", "--format", "json", "--store", sqlite_url(db)])
    assert res.exit_code in (0, 1), res.output
    return dict(json.loads(res.stdout))


def test_status_in_runtime_dir_shows_a_full_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("JOULED_STORE", raising=False)
    port = free_port()
    cfg = Config()
    cfg.daemon.host = "testhost"
    cfg.daemon.flush_interval_s = 0.1
    cfg.daemon.health_interval_s = 0.1
    cfg.mqtt.embedded_port = port
    db = tmp_path / "store" / "log.db"
    db.parent.mkdir()
    store = PageCappedStore(db)
    daemon = Daemon(config=cfg, sources=[(ScriptedSource(devices=8), 0.005)], store=store,
                    status_path=cfg.status_path(db))
    assert daemon.status_path == default_status_path(db) and daemon.status_path.parent == run / "jouled"
    assert daemon.status_copy == beside_store_path(db)
    attach_marker_recorder(daemon)
    d = BackgroundDaemon(daemon).start()
    try:
        wait_for(lambda: daemon.status_path.exists() and daemon.store_health.written > 0)
        store.max_pages = store._conn().execute("PRAGMA page_count").fetchone()[0]  # the store's "disk" is full
        wait_for(lambda: daemon.store_health.write_errors > 2, what="writes failing")
        wait_for(lambda: _status(db, monkeypatch)["store"]["write_errors"] > 2, what="status shows the errors")
        st = _status(db, monkeypatch)
        table = runner.invoke(app, ["status", "--store", sqlite_url(db)], env={"COLUMNS": "200"})
        store.max_pages = None
        wait_for(lambda: daemon.store_health.pending == 0 and not daemon.store_health.last_error, timeout_s=30)
    finally:
        d.stop()
    assert "database or disk is full" in st["store"]["last_error"]
    assert "rollback" not in st["store"]["last_error"].lower()
    assert st["store"]["pending"] > 0  # held in memory, not lost
    assert "write errors" in table.stdout and "database or disk is full" in " ".join(table.stdout.split())
    # the status is in the runtime dir; the copy beside the log is the older/equal one
    assert (run / "jouled" / status_file_name(db)).exists() and beside_store_path(db).exists()


def test_status_reads_the_freshest_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon started elsewhere (the service) wrote one file, an older run another: the fresher one is shown."""
    import os

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    db = tmp_path / "s.db"
    old, new = beside_store_path(db), default_status_path(db)
    new.parent.mkdir(parents=True)
    doc = {"pid": os.getpid(), "host": "h", "uptime_s": 1.0, "sources": [], "store": {"path": str(db), "written": 1}}
    old.write_text(json.dumps({**doc, "store": {"path": str(db), "written": 111}}))
    new.write_text(json.dumps({**doc, "store": {"path": str(db), "written": 222}}))
    os.utime(old, (1, 1))
    assert _status(db, monkeypatch)["store"]["written"] == 222
    os.utime(new, (0, 0))
    os.utime(old, None)
    assert _status(db, monkeypatch)["store"]["written"] == 111
