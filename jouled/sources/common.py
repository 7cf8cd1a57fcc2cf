"""Helpers shared by the power sources: partial-read errors, per-device backoff, monotone counters."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from jouled.backoff import Backoff as CoreBackoff
from jouled.model import Reading


class PartialRead(Exception):
    """Some devices failed on this read; ``readings`` holds the healthy ones.

    A sampler that knows this type stores ``readings`` and counts ``errors``; one that does not
    treats it as any failed read (retry with backoff). Failing devices are skipped by the source
    until their own backoff expires, so the next read returns the healthy devices without raising.
    """

    def __init__(self, source: str, readings: list[Reading], errors: dict[str, str]) -> None:
        self.source = source
        self.readings = readings
        self.errors = errors
        detail = "; ".join(f"{dev}: {msg}" for dev, msg in sorted(errors.items()))
        super().__init__(f"{source}: {detail}")


class Backoff(CoreBackoff):
    """Exponential retry delay for one failing device (monotonic seconds), capped and jittered: jouled.backoff's
    class plus when the device may be tried again and its last error.

    The cap is short (5 s): a device that answers again is back within seconds, and one retry every few seconds
    of a lost device costs nothing. Jitter (half the delay random) keeps devices lost together from retrying in step.
    """

    def __init__(self, initial_s: float = 0.5, max_s: float = 5.0, jitter: bool = True, rng: random.Random | None = None) -> None:
        super().__init__(initial_s, max_s, jitter="equal" if jitter else "none", rng=rng)
        self.retry_at_s = 0.0
        self.last_error = ""

    def fail(self, message: str, now_s: float | None = None) -> float:
        now_s = time.monotonic() if now_s is None else now_s
        delay_s = self.next_delay()
        self.retry_at_s = now_s + delay_s
        self.last_error = message
        return delay_s

    def ok(self) -> None:
        self.reset()
        self.retry_at_s = 0.0
        self.last_error = ""

    def waiting(self, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        return self.failures > 0 and now_s < self.retry_at_s


@dataclass
class MonotoneCounter:
    """Turns a counter that wraps (RAPL) or is reset (a meter's integrator) into a monotone one.

    ``update(raw)`` returns raw + offset, where the offset grows by ``wrap`` when the raw value
    falls (a hardware wrap) or by the last value when ``wrap`` is unknown (a reset to zero).
    """

    wrap: float = 0.0  # the raw counter's range; 0: unknown (resets restart at zero)
    offset: float = 0.0
    last_raw: float | None = None
    wraps: int = 0
    resets: int = 0

    def update(self, raw: float) -> float:
        if self.last_raw is not None and raw < self.last_raw:
            if self.wrap > 0:
                self.offset += self.wrap
                self.wraps += 1
            else:
                self.offset += self.last_raw
                self.resets += 1
        self.last_raw = raw
        return raw + self.offset
