"""Per-source sampling threads on absolute deadlines, with health statistics and retry with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jouled.clock import CLOCK
from jouled.daemon.sources.base import Source, SourceInfo
from jouled.daemon.sources.common import PartialRead
from jouled.errors import SourceUnavailable
from jouled.model import Reading

log = logging.getLogger("jouled.sampler")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
REOPEN_AFTER_FAILURES = 3
JITTER_WINDOW = 4096  # recent ticks kept for the p50/p99 jitter in status


@dataclass
class SourceHealth:
    """What `jouled status` shows for one source (counters since the daemon started)."""

    name: str
    kind: str = "measured"
    state: str = "starting"  # starting | sampling | retrying | unavailable | stopped
    reason: str = ""
    devices: list[str] = field(default_factory=list)
    period_s: float = 0.1
    scheduled: int = 0
    delivered: int = 0
    missed: int = 0  # ticks skipped because a read overran its deadline
    readings: int = 0
    errors: int = 0
    last_error: str = ""
    last_sample_ns: int = 0
    counter_snapshots: int = 0
    started_mono_ns: int = field(default_factory=time.monotonic_ns)
    jitter_ns: deque[int] = field(default_factory=lambda: deque(maxlen=JITTER_WINDOW))

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        elapsed_s = max((time.monotonic_ns() - self.started_mono_ns) / 1e9, 1e-9)
        j = np.fromiter(self.jitter_ns, dtype=np.int64) if self.jitter_ns else np.zeros(1, np.int64)
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "reason": self.reason,
            "devices": self.devices,
            "period_s": self.period_s,
            "target_rate_hz": 1.0 / self.period_s,
            "achieved_rate_hz": self.delivered / elapsed_s,
            "scheduled": self.scheduled,
            "delivered": self.delivered,
            "missed": self.missed,
            "delivered_ratio": self.delivered / self.scheduled if self.scheduled else 0.0,
            "readings": self.readings,
            "errors": self.errors,
            "last_error": self.last_error,
            "jitter_p50_ms": float(np.percentile(j, 50)) / 1e6,
            "jitter_p99_ms": float(np.percentile(j, 99)) / 1e6,
            "last_sample_age_s": (now_ns - self.last_sample_ns) / 1e9 if self.last_sample_ns else None,
            "counter_snapshots": self.counter_snapshots,
        }


class SourceRunner(threading.Thread):
    """Runs one source's blocking reads at its period on absolute deadlines.

    Deadlines are start + k·period, so a slow read never accumulates drift; a read that overruns
    whole periods skips those ticks (counted as missed) instead of bursting to catch up. A marker
    sets `snapshot`, which wakes the thread at once to read the energy counters.
    """

    def __init__(self, source: Source, period_s: float, sink: deque[tuple[str, Reading]]) -> None:
        super().__init__(name=f"jouled-{source.name}", daemon=True)
        self.source = source
        self.period_ns = max(int(period_s * 1e9), 1)
        self.sink = sink
        self.health = SourceHealth(name=source.name, kind=source.kind, period_s=period_s)
        self.stop_event = threading.Event()
        self.snapshot_event = threading.Event()
        self.info: SourceInfo | None = None

    # The open step runs in the thread too, so a slow device (a meter's handshake) delays no one.
    def _open(self) -> bool:
        try:
            self.info = self.source.open()
        except SourceUnavailable as e:
            self.health.state = "unavailable"
            self.health.reason = str(e)
            log.warning("source %s unavailable: %s", self.source.name, e)
            return False
        self.health.devices = list(self.info.devices)
        self.health.state = "sampling"
        self.health.reason = ""
        return True

    def request_snapshot(self) -> None:
        self.snapshot_event.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.snapshot_event.set()

    def _emit(self, readings: list[Reading]) -> None:
        name = self.source.name
        for r in readings:
            self.sink.append((name, r))
        if readings:
            self.health.readings += len(readings)
            self.health.last_sample_ns = max(r.time_ns for r in readings)

    def _fail(self, exc: BaseException, failures: int) -> float:
        self.health.errors += 1
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if msg != self.health.last_error:  # log each distinct error once, not at every retry
            log.warning("source %s: read failed (%s); retrying with backoff", self.source.name, msg)
        self.health.last_error = msg
        self.health.state = "retrying"
        return float(min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** (failures - 1)))

    def run(self) -> None:
        if not self._open():
            return
        failures = 0
        next_ns = time.monotonic_ns()
        while not self.stop_event.is_set():
            now = time.monotonic_ns()
            wait_ns = next_ns - now
            if wait_ns > 0:
                # Event.wait is as precise as sleep and lets a marker snapshot cut the wait short.
                if self.snapshot_event.wait(wait_ns / 1e9):
                    self.snapshot_event.clear()
                    if self.stop_event.is_set():
                        break
                    try:
                        self._emit(self.source.read_counters())
                        self.health.counter_snapshots += 1
                    except PartialRead as e:  # some devices failed: keep the healthy ones' counters
                        self._emit(e.readings)
                        self._fail(e, 1)
                    except Exception as e:  # a snapshot failure is one more error, the loop goes on
                        self._fail(e, 1)
                    continue
                now = time.monotonic_ns()
            lateness = now - next_ns
            if lateness >= self.period_ns:  # overran whole periods: skip them, count them
                skipped = lateness // self.period_ns
                self.health.missed += int(skipped)
                self.health.scheduled += int(skipped)
                next_ns += skipped * self.period_ns
                lateness -= skipped * self.period_ns
            self.health.scheduled += 1
            self.health.jitter_ns.append(int(lateness))
            try:
                readings = self.source.read()
            except PartialRead as e:
                # one device failed (a GPU lost): the others' readings are good, and the source itself
                # backs that device off, so the loop keeps its rhythm instead of backing off everything
                self._fail(e, 1)
                self.health.state = "sampling"
                readings = e.readings
            except Exception as e:
                failures += 1
                backoff = self._fail(e, failures)
                if failures >= REOPEN_AFTER_FAILURES:
                    self._reopen()
                if self.stop_event.wait(backoff):
                    break
                next_ns = time.monotonic_ns()
                continue
            if failures:
                log.info("source %s: reading again after %d failed attempts", self.source.name, failures)
                failures = 0
                self.health.state = "sampling"
            self.health.delivered += 1
            self._emit(readings)
            next_ns += self.period_ns
        try:
            self.source.close()
        finally:
            self.health.state = "stopped"

    def _reopen(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a broken device may fail too; reopening is what matters
            pass
        try:
            self.info = self.source.open()
            self.health.devices = list(self.info.devices)
        except SourceUnavailable as e:
            self.health.reason = str(e)
        except Exception as e:
            self.health.reason = f"{type(e).__name__}: {e}".splitlines()[0]


class Sampler:
    """All source runners plus the shared queue the daemon loop drains."""

    def __init__(self, sources: list[tuple[Source, float]]) -> None:
        self.queue: deque[tuple[str, Reading]] = deque()
        self.runners = [SourceRunner(src, period_s, self.queue) for src, period_s in sources]

    def start(self) -> None:
        for r in self.runners:
            r.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        for r in self.runners:
            r.stop()
        deadline = time.monotonic() + timeout_s
        for r in self.runners:
            r.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> None:
        """Ask every running source for a fresh counter reading now (called on each marker)."""
        for r in self.runners:
            if r.is_alive():
                r.request_snapshot()

    def drain(self) -> list[tuple[str, Reading]]:
        out = []
        q = self.queue
        while True:
            try:
                out.append(q.popleft())
            except IndexError:
                return out

    def health(self) -> list[dict[str, Any]]:
        now = CLOCK.now_ns()
        return [r.health.as_dict(now) for r in self.runners]
