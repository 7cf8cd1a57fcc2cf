"""The daemon delivers markers that marker clients left spooled on this host (broker down, client gone).

A client spools every marker before publishing it and keeps what the broker never acknowledged; when it
exits, the spool file's lock is free. Without this, those markers waited for the next marker client on
the host. The daemon looks into the spool folder (``jouled.spool.default_spool_dir()``, i.e.
``$JOULED_SPOOL_DIR`` or ``~/.local/state/jouled/spool`` of the user it runs as) at start and every
``SCAN_PERIOD_S``, and records each orphaned marker through the recorder (validated, deduplicated by
(run, seq) like a marker from MQTT). A file is deleted only once every marker in it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jouled.spool import OrphanSpool, default_spool_dir, line_topic

if TYPE_CHECKING:
    from jouled.daemon.recorder import MarkerRecorder
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.spool")

T = TypeVar("T")

SCAN_PERIOD_S = 5.0
READY_WAIT_S = 5.0  # how long to wait for the recorder's own start (it seeds the dedup state from the log)


@dataclass
class SpoolStats:
    dir: str
    files: int = 0  # orphaned spool files delivered
    markers: int = 0  # lines read from them
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"dir": self.dir, "files": self.files, "markers": self.markers, "last_error": self.last_error}


async def _in_thread_to_the_end(fn: Callable[[], T], undo: Callable[[T], object] | None = None) -> T:
    """``fn()`` on a worker thread, never abandoned half-way: a cancellation that arrives meanwhile is raised once
    ``fn`` has returned (after ``undo(result)``, so nothing it took is kept).

    ``asyncio.to_thread`` alone raises the cancellation at once while ``fn`` runs on: a claim's descriptor and lock
    would be lost (the file locked for the daemon's life), and the caller's cleanup would run beside a ``remove``
    still under way (at shutdown: the descriptor closed twice, the file delivered but not counted). These calls
    are short (a lock, a read, two unlinks)."""
    fut = asyncio.get_running_loop().run_in_executor(None, fn)
    cancelled: asyncio.CancelledError | None = None
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError as e:
            cancelled = e
    if cancelled is not None:
        if undo is not None and not fut.cancelled() and fut.exception() is None:
            undo(fut.result())
        raise cancelled
    return fut.result()


def _release(orphan: OrphanSpool | None) -> None:
    if orphan is not None:
        orphan.release()


class SpoolDelivery:
    def __init__(self, daemon: Daemon, recorder: MarkerRecorder, spool_dir: Path) -> None:
        self.daemon, self.recorder, self.dir = daemon, recorder, spool_dir
        self.stats = SpoolStats(str(spool_dir))

    async def deliver_once(self) -> int:
        """Record the markers of every orphaned spool file; returns how many lines were read."""
        n = 0
        for path in await asyncio.to_thread(OrphanSpool.candidates, self.dir):
            orphan = await _in_thread_to_the_end(functools.partial(OrphanSpool.claim, path), undo=_release)
            if orphan is None:
                continue  # a live client owns it and delivers it itself
            try:
                for line in orphan.lines:
                    await self.recorder.handle(line_topic(line, self.daemon.host), line)
                n += len(orphan.lines)
                if self.recorder.stats.pending:  # not all stored yet: keep the file, a later pass dedups it
                    continue
                try:
                    await _in_thread_to_the_end(orphan.remove)
                finally:  # also when a cancellation came during the remove: the file is gone, so it counts
                    if orphan.removed:
                        self.stats.files += 1
                        self.stats.markers += len(orphan.lines)
                        if orphan.lines:
                            log.info("markers: recorded %d spooled marker(s) left in %s", len(orphan.lines), path)
            finally:
                orphan.release()  # a no-op once removed
        return n

    async def run(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.recorder.ready.wait(), READY_WAIT_S)
        if not self.recorder.ready.is_set():  # no broker yet: seed dedup ourselves (seeding twice is harmless)
            await self.daemon.in_store_thread(self.recorder.seed_from_store)
        while True:
            try:
                await self.deliver_once()
                self.stats.last_error = ""
            except Exception as e:  # a bad spool file must not stop the daemon; say it once per distinct error
                msg = f"{type(e).__name__}: {e}".splitlines()[0]
                if msg != self.stats.last_error:
                    log.warning("markers: cannot deliver spooled markers from %s (%s); retrying", self.dir, msg)
                self.stats.last_error = msg
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # an error in a cleanup must not swallow the shutdown
                    raise asyncio.CancelledError from e
            await asyncio.sleep(SCAN_PERIOD_S)


def attach_spool_delivery(daemon: Daemon, spool_dir: Path | None = None) -> SpoolDelivery:
    """Deliver the host's orphaned spooled markers from the daemon (needs the marker recorder attached)."""
    if daemon.recorder is None:
        raise RuntimeError("attach the marker recorder first")
    sd = SpoolDelivery(daemon, daemon.recorder, spool_dir or default_spool_dir())

    async def spool(_: Daemon) -> None:
        await sd.run()

    daemon.tasks.append(spool)
    daemon.status_extras["spool"] = sd.stats.as_dict
    return sd
