"""Assemble the daemon from a config: sources, store, marker subscriber, and run it (what `jouled run` does)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from jouled.config import Config
from jouled.daemon.service import Daemon, StoreLock
from jouled.errors import UserError
from jouled.sources.base import Source
from jouled.store.sqlite import SqliteStore, parse_store_url

log = logging.getLogger("jouled.daemon")


def source_period_s(config: Config, source: Source, rate_override_hz: float | None) -> float:
    section = getattr(config.sources, source.name, None)
    rate = rate_override_hz or (section.rate_hz if section is not None else 1.0)
    return 1.0 / rate


def build_daemon(
    config: Config,
    store_url: str,
    *,
    rate_hz: float | None = None,
    source_names: list[str] | None = None,
    markers: bool = True,
    sources: list[Source] | None = None,
    spool_dir: Path | None = None,
) -> Daemon:
    """Everything `jouled run` starts, without starting it (tests and benchmarks drive it directly).

    The log is locked first (a second daemon on it refuses at once, before opening anything); the lock is
    held until the daemon's run() returns. ``spool_dir``: also record the markers marker clients left
    spooled there (`jouled run` passes the user's spool folder; the demo and tests use their own).
    """
    if rate_hz is not None and not (0 < rate_hz <= 10000):
        raise UserError(f"--rate {rate_hz}: must be > 0 and <= 10000 Hz")
    path = parse_store_url(store_url)
    if path.exists() and not path.is_file():
        raise UserError(f"store {path}: not a file — pass --store sqlite:///path/to/jouled.db")
    lock = StoreLock(path)
    lock.acquire()
    try:
        return _build(config, path, lock, rate_hz, source_names, markers, sources, spool_dir)
    except BaseException:
        lock.release()
        raise


def _build(
    config: Config,
    path: Path,
    lock: StoreLock,
    rate_hz: float | None,
    source_names: list[str] | None,
    markers: bool,
    sources: list[Source] | None,
    spool_dir: Path | None,
) -> Daemon:
    store = SqliteStore(path)
    if sources is None:
        from jouled.sources.registry import build_sources

        sources = build_sources(config, source_names)
    srcs = sources
    if not srcs:
        raise UserError("no sources enabled — enable one in the config ([sources.<name>] enabled = true) or pass --source")
    daemon = Daemon(
        config=config,
        sources=[(s, source_period_s(config, s, rate_hz)) for s in srcs],
        store=store,
        status_path=config.status_path(path),
        lock=lock,
    )
    if markers:
        from jouled.daemon.recorder import attach_marker_recorder

        attach_marker_recorder(daemon)
        if spool_dir is not None:
            from jouled.daemon.spool import attach_spool_delivery

            attach_spool_delivery(daemon, spool_dir)
    from jouled.daemon.carbon import attach_carbon_poller

    attach_carbon_poller(daemon)
    if config.influx.url.strip():
        from jouled.daemon.forward import attach_forwarder

        attach_forwarder(daemon)  # a bad [influx] key fails `jouled run` here, with one line
    if config.prometheus.listen.strip():
        from jouled.daemon.prometheus import attach_prometheus

        attach_prometheus(daemon)  # last: it binds its port, which nothing after it could fail to release
    return daemon


def run_daemon(daemon: Daemon, duration_s: float | None = None) -> dict[str, Any]:
    return asyncio.run(daemon.run(duration_s))
