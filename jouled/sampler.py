"""Per-source sampling threads on absolute deadlines, with health statistics and retry with backoff.

A read that fails is retried with a short capped backoff (BACKOFF_MAX_S, jittered), so a meter that answers
again is back within seconds; a source that cannot open at start is re-probed (every ABSENT_RETRY_S, or the
source's own ``open_retry_s``; None: never) while the others keep their rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from jouled.backoff import Backoff
from jouled.clock import CLOCK
from jouled.columns import ChunkBatch, ColumnSink
from jouled.errors import SourceUnavailable
from jouled.model import Reading
from jouled.series import SeriesMeta
from jouled.sources.base import Source, SourceInfo
from jouled.sources.common import PartialRead

log = logging.getLogger("jouled.sampler")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 2.0  # a meter that answers again is read within this (plus its open); the goal is 5 s
ABSENT_RETRY_S = 30.0  # a source absent at start (no driver, no device) is re-probed this often
REOPEN_AFTER_FAILURES = 3
JITTER_WINDOW = 4096  # recent ticks kept for the p50/p99 jitter in status


@dataclass
class SourceHealth:
    """What `jouled status` shows for one source (counters since the daemon started)."""

    name: str
    kind: str = "measured"
    state: str = "starting"  # starting | sampling | retrying | unavailable | stopped
    reason: str = ""
    next_try_mono_ns: int = 0  # when a retrying or unavailable source tries again (0: it does not)
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
        p50_ns, p99_ns = _quantiles(self.jitter_ns)
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
            "jitter_p50_ms": p50_ns / 1e6,
            "jitter_p99_ms": p99_ns / 1e6,
            "last_sample_age_s": (now_ns - self.last_sample_ns) / 1e9 if self.last_sample_ns else None,
            "counter_snapshots": self.counter_snapshots,
            "next_try_s": (
                max(0.0, (self.next_try_mono_ns - time.monotonic_ns()) / 1e9)
                if self.next_try_mono_ns and self.state in ("retrying", "unavailable") else None
            ),
        }


def _quantiles(values: deque[int]) -> tuple[float, float]:
    """Median and 99th percentile (linear interpolation, numpy's default), from a sort of at most JITTER_WINDOW ints:
    cheaper than two numpy percentile calls on a small array, once a second per source."""
    if not values:
        return 0.0, 0.0
    v = sorted(values)
    out = []
    for q in (0.5, 0.99):
        x = q * (len(v) - 1)
        lo = int(x)
        hi = min(lo + 1, len(v) - 1)
        out.append(v[lo] + (v[hi] - v[lo]) * (x - lo))
    return out[0], out[1]


def backoff_s(failures: int, min_s: float = BACKOFF_MIN_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Delay before retry number ``failures`` (1, 2, …): jouled.backoff's doubling from min_s, capped at max_s, "equal
    jitter" (half fixed, half random) so sources that failed together do not retry in lockstep; never above max_s."""
    return Backoff(min_s, max_s).delay_s(failures)


class SourceRunner(threading.Thread):
    """Runs one source's blocking reads at its period on absolute deadlines.

    Deadlines are start + k·period, so a slow read never accumulates drift; a read that overruns
    whole periods skips those ticks (counted as missed) instead of bursting to catch up. A marker
    sets `snapshot`, which wakes the thread at once to read the energy counters.
    """

    def __init__(self, source: Source, period_s: float, sink: ColumnSink) -> None:
        super().__init__(name=f"jouled-{source.name}", daemon=True)
        self.source = source
        self.period_ns = max(int(period_s * 1e9), 1)
        self.sink = sink
        self.health = SourceHealth(name=source.name, kind=source.kind, period_s=period_s)
        self.stop_event = threading.Event()
        self.snapshot_event = threading.Event()
        self.info: SourceInfo | None = None
        # bumped at every successful open: the daemon then (re)declares this source's series metadata
        self.meta_generation = 0
        self.opened_ns = 0
        # the watermark's evidence: when the read in progress started (None: no read in progress, everything read
        # is in the sink), and the most any reading was stamped before the read that returned it (driver timestamps)
        self._read_since_ns: int | None = None
        self.stamp_lag_ns = 0

    # The open step runs in the thread too, so a slow device (a meter's handshake) delays no one.
    def _open(self) -> bool:
        try:
            self.info = self.source.open()
        except Exception as e:  # SourceUnavailable, or a driver error: either way the source is off until a re-probe
            reason = str(e) if isinstance(e, SourceUnavailable) else f"{type(e).__name__}: {e}".splitlines()[0]
            if reason != self.health.reason:  # once per distinct reason, not at every re-probe
                log.warning("source %s unavailable: %s", self.source.name, reason)
            self.health.state = "unavailable"
            self.health.reason = reason
            return False
        self.health.devices = list(self.info.devices)
        self._opened()
        self.health.state = "sampling"
        self.health.reason = ""
        self.health.next_try_mono_ns = 0
        return True

    def _open_until_stopped(self) -> bool:
        """Open; when that fails, re-probe at the source's interval until it opens or the daemon stops."""
        retry_s: float | None = getattr(self.source, "open_retry_s", ABSENT_RETRY_S)
        tries = 0
        while not self._open():
            tries += 1
            if retry_s is None:  # the source says retrying cannot help (e.g. nothing configured)
                return False
            # short sources (a configured meter) back off up to their interval; absent ones wait it whole
            delay = Backoff(min(BACKOFF_MIN_S, retry_s), retry_s).delay_s(tries) if retry_s <= 5 else retry_s
            self.health.next_try_mono_ns = time.monotonic_ns() + int(delay * 1e9)
            if self.stop_event.wait(delay):
                return False
        if tries:
            log.info("source %s: opened after %d failed attempts; sampling", self.source.name, tries)
        return True

    def request_snapshot(self) -> None:
        self.snapshot_event.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.snapshot_event.set()

    def complete_ns(self) -> int:
        """A time before which every reading this source will ever return is already in the sink.

        Readings are stamped at or after their read started, less a driver's timestamp lag (NVML field values,
        nvidia-smi lines), bounded by the largest lag seen so far plus one period. `now` is taken before looking
        at the read in progress: a read that starts after that look stamps its readings after `now`.
        """
        now = CLOCK.now_ns()
        since = self._read_since_ns
        bound = now if since is None else min(since, now)
        return bound - self.stamp_lag_ns - self.period_ns

    def _reading(self) -> None:
        self._read_since_ns = CLOCK.now_ns()

    def _read_done(self) -> None:
        self._read_since_ns = None

    def _emit(self, readings: list[Reading]) -> None:
        self.sink.add(self.source.name, readings)
        if readings:
            self.health.readings += len(readings)
            self.health.last_sample_ns = max(r.time_ns for r in readings)
            since = self._read_since_ns
            if since is not None:
                self.stamp_lag_ns = max(self.stamp_lag_ns, since - min(r.time_ns for r in readings))
        self._read_done()  # after the readings are in the sink: the watermark may pass them now

    def _fail(self, exc: BaseException, failures: int) -> float:
        self.health.errors += 1
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if msg != self.health.last_error:  # log each distinct error once, not at every retry
            log.warning("source %s: read failed (%s); retrying with backoff", self.source.name, msg)
        self.health.last_error = msg
        self.health.state = "retrying"
        delay = backoff_s(failures, BACKOFF_MIN_S, BACKOFF_MAX_S)
        self.health.next_try_mono_ns = time.monotonic_ns() + int(delay * 1e9)
        return delay

    def run(self) -> None:
        if not self._open_until_stopped():
            return
        failures = 0
        reopen = False
        next_ns = time.monotonic_ns()
        while not self.stop_event.is_set():
            if reopen:
                # after the backoff, not before it: a device that came back during the wait is reopened and read now
                reopen = False
                err = self._reopen()
                if err is not None:  # still gone: that is this attempt's error (a read would only say "closed")
                    failures += 1
                    reopen = True
                    if self.stop_event.wait(self._fail(err, failures)):
                        break
                    continue
                next_ns = time.monotonic_ns()
            now = time.monotonic_ns()
            wait_ns = next_ns - now
            if wait_ns > 0:
                # Event.wait is as precise as sleep and lets a marker snapshot cut the wait short.
                if self.snapshot_event.wait(wait_ns / 1e9):
                    self.snapshot_event.clear()
                    if self.stop_event.is_set():
                        break
                    self._reading()
                    try:
                        self._emit(self.source.read_counters())
                        self.health.counter_snapshots += 1
                    except PartialRead as e:  # some devices failed: keep the healthy ones' counters
                        self._emit(e.readings)
                        self._fail(e, 1)
                    except Exception as e:  # a snapshot failure is one more error, the loop goes on
                        self._read_done()
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
            self._reading()
            try:
                readings = self.source.read()
            except PartialRead as e:
                # one device failed (a GPU lost): the others' readings are good, and the source itself
                # backs that device off, so the loop keeps its rhythm instead of backing off everything
                self._fail(e, 1)
                self.health.state = "sampling"
                readings = e.readings
            except Exception as e:
                self._read_done()
                failures += 1
                backoff = self._fail(e, failures)
                reopen = failures >= REOPEN_AFTER_FAILURES
                if self.stop_event.wait(backoff):
                    break
                next_ns = time.monotonic_ns()
                continue
            if failures:
                log.info("source %s: reading again after %d failed attempts", self.source.name, failures)
                failures = 0
            if self.health.state != "sampling":  # also after a failed snapshot, which counts no failure
                self.health.state = "sampling"
                self.health.next_try_mono_ns = 0
            self.health.delivered += 1
            self._emit(readings)
            next_ns += self.period_ns
        try:
            self.source.close()
        finally:
            self.health.state = "stopped"

    def _reopen(self) -> Exception | None:
        """Close and open the source again; the error when it cannot open (None: open)."""
        try:
            self.source.close()
        except Exception:  # closing a broken device may fail too; reopening is what matters
            pass
        try:
            self.info = self.source.open()
        except Exception as e:  # SourceUnavailable names the fix; anything else is a driver error, retried alike
            return e
        self.health.devices = list(self.info.devices)
        self._opened()
        return None

    def _opened(self) -> None:
        self.opened_ns = CLOCK.now_ns()
        self.meta_generation += 1

    def series_meta(self) -> dict[str, SeriesMeta]:
        """The source's declared metadata per device, TICK periods replaced by this runner's period."""
        tick_s = self.period_ns / 1e9
        declared: dict[str, SeriesMeta] = getattr(self.info, "series", None) or {}  # a third-party SourceInfo may lack it
        return {dev: m.resolved(tick_s) for dev, m in declared.items()}


class Sampler:
    """All source runners plus the shared queue the daemon loop drains."""

    def __init__(self, sources: list[tuple[Source, float]]) -> None:
        self.sink = ColumnSink()  # the one carrier from the sources' threads to the store (jouled/columns.py)
        self.runners = [SourceRunner(src, period_s, self.sink) for src, period_s in sources]

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

    def complete(self) -> dict[str, tuple[int, list[str]]]:
        """Per open source: (complete_ns, devices). Call it before `drain`: what the drain then takes holds every
        reading of those devices stamped before complete_ns."""
        return {r.source.name: (r.complete_ns(), list(r.health.devices)) for r in self.runners if r.info is not None}

    def drain(self, host: str) -> list[ChunkBatch]:
        """What the sources read since the last drain: one column batch per (source, device), tagged ``host``."""
        return self.sink.drain(host)

    def health(self) -> list[dict[str, Any]]:
        now = CLOCK.now_ns()
        return [r.health.as_dict(now) for r in self.runners]
