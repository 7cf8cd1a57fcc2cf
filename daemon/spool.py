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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jouled.spool import OrphanSpool, default_spool_dir, line_topic

if TYPE_CHECKING:
    from jouled.daemon.recorder import MarkerRecorder
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.spool")

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


class SpoolDelivery:
    def __init__(self, daemon: Daemon, recorder: MarkerRecorder, spool_dir: Path) -> None:
        self.daemon, self.recorder, self.dir = daemon, recorder, spool_dir
        self.stats = SpoolStats(str(spool_dir))

    async def deliver_once(self) -> int:
        """Record the markers of every orphaned spool file; returns how many lines were read."""
        n = 0
        for path in await asyncio.to_thread(OrphanSpool.candidates, self.dir):
            orphan = await asyncio.to_thread(OrphanSpool.claim, path)
            if orphan is None:
                continue  # a live client owns it and delivers it itself
            try:
                for line in orphan.lines:
                    await self.recorder.handle(line_topic(line, self.daemon.host), line)
                n += len(orphan.lines)
                if self.recorder.stats.pending:  # not all stored yet: keep the file, a later pass dedups it
                    continue
                await asyncio.to_thread(orphan.remove)
                self.stats.files += 1
                self.stats.markers += len(orphan.lines)
                if orphan.lines:
                    log.info("markers: recorded %d spooled marker(s) left in %s", len(orphan.lines), path)
            finally:
                orphan.release()
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
