"""`jouled status` asks the running daemon on the socket beside its status file, and reads the file when it cannot."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.config import Config
from jouled.daemon.background import BackgroundDaemon
from jouled.daemon.service import Daemon
from jouled.statusfile import SOCKET_PATH_MAX_BYTES, read_live, status_socket_path
from jouled.store.sqlite import SqliteStore, sqlite_url
from tests.daemon.fakes import ScriptedSource
from tests.reliability.helpers import wait_for

runner = CliRunner()


def _daemon(tmp_path: Path, status_path: Path | None = None) -> tuple[Daemon, Path]:
    cfg = Config()
    cfg.daemon.host = "sockhost"
    cfg.daemon.flush_interval_s = 0.1
    cfg.daemon.health_interval_s = 3600.0  # the file is written at start only: what changes later comes live
    cfg.mqtt.url = ""
    db = tmp_path / "log.db"
    if status_path is not None:
        cfg.daemon.status_path = str(status_path)
    d = Daemon(config=cfg, sources=[(ScriptedSource(devices=2), 0.01)], store=SqliteStore(db),
               status_path=status_path or cfg.status_path(db))
    return d, db


def _status(db: Path) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    res = runner.invoke(app, ["status", "--format", "json", "--store", sqlite_url(db)])
    return res.exit_code, json.loads(res.stdout), res.stderr


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # a short runtime dir: a Unix socket's path has at most 107 bytes, pytest's tmp paths can be longer
    import tempfile

    run = Path(tempfile.mkdtemp(prefix="jr", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("JOULED_STORE", raising=False)
    return run


def test_status_is_live_from_the_socket(tmp_path: Path, runtime: Path) -> None:
    daemon, db = _daemon(tmp_path)
    sock = status_socket_path(daemon.status_path)
    bg = BackgroundDaemon(daemon).start()
    try:
        wait_for(lambda: sock.exists() and daemon.status_path.exists(), what="socket and status file")
        wait_for(lambda: daemon.store_health.written > 200, what="samples written")
        file_st = json.loads(daemon.status_path.read_text())
        code, st, _ = _status(db)
        assert code == 0 and st["running"] is True
        # the file was written at start; the answer is the daemon's state now
        assert st["updated_ns"] > file_st["updated_ns"]
        assert st["store"]["written"] > file_st["store"]["written"] and st["store"]["written"] > 200
        assert st["sources"][0]["state"] == "sampling" and st["host"] == "sockhost"
        # owner and group may connect (as the group may read the file), nobody else
        assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o660
        _, st2, _ = _status(db)
        assert st2["updated_ns"] > st["updated_ns"]
    finally:
        final = bg.stop()
    assert not sock.exists()  # removed at exit
    # afterwards the file holds the last status (the daemon ran in this process, whose pid still runs: exit 0), with
    # no word about the socket, which is gone with the daemon
    code, st, err = _status(db)
    assert st["store"]["written"] == final["store"]["written"] and "status socket" not in err


def test_a_socket_left_by_a_killed_daemon(tmp_path: Path, runtime: Path) -> None:
    daemon, db = _daemon(tmp_path)
    sock = status_socket_path(daemon.status_path)
    sock.parent.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))  # bound, never listening: what a SIGKILLed daemon leaves
    s.close()
    daemon.status_path.write_text(json.dumps({"pid": 2**22 + 12345, "host": "old", "updated_ns": 1, "sources": [],
                                              "store": {}}))
    # no daemon: the client reads the file without a word about the socket
    assert read_live(daemon.status_path) == (None, "")
    code, st, err = _status(db)
    assert code == 1 and st["host"] == "old" and "status socket" not in err
    # a new daemon on that log replaces the socket
    bg = BackgroundDaemon(daemon).start()
    try:
        wait_for(lambda: daemon.store_health.written > 0)
        wait_for(lambda: read_live(daemon.status_path)[0] is not None, what="the new daemon answers")
        code, st, _ = _status(db)
        assert code == 0 and st["host"] == "sockhost"
    finally:
        bg.stop()


def test_a_path_too_long_for_a_socket_leaves_the_file(tmp_path: Path, runtime: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    deep = tmp_path / ("d" * max(1, SOCKET_PATH_MAX_BYTES - len(str(tmp_path)))) / "status.json"
    daemon, db = _daemon(tmp_path, status_path=deep)
    assert len(os.fsencode(status_socket_path(deep))) > SOCKET_PATH_MAX_BYTES
    caplog.set_level(logging.INFO, logger="jouled.daemon")
    bg = BackgroundDaemon(daemon).start()
    try:
        wait_for(lambda: deep.exists() and daemon.store_health.written > 0)
        wait_for(lambda: "longer than a Unix socket allows" in caplog.text, what="the log line")
        res = runner.invoke(app, ["status", "--format", "json", "--store", sqlite_url(db)],
                            env={"JOULED_DAEMON_STATUS_PATH": str(deep)})
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["host"] == "sockhost"  # from the file
    finally:
        bg.stop()
    assert not status_socket_path(deep).exists()


def _serve_once(path: Path, answer: bytes | None) -> threading.Thread:
    """A socket at `path` that accepts one client and answers `answer` (None: never answers, then closes)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    done = threading.Event()

    def run() -> None:
        conn, _ = srv.accept()
        if answer is not None:
            conn.sendall(answer)
        else:
            done.wait(3.0)
        conn.close()
        srv.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.done = done  # type: ignore[attr-defined]
    return th


@pytest.mark.parametrize(("answer", "reason"), [
    (b"not json", "not a status"),
    (b"[1, 2]", "not a status"),
    (None, "no answer within 0.3 s"),
])
def test_a_socket_that_does_not_answer_a_status(runtime: Path, answer: bytes | None, reason: str) -> None:
    status_path = runtime / "s.status.json"
    th = _serve_once(status_socket_path(status_path), answer)
    try:
        st, why = read_live(status_path, timeout_s=0.3)
    finally:
        th.done.set()  # type: ignore[attr-defined]
        th.join(5)
    assert st is None and reason in why and str(status_socket_path(status_path)) in why


def test_status_says_when_a_running_daemon_did_not_answer(tmp_path: Path, runtime: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "log.db"
    status_path = Config().status_path(db)
    status_path.parent.mkdir(parents=True)
    status_path.write_text(json.dumps({"pid": os.getpid(), "host": "me", "updated_ns": 1, "sources": [], "store": {}}))
    th = _serve_once(status_socket_path(status_path), b"garbage")
    try:
        code, st, err = _status(db)
    finally:
        th.join(5)
    assert code == 0 and st["host"] == "me"  # this process stands for the running daemon: the file is shown
    assert "not a status" in err and "showing the status file, written" in err
