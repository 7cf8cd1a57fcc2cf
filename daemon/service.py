"""The daemon: one asyncio loop that batches samples into the local log, keeps the status file and talks to systemd."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jouled.clock import CLOCK
from jouled.config import Config
from jouled.daemon import memory, sdnotify
from jouled.daemon.statussock import serve_status
from jouled.daemon.storethread import StoreThread
from jouled.errors import UserError
from jouled.sampler import Sampler
from jouled.secrets import make_private_dir, write_private_file
from jouled.series import SeriesMeta, default_meta
from jouled.sources.base import Source
from jouled.statusfile import beside_store_path, default_status_path
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore

T = TypeVar("T")
log = logging.getLogger("jouled.daemon")

MAINTENANCE_PERIOD_S = 60.0
STATUS_COPY_PERIOD_S = 30.0  # the status copy beside the log (the status file itself: every health_interval_s)
SOURCES_OPEN_WAIT_S = 10.0  # READY waits this long for the sources to open (a meter's handshake takes a while)
SIDE_TASKS_STOP_S = 10.0  # at shutdown, how long the marker recorder and the other side tasks get to finish
MAX_PENDING_SAMPLES = 5_000_000  # ~10 min of 1000 Hz × 8 devices held in memory while the store is down


@dataclass
class StoreHealth:
    path: str
    written: int = 0
    pending: int = 0
    flushes: int = 0
    write_errors: int = 0
    last_error: str = ""
    last_flush_ns: int = 0
    dropped: int = 0


class StoreLock:
    """An exclusive lock on ``<log>.lock`` beside the log, held for the daemon's life: one daemon per log.

    flock: the kernel drops it when the process dies (SIGKILL included), so a crash never leaves a stale lock.
    The file keeps the holder's pid, for the message the second daemon prints.
    """

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.path = store_path.with_name(store_path.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            make_private_dir(self.path.parent)  # the store's folder: 0750 when jouled creates it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as e:
            raise UserError(
                f"store {self.store_path}: cannot create its lock file {self.path} ({e.strerror}) — "
                "choose a writable --store or [store] path"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"store {self.store_path} is in use by jouled pid {pid} — stop it or pass --store"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def __del__(self) -> None:  # a daemon built but never run must not keep its log locked
        self.release()

    def release(self) -> None:
        # the file stays: removing it would let a third daemon lock a new inode while a second holds the old
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sampling_summary(health: list[dict[str, Any]]) -> str:
    """The start line: `sampling 1 of 4 sources (estimate); off: nvml (reason) …`, counting sources that work."""
    on = [h["name"] for h in health if h["state"] not in ("unavailable", "starting", "stopped")]
    off = [h for h in health if h["state"] == "unavailable"]
    waiting = [h["name"] for h in health if h["state"] == "starting"]
    out = f"sampling {len(on)} of {len(health)} sources ({', '.join(on) or 'none'})"
    if off:
        # the why without the fix: each source's whole reason was logged when it failed to open
        out += "; off: " + "; ".join(f"{h['name']} ({h['reason'].split(' — ')[0]})" for h in off)
    if waiting:
        out += f"; still opening: {', '.join(waiting)}"
    return out


@dataclass
class Daemon:
    """Owns the sampler, the store and the side tasks (markers, carbon, forwarding) plugged in as coroutines."""

    config: Config
    sources: list[tuple[Source, float]]
    store: SqliteStore
    status_path: Path
    tasks: list[Callable[[Daemon], Coroutine[Any, Any, None]]] = field(default_factory=list)
    status_extras: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    recorder: Any = None  # the MarkerRecorder, when markers are on
    lock: StoreLock | None = None  # one daemon per log (build_daemon takes it; run() holds it until it returns)
    # the forwarder's chunk cursor: maintenance neither merges nor downsamples chunks past it (not yet forwarded)
    maintain_max_id: Callable[[], int | None] | None = None
    # run after the final flush at shutdown (the forwarder's last pass: what that flush wrote reaches InfluxDB)
    after_final_flush: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # called after each commit of new rows to the log (`logged`: the store thread's flush that wrote samples, the
    # recorder's stored markers), on whichever thread committed (the forwarder's nudge): cheap, never blocking
    on_flush: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sampler = Sampler(self.sources, share_thread=self.config.daemon.shared_sampling_thread)
        self.host = self.config.daemon.host
        self.store_health = StoreHealth(path=str(self.store.path))
        self._pending: list[ChunkBatch] = []
        # series whose metadata this daemon has stored, with the source's open generation it came from
        self._declared: dict[SeriesKey, int] = {}
        self._runners = {r.source.name: r for r in self.sampler.runners}
        self._stop = asyncio.Event()
        self.started_ns = CLOCK.now_ns()
        # the status lives in a runtime dir (writable when the store's disk is full); a copy stays beside the log,
        # where tools found it before, whenever that disk takes it
        self.status_copy: Path | None = None
        if not self.config.daemon.status_path and self.status_path == default_status_path(self.store.path):
            self.status_copy = beside_store_path(self.store.path)
        self._status_errors: dict[Path, str] = {}
        self._copy_written_s = float("-inf")
        self._store_thread: StoreThread | None = None

    async def in_store_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a store call on the daemon's one store thread (daemon/storethread.py).

        asyncio.to_thread would spread store calls over the default pool's threads, each opening its own SQLite
        connection with its own page cache; one thread keeps one connection, so the daemon's memory stays flat
        (the 10-minute soak grew 85 MB/h with the pool) and writes are serialised without lock contention.
        """
        if self._store_thread is None:  # outside run() (tests, a one-off flush): a thread without the timers
            self._store_thread = StoreThread()
            self._store_thread.start()
        return await asyncio.wrap_future(self._store_thread.submit(fn, *args, **kwargs))

    def stop(self) -> None:
        self._stop.set()

    # -- storage ---------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Move queued readings into the log now (on the store thread); see `flush_now`."""
        return await self.in_store_thread(self.flush_now)

    def flush_now(self) -> int:
        """Move queued readings into the log. On a write error keep them and retry at the next flush.

        Runs on the store thread only (its timer, or `flush`), so `_pending` has one owner."""
        # the watermark first, the drain second: the drain then holds every reading stamped before it
        complete = {
            SeriesKey(self.host, src, dev): t for src, (t, devices) in self.sampler.complete().items() for dev in devices
        }
        self._pending.extend(self.sampler.drain(self.host))
        if not self._pending and not complete:
            return 0
        batches, self._pending = self._pending, []
        declare = self._declarations(batches)
        try:
            n = self.store.write_batches(
                batches, declare={k: m for k, (m, _g, _t) in declare.items()},
                since_ns=min((t for _m, _g, t in declare.values()), default=0), complete=complete,
            )
        except Exception as e:
            self._pending = batches + self._pending
            h = self.store_health
            h.write_errors += 1
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            if msg != h.last_error:
                log.error("store %s: write failed (%s); keeping %d samples in memory and retrying", h.path, msg,
                          sum(len(b) for b in batches))
            h.last_error = msg
            h.pending = self._bound_pending()
            return 0
        for key, (_m, gen, _t) in declare.items():
            self._declared[key] = gen
        h = self.store_health
        h.written += n
        h.flushes += 1
        h.pending = sum(len(b) for b in self._pending)
        h.last_flush_ns = CLOCK.now_ns()
        if h.last_error:
            log.info("store %s: writing again", h.path)
            h.last_error = ""
        if n:
            self.logged()
        return n

    def logged(self) -> None:
        """New rows are committed to the log: what follows the log (the forwarder) goes now, not at its next poll."""
        for hook in self.on_flush:
            hook()

    def _bound_pending(self) -> int:
        """Bounded memory while the store refuses writes: drop the oldest batches past MAX_PENDING_SAMPLES, and count
        them. Returns the samples still pending."""
        n = sum(len(b) for b in self._pending)
        h = self.store_health
        while n > MAX_PENDING_SAMPLES and len(self._pending) > 1:
            old = self._pending.pop(0)
            n -= len(old)
            h.dropped += len(old)
        if n > MAX_PENDING_SAMPLES:  # one huge batch: keep its newest part
            b = self._pending[0]
            cut = n - MAX_PENDING_SAMPLES
            self._pending[0] = ChunkBatch(b.key, b.time_ns[cut:], b.power_w[cut:], b.energy_j[cut:],
                                          {k: v[cut:] for k, v in b.extras.items()})
            h.dropped += cut
            n -= cut
        return n

    def _declarations(self, batches: list[ChunkBatch]) -> dict[SeriesKey, tuple[SeriesMeta, int, int]]:
        """Metadata of the series in `batches` not yet stored since their source (re)opened: (meta, generation, since).

        What the source declared (periods resolved to its sampler period), else the default from the source name
        with the sampler's period. Costs a dict lookup per batch; the store adds a row only when a declaration changed.
        """
        out: dict[SeriesKey, tuple[SeriesMeta, int, int]] = {}
        for b in batches:
            runner = self._runners.get(b.key.source)
            gen = runner.meta_generation if runner is not None else 0
            if self._declared.get(b.key) == gen:
                continue
            meta = runner.series_meta().get(b.key.device) if runner is not None else None
            if meta is None:
                tick_s = runner.period_ns / 1e9 if runner is not None else None
                meta = default_meta(b.key.source, b.key.device, tick_s)
            out[b.key] = (meta, gen, runner.opened_ns if runner is not None and runner.opened_ns else CLOCK.now_ns())
        return out

    async def _maintenance_loop(self) -> None:
        s = self.config.store
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), MAINTENANCE_PERIOD_S)
            if self._stop.is_set():
                return
            try:
                await self.in_store_thread(
                    self.store.maintain,
                    now_ns=CLOCK.now_ns(),
                    raw_retention_s=s.raw_retention_days * 86400,
                    aggregate_retention_s=s.aggregate_retention_days * 86400,
                    aggregate_period_s=s.aggregate_period_s,
                    max_id=self.maintain_max_id() if self.maintain_max_id is not None else None,
                )
                memory.trim()  # after housekeeping freed its buffers: flat RSS over months (daemon/memory.py)
            except Exception as e:  # housekeeping must never stop sampling
                log.warning("store maintenance failed: %s", e)

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = CLOCK.now_ns()
        h = self.store_health
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "host": self.host,
            "started_ns": self.started_ns,
            "updated_ns": now,
            "uptime_s": (now - self.started_ns) / 1e9,
            "sources": self.sampler.health(),
            "store": {
                "path": h.path,
                "written": h.written,
                "pending": h.pending + len(self.sampler.sink),
                "flushes": h.flushes,
                "write_errors": h.write_errors,
                "last_error": h.last_error,
                "dropped": h.dropped,
                "last_flush_age_s": (now - h.last_flush_ns) / 1e9 if h.last_flush_ns else None,
            },
        }
        for name, fn in self.status_extras.items():
            out[name] = fn()
        return out

    def write_status(self, *, final: bool = False) -> None:
        """Write the status file (and its copy beside the log); raise OSError only when the status file itself fails.

        The copy beside the log (what `jouled status` finds after the runtime dir is gone) is refreshed every
        STATUS_COPY_PERIOD_S, at the end, and every time while the status file itself cannot be written: a rename
        a second on the log's disk was a third of an idle daemon's CPU.
        """
        st = self.status()
        primary_error: OSError | None = None
        now_s = time.monotonic()
        copy_due = final or now_s - self._copy_written_s >= STATUS_COPY_PERIOD_S or self.status_path in self._status_errors
        for path in (self.status_path, self.status_copy if copy_due else None):
            if path is None:
                continue
            if path == self.status_copy:
                self._copy_written_s = now_s
            try:
                write_json_atomic(path, st)
            except OSError as e:
                if path == self.status_path:
                    primary_error = e
                msg = e.strerror or str(e)
                if self._status_errors.get(path) != msg:  # once per distinct error, not every second
                    log.warning("status file %s: cannot write (%s)", path, msg)
                self._status_errors[path] = msg
            else:
                if self._status_errors.pop(path, None):
                    log.info("status file %s: writing again", path)
        if primary_error is not None:
            raise primary_error

    def status_changed(self) -> None:
        """Rewrite the status file soon (on the store thread), not at the next health interval: for a change its
        readers wait on (the marker recorder subscribed). `jouled status` asks the socket, which is always current."""
        st = self._store_thread
        if st is not None and st.periodic_on.is_set():
            st.submit(self._status_tick)

    def _status_tick(self) -> None:
        """The status file, on the store thread's timer."""
        with contextlib.suppress(OSError):  # logged by write_status, once per distinct error
            self.write_status()

    async def _watchdog_loop(self) -> None:
        """systemd's watchdog pings, from the event loop itself: a stuck loop stops them (only under WatchdogSec=)."""
        wd = sdnotify.watchdog_interval_s()
        if wd is None:
            return
        while not self._stop.is_set():
            sdnotify.notify("WATCHDOG=1")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wd)

    # -- lifecycle -------------------------------------------------------------------------------

    async def _announce_when_open(self) -> None:
        """READY once every source has opened (or failed to), with the count of those that work."""
        deadline = time.monotonic() + SOURCES_OPEN_WAIT_S
        while any(r.health.state == "starting" and r.is_alive() for r in self.sampler.runners):
            if time.monotonic() > deadline or self._stop.is_set():
                break
            await asyncio.sleep(0.05)
        summary = sampling_summary(self.sampler.health())
        self.status_changed()  # the file shows the sources open, not one health interval later
        sdnotify.notify(f"READY=1\nSTATUS={summary.split(';')[0]} into {self.store.path}")
        log.info("jouled %s into %s", summary, self.store.path)
        memory.trim()  # what the imports and the sources' opening freed goes back to the OS: a smaller steady RSS

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        if self.lock is not None:
            self.lock.acquire()  # no-op when build_daemon already holds it
        try:
            return await self._run(duration_s)
        finally:
            if self.lock is not None:
                self.lock.release()

    async def _run(self, duration_s: float | None = None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        memory.limit_arenas()  # before the sampling threads start: each would get its own glibc arena
        self.sampler.start()
        if self._store_thread is not None:  # started early by a store call before run(): this one has the timers
            self._store_thread.stop()
        self._store_thread = StoreThread([(self.config.daemon.flush_interval_s, self.flush_now),
                                          (self.config.daemon.health_interval_s, self._status_tick)])
        self._store_thread.start()
        self.status_changed()  # a first status file now, not one health interval later
        status_server = asyncio.create_task(serve_status(self), name="status socket")
        side = [asyncio.create_task(t(self), name=getattr(t, "__name__", "task")) for t in self.tasks]
        core = [
            asyncio.create_task(self._watchdog_loop()),
            asyncio.create_task(self._maintenance_loop()),
        ]
        await asyncio.sleep(0)
        announce = asyncio.create_task(self._announce_when_open())
        try:
            if duration_s is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), duration_s)
            else:
                await self._stop.wait()
        finally:
            self._stop.set()
            await announce
            sdnotify.notify("STOPPING=1")
            for t in side:
                t.cancel()
            # bounded: a side task stuck in its own shutdown (a broker that never answers the disconnect) must not
            # keep the final flush from running
            done, stuck = await asyncio.wait(side, timeout=SIDE_TASKS_STOP_S) if side else (set(), set())
            for t in done:  # retrieved, as gather(return_exceptions=True) did: no "never retrieved" noise
                if not t.cancelled():
                    t.exception()
            for t in stuck:
                log.error("shutdown: task %s did not stop within %.0f s; going on without it", t.get_name(),
                          SIDE_TASKS_STOP_S)
            await asyncio.to_thread(self.sampler.stop)
            await asyncio.gather(*core, return_exceptions=True)
            self._store_thread.periodic_on.clear()  # the timers stop: the final flush and status are the last
            await self.flush()  # final flush: every reading taken reaches the log
            if self._pending:
                log.error("store %s: %d samples could not be written at shutdown", self.store.path,
                          sum(len(b) for b in self._pending))
            for hook in self.after_final_flush:
                try:
                    await hook()
                except Exception as e:  # a last courtesy: shutdown goes on whatever it meets
                    log.warning("shutdown: %s failed: %s", getattr(hook, "__name__", "hook"), e)
            with contextlib.suppress(OSError):
                self.write_status(final=True)
            await asyncio.to_thread(self._store_thread.stop)  # its calls are done (the final flush above)
            self._store_thread = None
            # live until here: `jouled status` during a slow shutdown sees it happen
            status_server.cancel()
            await asyncio.gather(status_server, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        return self.status()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so `jouled status` never reads half a file."""
    make_private_dir(path.parent)  # 0750: the status names paths and errors; the owner and its group read it
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    try:
        write_private_file(tmp, json.dumps(data, default=str), 0o640)
        os.replace(tmp, path)
    except OSError:  # a full disk: leave no half-written temp file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
