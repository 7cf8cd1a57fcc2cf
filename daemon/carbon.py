"""The daemon's carbon poller: with `[carbon] provider` set, write grid intensity into the log for carbon per epoch."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.carbon")


def attach_carbon_poller(daemon: Daemon) -> bool:
    """Add the polling task when a provider is configured. Returns whether it was added."""
    cfg = daemon.config.carbon
    if not cfg.provider:
        return False
    from jouled.carbon import make_provider, poll_to_store

    # built now, so a bad provider name or missing token fails `jouled run` with one line, not later
    provider = make_provider(cfg, resilient=True)
    stop = threading.Event()
    counts = {"written": 0}

    async def carbon(_: Daemon) -> None:
        log.info("carbon: polling %s for zone %s every %.0f s", cfg.provider, cfg.zone, cfg.poll_interval_s)
        try:
            counts["written"] = await asyncio.to_thread(
                poll_to_store, provider, cfg.zone, daemon.store, cfg.poll_interval_s, stop
            )
        finally:
            stop.set()

    async def stopper(_: Daemon) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stop.set()  # cancelled at shutdown: end the polling thread's wait

    daemon.tasks.extend([carbon, stopper])
    daemon.status_extras["carbon"] = lambda: {"provider": cfg.provider, "zone": cfg.zone}
    return True
