"""Per-source sampling threads on absolute deadlines, with health statistics and retry with backoff.

A read that fails is retried with a short capped backoff (BACKOFF_MAX_S, jittered), so a meter that answers
again is back within seconds; a source that cannot open at start is re-probed (every ABSENT_RETRY_S, or the
source's own ``open_retry_s``; None: never) while the others keep their rate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from jouled.backoff import Backoff
from jouled.clock import CLOCK
from jouled.columns import ChunkBatch, ColumnSink, MalformedReading
from jouled.errors import SourceUnavailable
from jouled.model import Reading
from jouled.osthread import name_os_thread
from jouled.series import SeriesMeta
from jouled.sources.base import Source, SourceInfo
from jouled.sources.common import PartialRead

log = logging.getLogger("jouled.sampler")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 2.0  # a meter that answers again is read within this (plus its open); the goal is 5 s
ABSENT_RETRY_S = 30.0  # a source absent at start (no driver, no device) is re-probed this often
REOPEN_AFTER_FAILURES = 3
UNAVAILABLE_LOG = "source %s unavailable: %s"  # logged when a source cannot open (at the runner's absent_level)
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
    # the quantiles of the window, refreshed once a tenth of it is new: a sort of 4096 ticks per source at every
    # status write (1 s) was a fifth of an idle daemon's store thread
    _jitter_q: tuple[float, float] = (0.0, 0.0)
    _jitter_q_at: int = -1  # `scheduled` when they were computed

    def jitter_quantiles(self) -> tuple[float, float]:
        """(p50, p99) lateness in ns over the recent ticks (at most JITTER_WINDOW)."""
        if self._jitter_q_at < 0 or self.scheduled - self._jitter_q_at >= max(1, len(self.jitter_ns) // 10):
            self._jitter_q = _quantiles(self.jitter_ns)
            self._jitter_q_at = self.scheduled
        return self._jitter_q

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        elapsed_s = max((time.monotonic_ns() - self.started_mono_ns) / 1e9, 1e-9)
        p50_ns, p99_ns = self.jitter_quantiles()
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


def _on_grid(t_ns: int, period_ns: int) -> int:
    """The first multiple of the period at or after t_ns: runners of one period sharing a thread then fall due at the
    same instants (one wake-up per tick, not one per source), whenever each opened or came back from a backoff."""
    return -(-t_ns // period_ns) * period_ns


class SourceRunner:
    """One source's reads at its period on absolute deadlines, as a state machine a `SamplingThread` steps.

    Deadlines are start + k·period, so a slow read never accumulates drift; a read that overruns whole periods
    skips those ticks (counted as missed) instead of bursting to catch up. A failure never blocks the thread: the
    retry is the next deadline (after a jittered backoff), so sources sharing a thread keep their rate. A marker
    sets `snapshot_pending` and wakes the thread, which reads the energy counters at once.
    """

    def __init__(self, source: Source, period_s: float, sink: ColumnSink, *, absent_level: int = logging.WARNING) -> None:
        self.source = source
        self.absent_level = absent_level  # of the log line when the source cannot open (its health says it anyway)
        self.period_ns = max(int(period_s * 1e9), 1)
        self.sink = sink
        self.health = SourceHealth(name=source.name, kind=source.kind, period_s=period_s)
        self.thread: SamplingThread | None = None  # set by the thread that steps this runner
        self.snapshot_pending = False
        self.done = False  # finished: stopped, or absent for good (nothing configured)
        self.info: SourceInfo | None = None
        # bumped at every successful open: the daemon then (re)declares this source's series metadata
        self.meta_generation = 0
        self.opened_ns = 0
        # the watermark's evidence: when the read in progress started (None: no read in progress, everything read
        # is in the sink), and the most any reading was stamped before the read that returned it (driver timestamps)
        self._read_since_ns: int | None = None
        self.stamp_lag_ns = 0
        # the state machine: what the next step does, and when (time.monotonic_ns)
        self._phase = "open"  # open | sample | reopen
        self.next_due_ns = 0
        self._open_tries = 0
        self._failures = 0

    @property
    def name(self) -> str:
        return self.source.name

    def is_alive(self) -> bool:
        """Still sampling, or still trying to (False once stopped or given up on), like the thread it once was."""
        return not self.done and self.thread is not None and self.thread.is_alive()

    def request_snapshot(self) -> None:
        self.snapshot_pending = True
        if self.thread is not None:
            self.thread.wake.set()

    # -- the steps ------------------------------------------------------------------------------

    def step(self, now_ns: int) -> None:
        """Do what is due at `now_ns` (time.monotonic_ns) and set `next_due_ns`; never raises, never waits."""
        if self._phase == "open":
            self._step_open(now_ns)
        elif self._phase == "reopen":
            self._step_reopen()
        else:
            self._step_read(now_ns)

    def _step_open(self, now_ns: int) -> None:
        """Open; when that fails, re-probe at the source's interval (or never, when it says retrying cannot help)."""
        if self._open():
            if self._open_tries:
                log.info("source %s: opened after %d failed attempts; sampling", self.source.name, self._open_tries)
            self._phase = "sample"
            self.next_due_ns = time.monotonic_ns()
            return
        self._open_tries += 1
        retry_s: float | None = getattr(self.source, "open_retry_s", ABSENT_RETRY_S)
        if retry_s is None:  # the source says retrying cannot help (e.g. nothing configured)
            self.done = True
            return
        # short sources (a configured meter) back off up to their interval; absent ones wait it whole
        delay = Backoff(min(BACKOFF_MIN_S, retry_s), retry_s).delay_s(self._open_tries) if retry_s <= 5 else retry_s
        self.next_due_ns = self.health.next_try_mono_ns = time.monotonic_ns() + int(delay * 1e9)

    def _step_reopen(self) -> None:
        # after the backoff, not before it: a device that came back during the wait is reopened and read now
        err = self._reopen()
        if err is not None:  # still gone: that is this attempt's error (a read would only say "closed")
            self._failures += 1
            self.next_due_ns = time.monotonic_ns() + int(self._fail(err, self._failures) * 1e9)
            return
        self._phase = "sample"
        self.next_due_ns = time.monotonic_ns()

    def _step_read(self, now_ns: int) -> None:
        h = self.health
        lateness = now_ns - self.next_due_ns
        if lateness >= self.period_ns:  # overran whole periods: skip them, count them
            skipped = lateness // self.period_ns
            h.missed += int(skipped)
            h.scheduled += int(skipped)
            self.next_due_ns += skipped * self.period_ns
            lateness -= skipped * self.period_ns
        h.scheduled += 1
        h.jitter_ns.append(int(lateness))
        self._reading()
        try:
            readings = self.source.read()
        except PartialRead as e:
            # one device failed (a GPU lost): the others' readings are good, and the source itself
            # backs that device off, so the loop keeps its rhythm instead of backing off everything
            self._fail(e, 1)
            h.state = "sampling"
            readings = e.readings
        except Exception as e:
            self._read_done()
            self._failures += 1
            backoff = self._fail(e, self._failures)
            if self._failures >= REOPEN_AFTER_FAILURES:
                self._phase = "reopen"
            self.next_due_ns = time.monotonic_ns() + int(backoff * 1e9)
            return
        if self._failures:
            log.info("source %s: reading again after %d failed attempts", self.source.name, self._failures)
            self._failures = 0
        if h.state != "sampling":  # also after a failed snapshot, which counts no failure
            h.state = "sampling"
            h.next_try_mono_ns = 0
        h.delivered += 1
        self._emit(readings)
        self.next_due_ns = _on_grid(self.next_due_ns + self.period_ns, self.period_ns)

    def step_snapshot(self) -> None:
        """Read the energy counters now (a marker asked); only while sampling."""
        self.snapshot_pending = False
        if self._phase != "sample" or self.done:
            return
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

    def finish(self) -> None:
        """Close the source (the thread is stopping)."""
        self.done = True
        try:
            if self._phase != "open":  # never opened: nothing to close
                self.source.close()
        finally:
            if not (self._phase == "open" and self.health.state == "unavailable"):  # never opened: it stays unavailable
                self.health.state = "stopped"

    # The open step runs in the sampling thread too, so a slow device (a meter's handshake) delays no other thread.
    def _open(self) -> bool:
        try:
            self.info = self.source.open()
        except Exception as e:  # SourceUnavailable, or a driver error: either way the source is off until a re-probe
            reason = str(e) if isinstance(e, SourceUnavailable) else f"{type(e).__name__}: {e}".splitlines()[0]
            if reason != self.health.reason:  # once per distinct reason, not at every re-probe
                log.log(self.absent_level, UNAVAILABLE_LOG, self.source.name, reason)
            self.health.state = "unavailable"
            self.health.reason = reason
            return False
        self.health.devices = list(self.info.devices)
        self._opened()
        self._say_repeats()
        self.health.state = "sampling"
        self.health.reason = ""
        self.health.next_try_mono_ns = 0
        return True

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
        if readings:
            try:
                n, first_ns, last_ns = self.sink.add(self.source.name, readings)
            except MalformedReading as e:  # a third-party source's bad reading: one error, the others kept
                n, first_ns, last_ns = e.added
                self._fail(e, 1)
                self.health.state = "sampling"  # as for a PartialRead: nothing is retried, the rhythm holds
            self.health.readings += n
            if n:
                self.health.last_sample_ns = last_ns
            since = self._read_since_ns
            if since is not None and since - first_ns > self.stamp_lag_ns:
                self.stamp_lag_ns = since - first_ns
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

    def _say_repeats(self) -> None:
        """One line when this runner reads a device faster than the device updates its power (NVML on an H200:
        every 100 ms): the extra reads cost CPU and repeat values, they add no information."""
        slow = {dev: m.power_update_s for dev, m in self.series_meta().items() if m.power_update_s}
        if not slow:
            return
        update_s = min(u for u in slow.values() if u is not None)
        period_s = self.period_ns / 1e9
        if period_s < 0.5 * update_s:
            log.info("source %s: read every %g ms, but %s update%s power only every %g ms: about %d of %d reads repeat a "
                     "value (a rate of %g Hz reads each value once)", self.source.name, period_s * 1e3,
                     ", ".join(sorted(slow)), "s its" if len(slow) == 1 else " their", update_s * 1e3,
                     round(update_s / period_s) - 1, round(update_s / period_s), round(1 / update_s, 3))

    def series_meta(self) -> dict[str, SeriesMeta]:
        """The source's declared metadata per device, TICK periods replaced by this runner's period."""
        tick_s = self.period_ns / 1e9
        declared: dict[str, SeriesMeta] = getattr(self.info, "series", None) or {}  # a third-party SourceInfo may lack it
        return {dev: m.resolved(tick_s) for dev, m in declared.items()}


class Wake:
    """A wake-up one thread waits on with a timeout and any thread may give: a bare lock, held while no wake-up is
    pending, that ``set`` releases and ``wait`` takes back.

    Not a `threading.Event`: its wait runs a Condition in Python (a fresh lock, a waiter list, a try/finally) on every
    call, and a sampling thread waits once per tick. On this 2-core VM an empty 100 Hz wait cost 120–174 µs of CPU
    with this lock and 149–177 µs with an Event in seven runs (`bench/observer.py`, wake_cost; a plain sleep, which
    nothing can cut short, 83–114 µs): the difference is within the VM's noise. What is sure is less work per
    wait (no lock allocated, no waiter list, no clear). Several ``set`` before a ``wait`` are one wake-up; a ``set``
    while the waiter is between its wake-up and its next wait makes that next wait return at once.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # released already: a wake-up is pending
            self._lock.release()

    def wait(self, timeout_s: float) -> bool:
        """True when woken (the wake-up is taken), False when ``timeout_s`` passed first."""
        return self._lock.acquire(timeout=max(0.0, timeout_s))


class SamplingThread(threading.Thread):
    """Steps its runners at their deadlines: one wake-up per tick for all of them, whatever their periods.

    Sources whose reads return at once (NVML, RAPL, the estimate: ``blocking = False``) share one such thread, so a
    tick costs one wake-up and one cold start of the interpreter instead of one per source (the largest part of an
    idle daemon's CPU in the observer bench); a source that may wait on I/O (a meter, nvidia-smi, an unknown one)
    gets its own, so a slow read delays no one else.
    """

    def __init__(self, runners: list[SourceRunner], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.runners = runners
        self.wake = Wake()  # a snapshot request or stop cuts the wait short
        self.stop_event = threading.Event()
        for r in runners:
            r.thread = self

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def run(self) -> None:
        name_os_thread()  # `top -H` / `pidstat -t` tell the sampling thread from the store thread
        live = list(self.runners)
        try:
            while live and not self.stop_event.is_set():
                due_ns = min(r.next_due_ns for r in live)
                wait_ns = due_ns - time.monotonic_ns()
                # as precise as sleep, and a marker's snapshot request cuts the wait short
                if wait_ns > 0 and self.wake.wait(wait_ns / 1e9):
                    if self.stop_event.is_set():
                        break
                    for r in live:
                        if r.snapshot_pending:
                            r.step_snapshot()
                    continue
                for r in live:
                    now_ns = time.monotonic_ns()
                    if r.next_due_ns <= now_ns:
                        r.step(now_ns)
                if any(r.done for r in live):
                    live = [r for r in live if not r.done]
        finally:
            for r in self.runners:
                try:
                    r.finish()
                except Exception as e:  # one source failing to close must not keep the others open
                    log.warning("source %s: close failed: %s", r.name, e)


class Sampler:
    """All source runners, the threads that step them, and the column sink the daemon drains."""

    def __init__(
        self, sources: list[tuple[Source, float]], *, share_thread: bool = True, absent_level: int = logging.WARNING,
    ) -> None:
        """`absent_level`: the log level of "source … unavailable" (`jouled.measure` says it in its result instead)."""
        self.sink = ColumnSink()  # the one carrier from the sources' threads to the store (jouled/columns.py)
        self.runners = [SourceRunner(src, period_s, self.sink, absent_level=absent_level) for src, period_s in sources]
        # a source says it never waits on I/O with `blocking = False`; one not saying so may (a third-party one)
        shared = [r for r in self.runners if share_thread and not getattr(r.source, "blocking", True)]
        own = [r for r in self.runners if r not in shared]
        self.threads = [SamplingThread(shared, "jouled-sources")] if shared else []
        self.threads += [SamplingThread([r], f"jouled-{r.name}") for r in own]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        for t in self.threads:
            t.stop()
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

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
