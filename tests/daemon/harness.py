"""Helpers to start a real daemon (threads, asyncio loop, SQLite, MQTT recorder) from tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jouled.config import Config
from jouled.daemon.app import build_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.store.sqlite import sqlite_url


def make_config(tmp_path: Path, mqtt_url: str = "", embedded_port: int = 1883) -> Config:
    cfg = Config()
    cfg.daemon.host = "testhost"
    cfg.daemon.flush_interval_s = 0.1
    cfg.daemon.health_interval_s = 0.2
    cfg.store.path = str(tmp_path / "log.db")
    cfg.mqtt.url = mqtt_url
    cfg.mqtt.embedded_port = embedded_port
    return cfg


def start_daemon(cfg: Config, sources: list[Any], **kw: Any) -> BackgroundDaemon:
    d = build_daemon(cfg, sqlite_url(cfg.store.path), sources=sources, **kw)
    return BackgroundDaemon(d).start()
