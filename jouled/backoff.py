"""One retry backoff for every component: exponential from a minimum, capped, with full, equal or no jitter.

Users and their bounds (kept from before the merge): a failing meter or source read 0.5 → 2 s, a source that
failed to open up to its re-probe interval, one GPU lost inside the NVML source 0.5 → 5 s, the daemon's broker
reconnect 0.1 → 2 s, the marker client's reconnect 0.05 → 2 s, carbon HTTP retries (jouled.carbon.http, which
may move onto this class later).

Jitter keeps many retriers that failed together (daemons behind one broker, GPUs lost at once) out of step:
"equal" waits half the delay fixed and half random, "full" waits uniformly in [0, delay], "none" the delay.
The RNG is injectable, so tests are exact.
"""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["equal", "full", "none"]


def capped_delay_s(failures: int, min_s: float, max_s: float, factor: float = 2.0) -> float:
    """The un-jittered delay before retry number `failures` (1, 2, …): min_s·factor^(failures−1), at most max_s."""
    n = max(failures - 1, 0)
    if n > 1000:  # factor**n would overflow a float; the cap was reached long before
        return max_s
    return float(min(max_s, min_s * factor**n))


def jittered(delay_s: float, jitter: Jitter, rng: random.Random | None = None) -> float:
    """`delay_s` with jitter applied; never above delay_s, never below 0."""
    if jitter == "none":
        return delay_s
    r = rng.random() if rng is not None else random.random()  # the module's shared RNG unless one is injected
    return delay_s * r if jitter == "full" else delay_s / 2 + (delay_s / 2) * r


class Backoff:
    """Exponential backoff with a cap and jitter: `next_delay()` after each failure, `reset()` after a success."""

    def __init__(
        self, min_s: float, max_s: float, *, factor: float = 2.0, jitter: Jitter = "equal", rng: random.Random | None = None
    ) -> None:
        if not (0 <= min_s <= max_s) or factor < 1:
            raise ValueError(f"backoff: need 0 <= min_s <= max_s and factor >= 1, got {min_s}, {max_s}, {factor}")
        self.min_s = min_s
        self.max_s = max_s
        self.factor = factor
        self.jitter: Jitter = jitter
        self.rng = rng
        self.failures = 0

    def delay_s(self, failures: int) -> float:
        """The (jittered) delay before retry number `failures`; does not count a failure."""
        return jittered(capped_delay_s(failures, self.min_s, self.max_s, self.factor), self.jitter, self.rng)

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        return self.delay_s(self.failures)

    def pending_delay(self) -> float:
        """The delay the next failure would get (without counting it)."""
        return self.delay_s(self.failures + 1)

    def reset(self) -> None:
        """A success: the next failure waits min_s again."""
        self.failures = 0

    def __repr__(self) -> str:
        return f"Backoff({self.min_s:g}..{self.max_s:g} s, x{self.factor:g}, {self.jitter} jitter, {self.failures} failures)"
