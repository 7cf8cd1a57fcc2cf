"""Helpers for the reliability tests: publish raw payloads, wait for the daemon, fill a small filesystem."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from jouled.clock import CLOCK
from jouled.store.sqlite import SqliteStore

TOPIC = "jouled/v1/testhost/markers"


def publish(port: int, payloads: list[bytes | dict[str, Any]], topic: str = TOPIC, interval_s: float = 0.0) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for p in payloads:
            data = p if isinstance(p, bytes) else json.dumps(p).encode()
            c.publish(topic, data, qos=1).wait_for_publish(10)
            if interval_s:
                time.sleep(interval_s)
    finally:
        c.disconnect()
        c.loop_stop()


def marker(seq: int, event: str = "start", scope: str = "epoch", epoch: int = 0, run: str = "r1", **kw: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"time": CLOCK.now_ns(), "host": "testhost", "run": run, "scope": scope, "event": event,
                         "epoch": epoch, "seq": seq}
    m.update(kw)
    return m


def wait_for(pred: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what or "condition not met")
        time.sleep(0.02)


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (needs root and mount); raises OSError where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    """Write a file until the filesystem is full (ENOSPC); returns it so the caller can free the space."""
    f = path / "filler"
    chunk = b"\0" * 65536
    with open(f, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
        # the last partial blocks too
        for size in (4096, 512, 1):
            while True:
                try:
                    fh.write(b"\0" * size)
                except OSError:
                    break
    os.sync()
    return f


class PageCappedStore(SqliteStore):
    """The real store, with SQLite's own page cap applied to every connection: a real SQLITE_FULL, no root needed."""

    max_pages: int | None = None
    _applied: dict[int, int | None]

    def __init__(self, path: str | os.PathLike[str], **kw: Any) -> None:
        # 4 KiB pages (SQLite's default, which jouled's new logs keep; an older log may have 16 KiB): a cap at today's
        # page count then bites at the next flush, where a larger page's free space would still take a few chunks
        if not Path(path).exists():
            with contextlib.closing(sqlite3.connect(path)) as c:
                c.execute("PRAGMA page_size=4096")
                c.execute("PRAGMA journal_mode=WAL")
        super().__init__(path, **kw)

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        applied = self.__dict__.setdefault("_applied", {})
        if applied.get(id(conn), -1) != self.max_pages:
            conn.execute(f"PRAGMA max_page_count={self.max_pages or 4294967294}")
            applied[id(conn)] = self.max_pages
        return conn
