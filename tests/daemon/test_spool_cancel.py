"""A daemon stopping while it delivers a spool file: the claimed file's descriptor and lock are closed once, by
whoever holds them, the delivery's counters stay true, and the cancellation ends the task.

Each test holds a worker thread inside a spool call (claim, or remove's close) and cancels the delivery then: the
window a shutdown hit at random (tests/daemon/test_spool_delivery.py, about one run in three) made deterministic.
No broker: a fake recorder."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jouled.daemon import spool as spool_mod
from jouled.daemon.spool import SpoolDelivery
from jouled.spool import OrphanSpool

LINES = [b'{"run":"r","seq":0}', b'{"run":"r","seq":1}']


class _Recorder:
    def __init__(self) -> None:
        self.stats = SimpleNamespace(pending=0)
        self.ready = asyncio.Event()
        self.ready.set()
        self.handled: list[bytes] = []

    async def handle(self, topic: str, line: bytes) -> None:
        self.handled.append(line)


def _orphan(tmp_path: Path) -> Path:
    """A spool file whose client is gone (nobody holds its lock)."""
    path = tmp_path / "testhost-1-0123abcd.jsonl"
    path.write_bytes(b"".join(ln + b"\n" for ln in LINES))
    return path


def _delivery(tmp_path: Path) -> SpoolDelivery:
    return SpoolDelivery(SimpleNamespace(host="testhost"), _Recorder(), tmp_path)  # type: ignore[arg-type]


def _closes_of(fds: set[int], monkeypatch: pytest.MonkeyPatch, hold: threading.Event, go: threading.Event,
               ) -> list[str]:
    """Record the names of the threads that close one of ``fds``; the first closer, if it is not the main thread (the
    loop's), waits for ``go`` just after its close: inside ``release``, the descriptor closed but not yet forgotten."""
    real_close = os.close
    closes: list[str] = []

    def close(fd: int) -> None:
        if fd not in fds:
            real_close(fd)
            return
        closes.append(threading.current_thread().name)
        real_close(fd)
        if len(closes) == 1 and threading.current_thread() is not threading.main_thread():
            hold.set()
            go.wait(5)

    monkeypatch.setattr(os, "close", close)
    return closes


def test_remove_and_release_on_two_threads_close_the_descriptor_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    orphan = OrphanSpool.claim(_orphan(tmp_path))
    assert orphan is not None
    hold, go = threading.Event(), threading.Event()
    closes = _closes_of({orphan._fd}, monkeypatch, hold, go)
    errors: list[BaseException] = []

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)
        return run

    remover = threading.Thread(target=guarded(orphan.remove), name="remover")
    remover.start()
    assert hold.wait(5)  # the remover has closed the descriptor and is still inside release
    releaser = threading.Thread(target=guarded(orphan.release), name="releaser")
    releaser.start()
    releaser.join(0.2)  # it waits for the remover instead of closing the number again
    go.set()
    remover.join(5)
    releaser.join(5)
    assert errors == [] and closes == ["remover"]
    assert orphan.removed and not orphan.path.exists()


def test_a_stop_during_the_remove_waits_for_it_counts_the_file_and_ends_the_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The flaky failure: the worker closed the file, the cancelled loop closed it again (EBADF, or another file of the
    process that got the number meanwhile), that error replaced the cancellation and the task ran on past shutdown."""
    monkeypatch.setattr(spool_mod, "SCAN_PERIOD_S", 0.05)
    path = _orphan(tmp_path)
    fds: set[int] = set()
    real_remove = OrphanSpool.remove

    def remove(self: OrphanSpool) -> None:
        fds.add(self._fd)
        real_remove(self)

    monkeypatch.setattr(OrphanSpool, "remove", remove)
    hold, go = threading.Event(), threading.Event()
    closes = _closes_of(fds, monkeypatch, hold, go)
    sd = _delivery(tmp_path)

    async def main() -> asyncio.Task[None]:
        task = asyncio.create_task(sd.run())
        assert await asyncio.to_thread(hold.wait, 5)
        task.cancel()  # the daemon stops while the remove is under way
        await asyncio.sleep(0.1)
        assert not task.done()  # it waits for the remove, which owns the descriptor
        go.set()
        done, _ = await asyncio.wait([task], timeout=5)
        assert task in done  # the cancellation ended it (not swallowed by an error in the cleanup)
        return task

    with caplog.at_level(logging.WARNING, logger="jouled.spool"):
        task = asyncio.run(main())
    assert task.cancelled()
    assert len(closes) == 1 and closes[0] != threading.main_thread().name  # once, by the remove's worker
    assert not path.exists() and sd.stats.files == 1 and sd.stats.markers == len(LINES)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_stop_during_the_claim_releases_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim whose caller was cancelled gives its lock back: the file is the next client's (or the next start's)."""
    monkeypatch.setattr(spool_mod, "SCAN_PERIOD_S", 0.05)
    path = _orphan(tmp_path)
    hold, go = threading.Event(), threading.Event()
    real_claim = OrphanSpool.claim

    def claim(p: Path) -> OrphanSpool | None:
        orphan = real_claim(p)
        hold.set()
        go.wait(5)
        return orphan

    monkeypatch.setattr(OrphanSpool, "claim", staticmethod(claim))
    sd = _delivery(tmp_path)

    async def main() -> asyncio.Task[None]:
        task = asyncio.create_task(sd.run())
        assert await asyncio.to_thread(hold.wait, 5)
        task.cancel()
        await asyncio.sleep(0.1)
        assert not task.done()
        go.set()
        done, _ = await asyncio.wait([task], timeout=5)
        assert task in done  # the cancellation ended it (not swallowed by an error in the cleanup)
        return task

    task = asyncio.run(main())
    assert task.cancelled()
    assert path.exists() and sd.stats.files == 0
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a lost descriptor still holds it
    finally:
        os.close(fd)
