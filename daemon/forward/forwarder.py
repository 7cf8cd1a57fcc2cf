"""The forwarder's core: tail the local log by persisted cursors and write it to InfluxDB in batches (blocking;
runs on its own thread).

Why its own thread and its own SQLite connection (the same SqliteStore object: connections are per thread) and
not `Daemon.in_store_thread`: a catch-up reads hundreds of MB of chunks and each batch waits on HTTP for tens of
ms; on the daemon's one store thread that would delay the sample flushes behind it. WAL lets this reader run
beside the daemon's writer without blocking it; the only writes here are the cursors (`meta`), serialised with the
daemon's writes by the store's lock. One more connection is one more page cache (a few MB, bounded).

Streams and cursors (`meta` keys `forward:<target>:<stream>`; another InfluxDB gets its own cursors):
- chunks: the id of the last raw chunk (res_s = 0) written; aggregates are never sent (they would double count).
- markers, allocation: the last rowid written.
- carbon: the newest actual (non-forecast) time written; its table has no rowid, so each pass re-reads the last
  CARBON_LOOKBACK_S and sends what it has not sent in this process (a restart re-sends a few hours: idempotent).
A cursor moves only after InfluxDB answered 2xx (at-least-once; a re-sent point overwrites itself).

Failures: down / timeout / 5xx / 429 keep the cursor and retry with backoff; 401/403/404 are one loud line naming
the key and a slow retry; a 400 bisects the batch, quarantines the bad lines (JSONL beside the log, with the
reason) and forwards the rest. Every error is logged once per distinct message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jouled import influxproto as lp
from jouled.backoff import Backoff
from jouled.clock import CLOCK
from jouled.daemon.forward.writers import WriteError, Writer
from jouled.osthread import name_os_thread
from jouled.secrets import write_private_file
from jouled.store.sqlite import SeriesKey, SqliteStore

log = logging.getLogger("jouled.forward")

CARBON_LOOKBACK_S = 6 * 3600.0
CARBON_EVERY_S = 10.0
CHUNKS_PER_READ = 4096
BACKLOG_EVERY_S = 1.0
DISK_EVERY_S = 30.0
# cursors are saved in the log at most this often (and when the forwarder stops): after a crash at most this much
# is sent again, which overwrites itself; a save each pass was one more write transaction on the log a flush
CURSOR_SAVE_S = 5.0


def quarantine_path(store_path: Path) -> Path:
    """Where refused points go: `<log>.forward-quarantine.jsonl` beside the log."""
    return store_path.with_name(store_path.name + ".forward-quarantine.jsonl")


@dataclass
class ForwardStats:
    target: str
    state: str = "starting"  # starting | forwarding | idle | retrying | config-error | stopped
    points_sent: int = 0
    batches: int = 0
    errors: int = 0
    last_error: str = ""
    quarantined: int = 0
    lag_s: float | None = None
    backlog_points: int = 0
    backlog_chunks: int = 0
    forwarded_until_ns: int | None = None
    delivery_delay_s: float | None = None
    log_mb: float = 0.0


class Quarantine:
    """Append-only JSONL of refused points: {"time_ns", "stream", "reason", "line"}; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def add(self, stream: str, reason: str, lines: list[str]) -> None:
        now = CLOCK.now_ns()
        text = "".join(json.dumps({"time_ns": now, "stream": stream, "reason": reason, "line": ln}) + "\n" for ln in lines)
        with self._lock:
            if not self.path.exists():
                write_private_file(self.path, "", 0o640)  # it holds host/run names: as private as the log
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)


class Forwarder:
    """Tail `store` into `writer`. `run(stop)` loops until stop is set; `drain()` sends everything there is now."""

    def __init__(
        self, store: SqliteStore, writer: Writer, *, target: str, batch_size: int = 5000, max_retry_s: float = 60.0,
        poll_s: float = 0.5, health_period_s: float = 10.0, health_lines: Callable[[], list[str]] | None = None,
        host: str = "", disk_budget_mb: float = 0.0, in_flight: int = 2, min_retry_s: float = 0.5,
    ) -> None:
        self.store = store
        self.writer = writer
        self.key_prefix = f"forward:{target}:"
        self.batch_size = batch_size
        self.max_retry_s = max_retry_s
        self.poll_s = poll_s
        self.health_period_s = health_period_s
        self.health_lines = health_lines
        self.host = host
        self.disk_budget_mb = disk_budget_mb
        self.in_flight = max(1, in_flight)
        self.stats = ForwardStats(target=writer.target)
        self.quarantine = Quarantine(quarantine_path(store.path))
        self.stats.quarantined = self.quarantine.count()
        self.backoff = Backoff(min(min_retry_s, max_retry_s), max_retry_s)
        self._prefixes: dict[SeriesKey, str] = {}
        self._carbon_sent: dict[tuple[str, str, bool, int], float] = {}
        self._cursors: dict[str, int] = {}
        self._unsaved: dict[str, int] = {}  # cursors moved since the last save
        self._saved_at = time.monotonic()
        self._last_logged = ""
        self._last_backlog = 0.0
        self._last_disk = 0.0
        self._last_health = 0.0
        self._last_carbon = -CARBON_EVERY_S
        self._over_budget = False
        self._pool: ThreadPoolExecutor | None = None
        self._stat_lock = threading.Lock()
        self._done = threading.Event()  # run() has returned
        # set by `nudge` (the daemon, after each flush; its stop): run() waits on it between passes, poll_s at most
        self._wake = threading.Event()
        self._more = False  # the last pass stopped at a read limit: more is waiting, the next pass goes at once
        self._drained = False  # the last pass read every chunk there was: no backlog then, without asking the log

    # -- cursors ---------------------------------------------------------------------------------------------

    def cursor(self, stream: str) -> int:
        if stream not in self._cursors:
            self._cursors[stream] = int(self.store.get_meta(self.key_prefix + stream, "0") or 0)
            if stream == "chunks" and self.stats.forwarded_until_ns is None and self._cursors[stream]:
                self.stats.forwarded_until_ns = self.store.chunk_t1_ns(self._cursors[stream])
        return self._cursors[stream]

    def chunk_cursor(self) -> int | None:
        """The chunk id up to which the log may be compacted/downsampled (maintenance's max_id); None before the
        first read (then nothing may move yet: 0)."""
        return self._cursors.get("chunks", 0)

    def _advance(self, stream: str, value: int) -> None:
        self._cursors[stream] = value
        self._unsaved[stream] = value
        if time.monotonic() - self._saved_at >= CURSOR_SAVE_S:
            self.save_cursors()

    def save_cursors(self) -> None:
        """Write the cursors that moved into the log (one transaction)."""
        if self._unsaved:
            self.store.set_metas({self.key_prefix + k: str(v) for k, v in self._unsaved.items()})
            self._unsaved.clear()
        self._saved_at = time.monotonic()

    # -- the loop --------------------------------------------------------------------------------------------

    def nudge(self) -> None:
        """New rows are in the log (the daemon's flush committed), or `stop` was set: the waiting pass starts now."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Forward until `stop` is set; never raises (a failure is logged once, counted and retried).

        A pass sends what the log holds, then waits for the next `nudge` (poll_s at most: a forwarder nobody nudges
        still follows the log). No pass that finds nothing right after one that drained it: one pass per flush."""
        log.info("forwarding the log to InfluxDB %s", self.writer.target)
        name_os_thread("jouled-forward")  # an executor's thread: `top -H` and the observer bench tell it apart
        try:
            while not stop.is_set():
                self._wake.clear()  # before the pass: a flush committed during it nudges the next one
                try:
                    sent = self.step()
                except WriteError as e:
                    self._failed(e.kind, str(e))
                    self._backlog_while_failing()
                    stop.wait(self.max_retry_s if e.kind == "config" else self.backoff.next_delay())
                    continue
                except Exception as e:  # the log unreadable, a bug: counted, logged once, retried
                    self._failed("retry", f"{type(e).__name__}: {e}".splitlines()[0])
                    stop.wait(self.backoff.next_delay())
                    continue
                self._recovered()
                if sent == 0:
                    self.stats.state = "idle"
                if not self._more:
                    self._wake.wait(self.poll_s)
        finally:
            self.stats.state = "stopped"
            try:
                self.save_cursors()
            except Exception as e:  # the log failing at the end: at most CURSOR_SAVE_S is sent again next time
                log.warning("forward: cursors not saved (%s)", e)
            self.store.close()  # this thread's connection; the writer stays open for finish()
            name_os_thread()  # the executor's own name again, for whatever it runs next
            self._done.set()

    def finish(self, timeout_s: float = 5.0) -> None:
        """At shutdown, after the daemon's final flush: once run() has returned, send what is left (within about
        timeout_s; skipped when the last attempt failed — the next start catches up), then close."""
        try:
            if not self._done.wait(timeout_s):
                return  # run() is still inside a write: leave the rest to the next start
            if self.stats.last_error:
                return
            try:
                self.drain(timeout_s=timeout_s)
            except WriteError as e:
                log.warning("%s; the rest is sent at the next start", e)
        finally:
            self.close()

    def close(self) -> None:
        """Release the write client and this thread's store connection (run() does it when it ends)."""
        try:
            self.save_cursors()
        except Exception as e:
            log.warning("forward: cursors not saved (%s)", e)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.writer.close()
        self.store.close()

    def drain(self, timeout_s: float = 600.0) -> int:
        """Send everything the log holds now (tests, benchmarks, a final pass); raises WriteError on failure."""
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            n = self.step(health=False)
            total += n
            if n == 0:
                break
        self.save_cursors()
        self._update_backlog(force=True)
        return total

    def step(self, *, health: bool = True) -> int:
        """One pass: markers, allocations, carbon, then up to a read's worth of sample chunks. Points sent."""
        self._more = self._drained = False
        n = self._markers() + self._allocations() + self._carbon(force=not health) + self._chunks()
        self._update_backlog(force=n == 0)
        self._check_disk()
        if health:
            self._health()
        if n:
            self.stats.state = "forwarding"
        return n

    def _backlog_while_failing(self) -> None:
        """Keep lag and backlog current while writes fail (the status shows the outage growing)."""
        self._drained = False  # asked of the log, whatever the failed pass got to
        try:
            self._update_backlog()
            self._check_disk()
        except Exception as e:  # the log itself failing: the next step reports it
            log.debug("forward: backlog unknown (%s)", e)

    def _failed(self, kind: str, msg: str) -> None:
        with self._stat_lock:
            self.stats.errors += 1
            self.stats.last_error = msg
        self.stats.state = "config-error" if kind == "config" else "retrying"
        if msg != self._last_logged:
            if kind == "config":
                log.error("%s (nothing is lost: the log keeps it; retrying every %.0f s)", msg, self.max_retry_s)
            else:
                log.warning("%s; keeping the backlog and retrying with backoff", msg)
            self._last_logged = msg

    def _recovered(self) -> None:
        if self._last_logged:
            log.info("InfluxDB %s: writing again (backlog %d points)", self.writer.target, self.stats.backlog_points)
            self._last_logged = ""
            self.stats.last_error = ""
        self.backoff.reset()

    # -- sending -----------------------------------------------------------------------------------------------

    def _send(self, stream: str, lines: list[str]) -> None:
        """Write lines in batch_size slices; a rejected slice is bisected to its bad lines, which are quarantined."""
        for i in range(0, len(lines), self.batch_size):
            self._send_slice(stream, lines[i:i + self.batch_size])

    def _send_slice(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.writer.write(lp.join_lines(lines))
        except WriteError as e:
            if e.kind != "reject":
                raise
            self._bisect(stream, lines, e)
        with self._stat_lock:
            self.stats.points_sent += len(lines)
            self.stats.batches += 1

    def _bisect(self, stream: str, lines: list[str], err: WriteError) -> None:
        # a v1 'partial write' says how many it dropped: all of them → no need to look further
        if len(lines) == 1 or (err.dropped is not None and err.dropped >= len(lines)):
            self._quarantine(stream, str(err), lines)
            return
        mid = len(lines) // 2
        for half in (lines[:mid], lines[mid:]):
            try:
                self.writer.write(lp.join_lines(half))
            except WriteError as e:
                if e.kind != "reject":
                    raise
                self._bisect(stream, half, e)

    def _quarantine(self, stream: str, reason: str, lines: list[str]) -> None:
        self.quarantine.add(stream, reason, lines)
        with self._stat_lock:
            self.stats.quarantined += len(lines)
        log.warning("forward: %d %s point(s) refused and quarantined in %s (%s)", len(lines), stream,
                    self.quarantine.path, reason)

    # -- streams -----------------------------------------------------------------------------------------------

    def _markers(self) -> int:
        rows = self.store.markers_after(self.cursor("markers"), limit=self.batch_size)
        if not rows:
            return 0
        self._more |= len(rows) >= self.batch_size
        lines = []
        for _id, m in rows:
            try:
                lines.append(lp.encode_marker(m))
            except lp.LineProtocolError as e:
                self._quarantine("marker", str(e), [repr(m)])
        self._send("marker", lines)
        self._advance("markers", rows[-1][0])
        return len(lines)

    def _allocations(self) -> int:
        rows = self.store.allocations_after(self.cursor("allocation"), limit=self.batch_size)
        if not rows:
            return 0
        self._more |= len(rows) >= self.batch_size
        lines = []
        for _id, a in rows:
            try:
                line = lp.encode_allocation(a)
            except lp.LineProtocolError as e:
                self._quarantine("allocation", str(e), [repr(a)])
                continue
            if line is not None:
                lines.append(line)
        self._send("allocation", lines)
        self._advance("allocation", rows[-1][0])
        return len(lines)

    def _carbon(self, *, force: bool = False) -> int:
        # its table has no index by time alone: read it every CARBON_EVERY_S, not every pass (carbon changes slowly)
        now = time.monotonic()
        if not force and now - self._last_carbon < CARBON_EVERY_S:
            return 0
        self._last_carbon = now
        since = self.cursor("carbon") - int(CARBON_LOOKBACK_S * 1e9)
        new: list[tuple[tuple[str, str, bool, int], float, str]] = []
        for forecast in (False, True):
            for c in self.store.read_carbon(start_ns=since, forecast=forecast):
                key = (c.zone, c.provider, c.forecast, c.time_ns)
                if self._carbon_sent.get(key) == c.intensity_g_per_kwh:
                    continue
                try:
                    line = lp.encode_carbon(c)
                except lp.LineProtocolError as e:
                    self._quarantine("carbon", str(e), [repr(c)])
                    self._carbon_sent[key] = c.intensity_g_per_kwh
                    continue
                if line is not None:
                    new.append((key, c.intensity_g_per_kwh, line))
        if not new:
            return 0
        self._send("carbon", [ln for _k, _v, ln in new])
        for key, v, _ln in new:
            self._carbon_sent[key] = v
        actual = [k[3] for k, _v, _ln in new if not k[2]]
        if actual and max(actual) > self.cursor("carbon"):
            self._advance("carbon", max(actual))
        floor = self.cursor("carbon") - int(CARBON_LOOKBACK_S * 1e9)
        self._carbon_sent = {k: v for k, v in self._carbon_sent.items() if k[3] >= floor}
        return len(new)

    def _prefix(self, key: SeriesKey) -> str:
        p = self._prefixes.get(key)
        if p is None:  # a series not seen yet: its declared role/kind (once per series)
            metas = {k: k.meta for k in self.store.series()}
            p = lp.power_prefix(lp.sample_tags(key.host, key.source, key.device, metas.get(key)))
            self._prefixes[key] = p
        return p

    def _chunks(self) -> int:
        """Sample chunks, pipelined: up to `in_flight` writes in the air while the next batch is read and encoded;
        the cursor follows the writes that completed, in order. A batch that is all there is (a read short of its
        limits with nothing in the air: the steady state, a flush's worth) is written on this thread, not handed to
        the pool and waited for (two thread wake-ups less a pass)."""
        pending: deque[tuple[Future[None], int, int, int]] = deque()  # (write, last chunk id, newest t, points)
        self._drained = False
        cur = self.cursor("chunks")
        sent = 0
        reads = 0
        try:
            while reads < 64:  # bounded, so markers and health get their turn during a long catch-up
                rows = self.store.raw_chunks_after(cur, limit=CHUNKS_PER_READ, max_points=self.batch_size)
                if not rows:
                    self._drained = not pending
                    break
                reads += 1
                last = len(rows) < CHUNKS_PER_READ and sum(len(d) for _c, _k, d in rows) < self.batch_size
                lines: list[str] = []
                for _cid, key, data in rows:
                    try:
                        prefix = self._prefix(key)
                    except lp.LineProtocolError as e:
                        self._quarantine("power", f"{e} ({len(data)} samples of {key.source}:{key.device})",
                                         [f"{key!r} t0_ns={int(data.time_ns[0]) if len(data) else 0} n={len(data)}"])
                        continue
                    lines.extend(lp.encode_samples(prefix, data.time_ns, data.power_w, data.energy_j))
                cur = rows[-1][0]
                t1 = max((int(d.time_ns[-1]) for _c, _k, d in rows if len(d)), default=0)
                if self.in_flight == 1 or (last and not pending):
                    self._send("power", lines)
                    self._chunk_done(cur, t1)
                else:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="jouled-fwd")
                    pending.append((self._pool.submit(self._send, "power", lines), cur, t1, len(lines)))
                    while len(pending) >= self.in_flight:
                        fut, cid, t, _n = pending.popleft()
                        fut.result()
                        self._chunk_done(cid, t)
                sent += len(lines)
                if last:  # the log had no more when read: a flush since then nudges the next pass
                    self._drained = not pending
                    break
            else:
                self._more = True  # stopped at the read limit: markers and health had their turn, the rest goes next
            while pending:
                fut, cid, t, _n = pending.popleft()
                fut.result()
                self._chunk_done(cid, t)
        finally:
            for fut, *_ in pending:  # a write failed: let the others finish; their cursor is not advanced
                fut.exception()
        return sent

    def _chunk_done(self, cid: int, t1_ns: int) -> None:
        self._advance("chunks", cid)
        if t1_ns and (self.stats.forwarded_until_ns is None or t1_ns > self.stats.forwarded_until_ns):
            self.stats.forwarded_until_ns = t1_ns
        if t1_ns:  # sampled → acknowledged by InfluxDB, for the newest sample of this batch
            self.stats.delivery_delay_s = (CLOCK.now_ns() - t1_ns) / 1e9

    # -- status, health, disk ----------------------------------------------------------------------------------

    def _update_backlog(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_backlog < BACKLOG_EVERY_S:
            return
        self._last_backlog = now
        if self._drained:  # the pass sent every chunk the log held when it read: nothing behind the cursor then
            self.stats.backlog_chunks = self.stats.backlog_points = 0
            self.stats.lag_s = 0.0
            return
        chunks, points, newest = self.store.raw_backlog(self.cursor("chunks"))
        self.stats.backlog_chunks, self.stats.backlog_points = chunks, points
        done = self.stats.forwarded_until_ns
        if newest is None or done is None:
            self.stats.lag_s = 0.0 if newest is None else None
        else:
            self.stats.lag_s = max(0.0, (newest - done) / 1e9)

    def _check_disk(self) -> None:
        now = time.monotonic()
        if self.disk_budget_mb <= 0 or now - self._last_disk < DISK_EVERY_S:
            return
        self._last_disk = now
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.stat(f"{self.store.path}{suffix}").st_size
            except OSError:
                pass
        self.stats.log_mb = size / 1e6
        over = self.stats.log_mb > self.disk_budget_mb
        if over and not self._over_budget:
            log.error("store %s: %.0f MB, past [influx] disk_budget_mb = %g with %d points not yet forwarded to %s — "
                      "bring InfluxDB back (see `jouled status`), or raise disk_budget_mb", self.store.path,
                      self.stats.log_mb, self.disk_budget_mb, self.stats.backlog_points, self.writer.target)
        elif not over and self._over_budget:
            log.info("store %s: back under [influx] disk_budget_mb (%.0f MB)", self.store.path, self.stats.log_mb)
        self._over_budget = over

    def _health(self) -> None:
        now = time.monotonic()
        if now - self._last_health < self.health_period_s:
            return
        self._last_health = now
        lines = list(self.health_lines()) if self.health_lines is not None else []
        own = lp.encode_health(self.host, "forwarder", self.health_fields(), CLOCK.now_ns())
        if own is not None:
            lines.append(own)
        try:
            self.writer.write(lp.join_lines(lines))
        except WriteError as e:
            if e.kind != "reject":
                raise
            log.debug("forward: health points refused (%s)", e)

    def health_fields(self) -> dict[str, float | int | None]:
        s = self.stats
        return {"lag_s": s.lag_s, "backlog_points": s.backlog_points, "points_sent": s.points_sent,
                "errors": s.errors, "quarantined": s.quarantined}

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "url": s.target, "state": s.state, "lag_s": s.lag_s, "delivery_delay_s": s.delivery_delay_s,
            "backlog_points": s.backlog_points,
            "backlog_chunks": s.backlog_chunks, "points_sent": s.points_sent, "batches": s.batches,
            "errors": s.errors, "last_error": s.last_error, "quarantined": s.quarantined,
            "quarantine_path": str(self.quarantine.path), "log_mb": round(s.log_mb, 1),
            "disk_budget_mb": self.disk_budget_mb, "over_disk_budget": self._over_budget,
        }
