"""The daemon's one store thread: store calls queued from the event loop, and the periodic flush and status file.

The flush and the status file run here on their own timers instead of as asyncio tasks that hop to an executor:
each hop woke the event loop twice (the timer, then the result), which made the loop the largest part of an idle
daemon's CPU (the observer bench). Their deadlines sit on a common grid of the monotonic clock, so the 1 s status and
the 1 s flush (the defaults) fall due together: one wake-up a second. One thread also keeps one SQLite connection
(one page cache) and serialises the writes without lock contention.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from jouled.osthread import name_os_thread

log = logging.getLogger("jouled.daemon")

_STOP = object()


class StoreThread(threading.Thread):
    """Runs submitted calls in order, and each periodic call at its period while `periodic_on` is set."""

    def __init__(self, periodic: list[tuple[float, Callable[[], object]]] | None = None) -> None:
        super().__init__(name="jouled-store", daemon=True)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._periodic = [(max(int(p * 1e9), 1), fn) for p, fn in (periodic or [])]
        self.periodic_on = threading.Event()
        if self._periodic:
            self.periodic_on.set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fut, fn, args, kwargs))
        return fut

    def stop(self, timeout_s: float | None = None) -> None:
        """Run what is queued, then end (the periodic calls stop at once)."""
        self.periodic_on.clear()
        self._jobs.put(_STOP)
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        name_os_thread()
        now = time.monotonic_ns()
        # on the grid, so equal periods fall due together; the first within one period of the start (a 2 s flush's
        # first watermark, what a query waits for, within 2 s of the start)
        due = [-(-now // p) * p for p, _fn in self._periodic]
        while True:
            timeout_s = None
            if self._periodic and self.periodic_on.is_set():
                timeout_s = max(0.0, (min(due) - time.monotonic_ns()) / 1e9)
            try:
                job = self._jobs.get(timeout=timeout_s)
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            if job is not None:
                fut, fn, args, kwargs = job
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn(*args, **kwargs))
                    except BaseException as e:  # handed to the awaiting coroutine, which decides
                        fut.set_exception(e)
            if not self.periodic_on.is_set():
                continue
            now = time.monotonic_ns()
            for i, (period_ns, fn) in enumerate(self._periodic):
                if now < due[i]:
                    continue
                try:
                    fn()
                except Exception as e:  # the flush and status keep their own error accounting; this is the last net
                    log.warning("store thread: %s failed: %s", getattr(fn, "__name__", "periodic call"), e)
                # the next grid point after now: a call that overran skips ticks instead of bursting to catch up
                due[i] = (now // period_ns + 1) * period_ns
