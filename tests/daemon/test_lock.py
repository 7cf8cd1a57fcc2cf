"""One daemon per log: a second `jouled run` on the same store refuses at once with one line (flock on <log>.lock),
the lock dies with its process (SIGKILL included), and the daemon's MQTT client id is unique per host and log.
Real `jouled run` processes, as a user starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jouled.config import Config
from jouled.daemon.app import build_daemon
from jouled.daemon.recorder import daemon_client_id
from jouled.errors import UserError
from jouled.store.sqlite import sqlite_url
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource

JOULED = [sys.executable, "-m", "jouled.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state"),
        "JOULED_MQTT_EMBEDDED_PORT": str(free_port()), "COLUMNS": "80",
    })
    for k in ("JOULED_CONFIG", "JOULED_STORE", "JOULED_SPOOL_DIR"):
        env.pop(k, None)
    return env


def _wait_locked(lock: Path, pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{lock} never named pid {pid}")


def test_second_daemon_on_one_store_refuses_and_sigkill_frees_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    store = ["--store", sqlite_url(db), "--source", "estimate"]
    first = subprocess.Popen([*JOULED, "run", "--duration", "30", *store], env=_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_locked(tmp_path / "one.db.lock", first.pid)
        t0 = time.monotonic()
        second = subprocess.run([*JOULED, "run", "--duration", "5", *store], env=_env(tmp_path),
                                capture_output=True, text=True, timeout=60)
        took_s = time.monotonic() - t0
        assert second.returncode == 2, second.stderr
        lines = [ln for ln in (second.stdout + second.stderr).splitlines() if ln.strip()]
        assert lines == [f"Error: store {db} is in use by jouled pid {first.pid} — stop it or pass --store"], lines
        assert took_s < 15  # refused before opening sources, store or broker (the import is most of it)
        assert first.poll() is None  # the first one goes on
    finally:
        first.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel drops the flock with the process
        first.wait(timeout=30)
    third = subprocess.run([*JOULED, "run", "--duration", "1", *store], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "sampling 1 of 1 sources (estimate)" in third.stderr


def test_two_daemons_in_one_process_and_the_lock_is_released_after_run(tmp_path: Path) -> None:
    cfg = Config()
    cfg.store.path = str(tmp_path / "log.db")
    cfg.daemon.status_path = str(tmp_path / "s.json")
    url = sqlite_url(cfg.store.path)
    d1 = build_daemon(cfg, url, sources=[ScriptedSource()], markers=False)
    try:
        build_daemon(cfg, url, sources=[ScriptedSource()], markers=False)
        raise AssertionError("the second daemon was built")
    except UserError as e:
        assert f"is in use by jouled pid {os.getpid()}" in e.message
    import asyncio

    asyncio.run(d1.run(0.2))  # run() returns: the lock goes with it
    d2 = build_daemon(cfg, url, sources=[ScriptedSource()], markers=False)
    asyncio.run(d2.run(0.2))


def test_client_id_is_unique_per_host_and_store(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert daemon_client_id("h", a) != daemon_client_id("h", b)
    assert daemon_client_id("h", a) != daemon_client_id("g", a)
    assert daemon_client_id("h", a) == daemon_client_id("h", tmp_path / "x" / ".." / "a.db")  # same log, same id
    assert daemon_client_id("h", a).startswith("jouled-h-")
