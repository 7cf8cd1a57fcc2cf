"""A daemon for a command that needs one (`nas search`): the one already logging to the store, or `jouled run` as a child.

A process boundary instead of an in-process daemon: the scheduler never imports the daemon (the import rules), the
child runs exactly what the service runs, its sampling threads do not share the search's GIL, and a crash of either
side cannot take the other with it. Readiness is asked of the child's status socket, else read from its status file
(its marker recorder says ``connected`` once it has subscribed), so no marker a worker sends after this returns is
missed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jouled.config import Config
from jouled.errors import UserError
from jouled.secrets import mqtt_auth, redact_url
from jouled.statusfile import read_live

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def lock_holder(store_path: Path) -> int | None:
    """The pid of the daemon holding ``<log>.lock`` (the daemon's flock, see daemon/service.py StoreLock), else None."""
    lock = store_path.with_name(store_path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def client_broker_url(cfg: Config, port: int | None = None) -> str:
    """The URL marker clients use to reach the daemon's broker: ``[mqtt] url``, else the embedded broker on loopback,
    with the embedded broker's credentials when it asks for them (kept in memory; redact before showing it)."""
    if cfg.mqtt.url and port is None:
        return cfg.mqtt.url
    host = cfg.mqtt.embedded_host if cfg.mqtt.embedded_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    url_host = f"[{host}]" if ":" in host else host
    auth = mqtt_auth(cfg)
    creds = ""
    if auth.password:
        creds = f"{quote(auth.username or '', safe='')}:{quote(auth.password, safe='')}@"
    return f"mqtt://{creds}{url_host}:{port if port is not None else cfg.mqtt.embedded_port}"


@dataclass
class DaemonLink:
    """The daemon a command measures with: ``broker_url`` for its marker clients; ``child`` when we started it."""

    broker_url: str
    store_url: str
    pid: int
    child: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    status_path: Path | None = None
    final_status: dict[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        how = "started" if self.child is not None else "running"
        return f"daemon pid {self.pid} ({how}): logging to {self.store_url}, broker {redact_url(self.broker_url)}"

    def log_tail(self, n: int = 5) -> str:
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop a child we started (SIGTERM: it flushes everything first); a daemon we only attached to keeps running."""
        if self.child is None or self.child.poll() is not None:
            return
        self.child.send_signal(signal.SIGTERM)
        try:
            self.child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(10)
            raise UserError(
                f"daemon pid {self.pid} did not stop within {timeout_s:.0f} s and was killed — its log: {self.log_path}"
            ) from None
        if self.status_path is not None:
            with contextlib.suppress(OSError, ValueError):
                self.final_status = json.loads(self.status_path.read_text())

    def __enter__(self) -> DaemonLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_child(
    cfg: Config,
    store_url: str,
    work_dir: Path,
    *,
    config_file: Path | None = None,
    spool_dir: Path | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> DaemonLink:
    """Start ``jouled run`` on ``store_url`` with its own embedded broker on a free loopback port and wait until its
    marker recorder has subscribed. ``spool_dir``: the folder the command's marker clients spool to (the child
    delivers what they leave there). The child polls no carbon provider: the command records its own intensity."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    status_path = work_dir / "daemon.status.json"
    log_path = work_dir / "daemon.log"
    status_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update({
        "JOULED_MQTT_URL": "",
        "JOULED_MQTT_EMBEDDED_PORT": str(port),
        "JOULED_DAEMON_STATUS_PATH": str(status_path),
        "JOULED_CARBON_PROVIDER": "",
    })
    if spool_dir is not None:
        env["JOULED_SPOOL_DIR"] = str(spool_dir)
    argv = [sys.executable, "-m", "jouled", "run", "--store", store_url]
    if config_file is not None:
        argv += ["--config", str(config_file)]
    with log_path.open("ab") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    link = DaemonLink(client_broker_url(cfg, port), store_url, child.pid, child, log_path, status_path)
    deadline = time.monotonic() + timeout_s
    while True:
        if child.poll() is not None:
            raise UserError(
                f"the daemon (`jouled run --store {store_url}`) exited with {child.returncode} while starting: "
                f"{link.log_tail() or 'no output'} — full log: {log_path}"
            )
        st = read_live(status_path, timeout_s=1.0)[0] or _read_json(status_path)
        if st.get("pid") == child.pid and (st.get("markers") or {}).get("connected"):
            return link
        if time.monotonic() > deadline:
            link.close()
            raise UserError(
                f"the daemon (`jouled run --store {store_url}`) did not subscribe to its broker within "
                f"{timeout_s:.0f} s: {link.log_tail() or 'no output'} — full log: {log_path}"
            )
        time.sleep(0.1)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def attach_or_start(
    cfg: Config,
    store_url: str,
    store_path: Path,
    work_dir: Path,
    *,
    config_file: Path | None = None,
    spool_dir: Path | None = None,
) -> DaemonLink:
    """The daemon already logging to ``store_path`` (its broker from the same config), else a child we start."""
    pid = lock_holder(store_path)
    if pid is not None:
        return DaemonLink(client_broker_url(cfg), store_url, pid)
    return start_child(cfg, store_url, work_dir, config_file=config_file, spool_dir=spool_dir)
