"""One time base for every source: UTC nanoseconds anchored to the monotonic clock."""

from __future__ import annotations

import functools
import time


class Clock:
    """Wall-clock UTC ns derived from ``time.monotonic_ns`` and one anchor.

    Sources in different threads stamp readings with the same anchor, so their samples
    share one time base that never jumps backwards when NTP steps the wall clock.
    """

    def __init__(self) -> None:
        self.anchor_wall_ns = time.time_ns()
        self.anchor_mono_ns = time.monotonic_ns()

    def now_ns(self) -> int:
        return self.anchor_wall_ns + (time.monotonic_ns() - self.anchor_mono_ns)

    def from_monotonic_ns(self, mono_ns: int) -> int:
        """A ``time.monotonic_ns()`` reading of this boot (any process: CLOCK_MONOTONIC is system-wide) on this base."""
        return self.anchor_wall_ns + (mono_ns - self.anchor_mono_ns)

    def from_wall_us(self, wall_us: int) -> int:
        """A driver timestamp in µs since the epoch (NVML field values) is already UTC."""
        return wall_us * 1000


CLOCK = Clock()


BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@functools.cache
def boot_id() -> str | None:
    """This boot's id (Linux): a CLOCK_MONOTONIC reading is comparable only between processes of one boot.

    None where the kernel does not say (not Linux): then no monotonic reading is ever trusted across processes.
    """
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None
