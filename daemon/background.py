"""Run the daemon on its own thread and event loop, for `jouled demo`, the live NAS search, tests and benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from jouled.daemon.service import Daemon


class BackgroundDaemon:
    """A Daemon whose loop runs in a background thread; `stop` flushes everything and returns the final status."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.loop: asyncio.AbstractEventLoop | None = None
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="jouled-daemon", daemon=True)

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.result = self.loop.run_until_complete(self.daemon.run())
        except BaseException as e:  # surfaced by stop()
            self.error = e
        finally:
            self.loop.close()

    def start(self, wait_markers: bool = True, timeout_s: float = 20.0) -> BackgroundDaemon:
        """Start, and wait until the marker recorder is subscribed so no early marker is missed."""
        self.thread.start()
        rec = self.daemon.recorder
        if wait_markers and rec is not None:
            deadline = time.monotonic() + timeout_s
            while not rec.ready.is_set():
                if self.error is not None or not self.thread.is_alive():
                    raise RuntimeError(f"daemon stopped while starting: {self.error}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"marker recorder not subscribed after {timeout_s} s: {rec.stats.as_dict()}")
                time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        while self.loop is None and self.thread.is_alive():
            time.sleep(0.01)
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.daemon.stop)
        self.thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise TimeoutError(f"daemon did not stop within {timeout_s} s; where each thread was:\n{_thread_stacks()}")
        return self.result


def _thread_stacks() -> str:
    """The last frames of every thread (what a stop that hangs waits on), for the error."""
    import sys
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame, limit=4))
        out.append(f"--- {names.get(ident, ident)}\n{stack}")
    return "\n".join(out)
