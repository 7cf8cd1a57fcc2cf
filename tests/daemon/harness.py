"""Run a real Daemon (threads, asyncio loop, SQLite, MQTT recorder) in a background thread for tests and benches."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from jouled.config import Config
from jouled.daemon.app import build_daemon
from jouled.daemon.service import Daemon


class DaemonThread:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.loop: asyncio.AbstractEventLoop | None = None
        self.result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.result = self.loop.run_until_complete(self.daemon.run())
        finally:
            self.loop.close()

    def start(self, wait_markers: bool = True, timeout_s: float = 20.0) -> DaemonThread:
        self.thread.start()
        if wait_markers and self.daemon.recorder is not None:
            deadline = time.monotonic() + timeout_s
            while not self.daemon.recorder.ready.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"recorder not subscribed: {self.daemon.recorder.stats.as_dict()}")
                time.sleep(0.02)
        return self

    def stop(self) -> dict[str, Any]:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.daemon.stop)
        self.thread.join(30)
        assert self.result is not None
        return self.result


def make_config(tmp_path: Path, mqtt_url: str = "", embedded_port: int = 1883) -> Config:
    cfg = Config()
    cfg.daemon.host = "testhost"
    cfg.daemon.flush_interval_s = 0.1
    cfg.daemon.health_interval_s = 0.2
    cfg.store.path = str(tmp_path / "log.db")
    cfg.mqtt.url = mqtt_url
    cfg.mqtt.embedded_port = embedded_port
    return cfg


def start_daemon(cfg: Config, sources: list[Any], **kw: Any) -> DaemonThread:
    d = build_daemon(cfg, f"sqlite:///{cfg.store.path}", sources=sources, **kw)
    return DaemonThread(d).start()
