"""Training-side marker client: publish run/epoch/phase markers over MQTT without ever blocking the training step.

Usage::

    from jouled.trainer.markers import MarkerClient

    with MarkerClient("mqtt://127.0.0.1:1883") as client:
        with client.run("resnet18-seed0", arch="resnet18", gpus=["gpu0"]) as r:
            for n in range(epochs):
                with r.epoch(n):
                    with r.phase("train"):
                        train_one_epoch()
                    with r.phase("eval"):
                        evaluate()

How it works:

* Timestamps are ``time.time_ns()`` taken in the caller's thread at the moment of the call: UTC ns
  since the Unix epoch, the same time base the daemon stamps its samples with (``jouled.clock`` is the
  host's UTC clock anchored to the monotonic clock), so windows line up with samples on the same host.
  Each marker also carries ``time.monotonic_ns()`` and the boot id: the daemon of the same host and boot
  places the marker by that reading, so an NTP step of the wall clock during a run moves no window.
* The caller only appends to an in-memory queue (no system call, no lock held across I/O): a
  background thread serialises, writes to the spool and publishes with QoS 1.
* Every marker is first appended to a spool file (JSON lines, ``fsync`` in batches) and leaves it only
  when the broker acknowledged it (PUBACK). If the broker is unreachable, markers stay in the spool and
  are published in order when it comes back. A spool left by a process that died (its file lock is
  free) is adopted and replayed, in order, by the next client on this host (another training or
  ``jouled markers send``). Nothing is lost; a marker may be delivered twice (QoS-1 redelivery, or a
  replay after a crash), which the daemon recognises by (run, seq) and drops.
* ``seq`` is a per-run counter persisted in the spool directory, so a run resumed in a new process, or
  marked from a shell script too, keeps increasing sequence numbers.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from jouled.backoff import Backoff
from jouled.clock import boot_id
from jouled.markers import QOS, parse_broker_url, topic_for
from jouled.model import Marker
from jouled.secrets import redact_url

# the spool on disk is the core's (the daemon delivers orphaned spools too); names re-exported for callers here
from jouled.spool import OrphanSpool as OrphanSpool
from jouled.spool import SeqAllocator as SeqAllocator
from jouled.spool import Spool, line_topic, spool_line, with_sent
from jouled.spool import default_spool_dir as default_spool_dir
from jouled.spool import safe_file_name as safe_file_name

if TYPE_CHECKING:
    from jouled.query import Measurement

log = logging.getLogger(__name__)

DEFAULT_URL = "mqtt://127.0.0.1:1883"
_SEQ_BLOCK = 1024  # seqs reserved per disk write, so marking a run does not touch the disk each time


class _SeqCounter:
    """Hands out seqs for one run from reserved blocks (caller thread; a disk write once per block)."""

    def __init__(self, alloc: SeqAllocator, run: str) -> None:
        self.alloc, self.run = alloc, run
        self.next = self.end = 0
        self.lock = threading.Lock()

    def prime(self) -> None:
        """Make sure a block is reserved (done at run start, so the first epoch does not touch the disk)."""
        with self.lock:
            if self.next >= self.end:
                self.next = self.alloc.reserve(self.run, _SEQ_BLOCK)
                self.end = self.next + _SEQ_BLOCK

    def take(self) -> int:
        with self.lock:
            if self.next >= self.end:
                self.next = self.alloc.reserve(self.run, _SEQ_BLOCK)
                self.end = self.next + _SEQ_BLOCK
            seq = self.next
            self.next += 1
            return seq


@dataclass(slots=True)
class _Entry:
    line: bytes  # the marker JSON without "sent", exactly as in the spool
    topic: str
    mid: int | None = None
    acked: bool = False


@dataclass
class ClientStats:
    """Counters of one client (read them from any thread; they are snapshots)."""

    enqueued: int = 0
    delivered: int = 0
    adopted: int = 0
    pending: int = 0
    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    last_error: str = ""
    spool_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class MarkerClient:
    """Publish markers to ``jouled/v1/<host>/markers`` from any training loop (thread-safe, non-blocking).

    ``url``: ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://…``; ``username``/``password`` override
    the URL's. TLS: ``tls_ca`` (CA bundle; system CAs when empty), ``tls_cert``/``tls_key`` (client
    certificate), ``tls_insecure`` (skip host-name check). ``host``: the host tag and topic level
    (default: this machine's host name, like the daemon's ``[daemon] host``). ``spool_path``: the
    spool *directory* (default ``default_spool_dir()``), shared by every client on the host.
    ``poll_interval_s``: how often the background thread picks up new markers (the caller makes no
    system call, so it cannot wake it); ``flush``/``close`` wake it at once.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        host: str | None = None,
        spool_path: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_insecure: bool = False,
        client_id: str | None = None,
        max_inflight: int = 64,
        connect_timeout_s: float = 3.0,
        fsync_interval_s: float = 0.05,
        poll_interval_s: float = 0.01,
        keepalive_s: int = 30,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        mono_clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.address = parse_broker_url(url)
        self.url = url
        self.shown_url = redact_url(url)  # what messages and logs say: never the password
        self.host = host or socket.gethostname()
        self.topic = topic_for(self.host)
        self.username = username if username is not None else self.address.username
        self.password = password if password is not None else self.address.password
        self.tls_ca, self.tls_cert, self.tls_key, self.tls_insecure = tls_ca, tls_cert, tls_key, tls_insecure
        self.client_id = client_id or f"jouled-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_inflight = max_inflight
        self.connect_timeout_s = connect_timeout_s
        self.fsync_interval_s = fsync_interval_s
        self.poll_interval_s = poll_interval_s
        self.keepalive_s = keepalive_s
        # the clocks a marker is stamped with (tests inject a wall clock that steps, as NTP would)
        self._wall_ns, self._mono_ns = wall_clock_ns, mono_clock_ns
        self.boot_id = boot_id()
        self.spool_dir = Path(spool_path) if spool_path is not None else default_spool_dir()
        self.config: Any = None  # the jouled Config of from_config(): where RunHandle.energy() finds the store

        self._seq_alloc = SeqAllocator(self.spool_dir)
        self._seqs: dict[str, _SeqCounter] = {}
        self._seqs_lock = threading.Lock()
        self._inbox: deque[Marker] = deque()
        self._mark_lock = threading.Lock()
        self._issued = 0  # markers handed to the client (caller side)

        self._spool = Spool(self.spool_dir, self.host)
        adopted = self._spool.adopt_orphans()
        self._pending: deque[_Entry] = deque(_Entry(ln, self._topic_of(ln)) for ln in adopted)
        self._adopted = len(adopted)
        self._send_idx = 0
        self._by_mid: dict[int, _Entry] = {}
        self._acked_total = 0  # entries acked in order (adopted ones first)
        self._cond = threading.Condition()
        self._stats = ClientStats(adopted=len(adopted), spool_file=str(self._spool.path))

        self._mqtt: paho.Client | None = None
        self._connected = False
        self._lost = False
        self._connect_started = 0.0
        self._closing = False
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="jouled-markers", daemon=True)
        self._thread.start()
        self._atexit = _closer(weakref.ref(self))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ caller side

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> MarkerClient:
        """A client for a ``jouled.config.Config``: ``[mqtt]`` url/credentials/TLS, ``[daemon] host``."""
        from jouled.secrets import mqtt_auth

        m = cfg.mqtt
        url = m.url or f"mqtt://127.0.0.1:{m.embedded_port}"
        kwargs.setdefault("host", cfg.daemon.host)
        # the daemon's own resolution: systemd credential > password_file > [mqtt] password > the URL's; with
        # embedded_auth the password the daemon generated beside the store (readable by its group)
        auth = mqtt_auth(cfg, m.url)
        kwargs.setdefault("username", auth.username)
        kwargs.setdefault("password", auth.password)
        client = cls(
            url, tls_ca=m.tls_ca or None, tls_cert=m.tls_cert or None, tls_key=m.tls_key or None,
            tls_insecure=m.tls_insecure, **kwargs,
        )
        client.config = cfg
        return client

    def _counter(self, run: str) -> _SeqCounter:
        counter = self._seqs.get(run)
        if counter is None:
            with self._seqs_lock:
                counter = self._seqs.setdefault(run, _SeqCounter(self._seq_alloc, run))
        return counter

    def mark(
        self,
        scope: str,
        event: str,
        run: str,
        epoch: int | None = None,
        phase: str | None = None,
        *,
        arch: str | None = None,
        gpus: Sequence[str] = (),
        attrs: dict[str, Any] | None = None,
        seq: int | None = None,
        time_ns: int | None = None,
    ) -> Marker:
        """Queue one marker (timestamped now unless ``time_ns``); returns it at once, published later.

        Only cheap checks here (the daemon validates fully): a bad scope/event or a missing epoch/phase
        raises ValueError in the caller, where the bug is.
        """
        mono: int | None = None
        if time_ns is None:
            mono, t = self._mono_ns(), self._wall_ns()
        else:
            t = time_ns  # the caller's own time: no monotonic reading vouches for it
        if self._closing:
            raise RuntimeError("MarkerClient is closed")
        if scope not in ("run", "epoch", "phase") or event not in ("start", "end"):
            raise ValueError(f"scope {scope!r} / event {event!r}: expected run|epoch|phase and start|end")
        if scope != "run" and epoch is None:
            raise ValueError(f"a {scope} marker needs an epoch")
        if scope == "phase" and not phase:
            raise ValueError("a phase marker needs a phase name")
        if seq is None:
            seq = self._counter(run).take()
        m = Marker(
            time_ns=t, host=self.host, run=run, scope=scope, event=event, seq=seq, epoch=epoch, phase=phase,
            arch=arch, gpus=tuple(gpus), attrs=attrs or {},
            mono_ns=mono, boot_id=self.boot_id if mono is not None else None,
        )
        with self._mark_lock:  # uncontended in a training loop: well under a microsecond
            self._inbox.append(m)
            self._issued += 1
        return m

    def run(
        self,
        run_id: str,
        arch: str | None = None,
        gpus: Sequence[str] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> RunHandle:
        """A run: ``with client.run(...) as r`` marks its start and end; or ``r = client.run(...).start()``."""
        if not run_id:
            raise ValueError("run_id must be a non-empty string")
        self._counter(run_id).prime()
        return RunHandle(self, run_id, arch, tuple(gpus or ()), attrs)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every marker queued so far is acknowledged by the broker; False on timeout."""
        target = self._adopted + self._issued
        self._wake()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._acked_total < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), then stop. Undelivered markers stay spooled for the next client.

        Returns True when everything was delivered. Safe to call twice.
        """
        if self._closed:
            return self.pending == 0
        delivered = self.flush(timeout_s)
        self._closing = True
        self._wake()
        self._thread.join(timeout=max(5.0, timeout_s))
        self._closed = True
        atexit.unregister(self._atexit)
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()
        return delivered

    @property
    def pending(self) -> int:
        """Markers not yet acknowledged (queued, spooled or in flight)."""
        return self._adopted + self._issued - self._acked_total

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> ClientStats:
        s = self._stats
        return ClientStats(
            enqueued=self._issued, delivered=self._acked_total, adopted=self._adopted, pending=self.pending,
            connected=self._connected, connects=s.connects, connect_failures=s.connect_failures,
            last_error=s.last_error, spool_file=s.spool_file,
        )

    def __enter__(self) -> MarkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"w")

    # ------------------------------------------------------------------ background thread

    def _topic_of(self, line: bytes) -> str:
        # an adopted spool line may come from another host tag; publish it where that host's markers go
        return line_topic(line, self.host)

    def _new_mqtt(self) -> paho.Client:
        c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True, protocol=paho.MQTTv311,
            transport="websockets" if self.address.transport == "websockets" else "tcp",
        )
        if self.address.transport == "websockets":
            c.ws_set_options(path=self.address.path)
        c.connect_timeout = self.connect_timeout_s
        c.max_inflight_messages_set(self.max_inflight)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        if self.address.tls:
            c.tls_set(ca_certs=self.tls_ca or None, certfile=self.tls_cert or None, keyfile=self.tls_key or None)
            if self.tls_insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._stats.last_error = f"broker {self.shown_url} refused the connection: {reason}"
            self._stats.connect_failures += 1
            self._lost = True
            return
        self._connected = True
        self._stats.connects += 1
        self._send_idx = 0  # (re)send everything not yet acked, in order

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._lost = True

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        e = self._by_mid.pop(mid, None)
        if e is None:
            return
        e.acked = True
        n = 0
        while self._pending and self._pending[0].acked:
            self._pending.popleft()
            n += 1
        if n:
            self._send_idx = max(0, self._send_idx - n)
            self._spool.acked += n
            with self._cond:
                self._acked_total += n
                self._cond.notify_all()

    def _drain_inbox(self) -> None:
        if not self._inbox:
            return
        lines: list[bytes] = []
        while self._inbox:
            m = self._inbox.popleft()
            ln = spool_line(m)
            lines.append(ln)
            self._pending.append(_Entry(ln, self.topic))
        self._spool.append(lines)

    def _drop_connection(self, why: str) -> None:
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                self._mqtt.disconnect()
            with contextlib.suppress(Exception):
                sock = self._mqtt.socket()
                if sock is not None:
                    sock.close()
        if why:
            self._stats.last_error = why
            log.info("marker broker %s: %s; markers are spooled in %s", self.shown_url, why, self._spool.path)
        self._mqtt = None
        self._connected = False
        self._lost = False
        self._by_mid.clear()
        for e in self._pending:
            e.mid = None
        self._send_idx = 0

    def _try_connect(self) -> bool:
        c = self._new_mqtt()
        try:
            c.connect(self.address.host, self.address.port, keepalive=self.keepalive_s)
        except (OSError, ValueError) as e:
            self._stats.connect_failures += 1
            self._stats.last_error = f"cannot reach broker {self.shown_url}: {e}"
            return False
        self._mqtt = c
        self._lost = False
        self._connect_started = time.monotonic()
        return True

    def _fill_window(self) -> None:
        c = self._mqtt
        assert c is not None
        inflight = len(self._by_mid)
        while inflight < self.max_inflight and self._send_idx < len(self._pending):
            e = self._pending[self._send_idx]
            self._send_idx += 1
            if e.acked or e.mid is not None:
                continue
            payload = with_sent(e.line, self._wall_ns())
            info = c.publish(e.topic, payload, qos=QOS)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                self._lost = True
                return
            e.mid = info.mid
            self._by_mid[info.mid] = e
            inflight += 1

    def _run(self) -> None:
        backoff = Backoff(0.05, 2.0, jitter="none")  # a broker that is back is reached within 2 s
        next_connect = 0.0
        next_sync = time.monotonic() + self.fsync_interval_s
        while True:
            self._drain_inbox()
            now = time.monotonic()
            if self._closing:
                break
            if self._mqtt is None and now >= next_connect:
                if self._try_connect():
                    backoff.reset()
                else:
                    next_connect = now + backoff.next_delay()
            if self._mqtt is not None and not self._connected and now - self._connect_started > self.connect_timeout_s:
                self._lost = True
                self._stats.last_error = f"broker {self.shown_url} did not answer CONNECT in {self.connect_timeout_s:g} s"
            if self._lost:
                self._drop_connection(self._stats.last_error or "connection lost")
                next_connect = max(next_connect, now + backoff.pending_delay())
                continue
            if self._connected:
                self._fill_window()
            if now >= next_sync:
                self._spool.sync()
                next_sync = now + self.fsync_interval_s
            self._wait_io(next_connect if self._mqtt is None else None, next_sync)
        self._shutdown()

    def _wait_io(self, next_connect: float | None, next_sync: float) -> None:
        c = self._mqtt
        rl: list[Any] = [self._wake_r]
        wl: list[Any] = []
        sock = c.socket() if c is not None else None
        if sock is not None:
            rl.append(sock)
            if c is not None and c.want_write():
                wl.append(sock)
        now = time.monotonic()
        timeout = min(self.poll_interval_s, max(0.0, next_sync - now))
        if next_connect is not None:
            timeout = min(timeout, max(0.0, next_connect - now))
        try:
            r, w, _ = select.select(rl, wl, [], timeout)
        except (OSError, ValueError):
            self._lost = True
            return
        if self._wake_r in r:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        if c is None or sock is None:
            return
        try:
            if sock in r and c.loop_read(max_packets=1000) != paho.MQTT_ERR_SUCCESS:
                self._lost = True
            if not self._lost and (sock in w or c.want_write()):
                c.loop_write()
            if not self._lost and c.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self._lost = True
        except (OSError, ValueError) as e:
            self._lost = True
            self._stats.last_error = f"connection to {self.shown_url} failed: {e}"

    def _shutdown(self) -> None:
        self._drain_inbox()
        self._spool.sync()
        everything_acked = not self._pending
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                self._mqtt.disconnect()
                self._mqtt.loop_write()
            with contextlib.suppress(Exception):
                sock = self._mqtt.socket()
                if sock is not None:
                    sock.close()
        self._mqtt = None
        self._connected = False
        self._spool.close(remove=everything_acked)


def _closer(ref: weakref.ref[MarkerClient]) -> Any:
    """At interpreter exit, flush briefly: markers still in memory reach the spool at least."""

    def close() -> None:
        client = ref()
        if client is not None:
            client.close(timeout_s=2.0)

    return close


class _Window:
    """``with``-able start/end pair of one epoch or phase (a class, not a generator: cheaper to enter)."""

    __slots__ = ("attrs", "end_marker", "epoch", "handle", "phase", "scope", "start_marker")

    def __init__(self, handle: RunHandle, scope: str, epoch: int, phase: str | None, attrs: dict[str, Any] | None):
        self.handle, self.scope, self.epoch, self.phase, self.attrs = handle, scope, epoch, phase, attrs
        self.start_marker: Marker | None = None
        self.end_marker: Marker | None = None

    def __enter__(self) -> _Window:
        h = self.handle
        if self.scope == "epoch":
            self.start_marker = h.start_epoch(self.epoch, attrs=self.attrs)
        else:
            self.start_marker = h.start_phase(self.phase or "", epoch=self.epoch, attrs=self.attrs)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        attrs = None if et is None else {"status": "error", "error": et.__name__}
        h = self.handle
        if self.scope == "epoch":
            self.end_marker = h.end_epoch(self.epoch, attrs=attrs)
        else:
            self.end_marker = h.end_phase(self.phase or "", epoch=self.epoch, attrs=attrs)

    def energy(self, timeout: float = 30.0, *, store_url: str | None = None, config: Any = None) -> Measurement:
        """This epoch's (phase's) energy, measured by the daemon: see ``RunHandle.energy``."""
        what = f"run {self.handle.run_id} epoch {self.epoch}" + (f" phase {self.phase}" if self.phase else "")
        return _window_energy(self.handle, what, self.start_marker, self.end_marker, timeout, store_url, config)


class RunHandle:
    """One run's markers; every marker carries the run's ``arch`` and ``gpus`` so each window is attributable."""

    def __init__(
        self, client: MarkerClient, run_id: str, arch: str | None, gpus: tuple[str, ...], attrs: dict[str, Any] | None
    ) -> None:
        self.client, self.run_id, self.arch, self.gpus, self.attrs = client, run_id, arch, gpus, attrs
        self.current_epoch: int | None = None
        self.start_marker: Marker | None = None
        self.end_marker: Marker | None = None

    def mark(
        self, scope: str, event: str, epoch: int | None = None, phase: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> Marker:
        return self.client.mark(scope, event, self.run_id, epoch, phase, arch=self.arch, gpus=self.gpus, attrs=attrs)

    def start(self) -> RunHandle:
        self.start_marker = self.mark("run", "start", attrs=self.attrs)
        return self

    def end(self, attrs: dict[str, Any] | None = None) -> None:
        self.end_marker = self.mark("run", "end", attrs=attrs)

    def energy(self, timeout: float = 30.0, *, store_url: str | None = None, config: Any = None) -> Measurement:
        """The run's energy as the daemon measured it (Zeus's ``end_window()``, from outside the process).

        Call it after the run's end: it polls the daemon's log (read-only) until it holds a sample past the
        run's end from every source that was sampling, then returns a ``jouled.query.Measurement``: joules per
        device (``energy_j_by_device``), the total counting each device once (``energy_j``), ``method``,
        ``flags``, ``duration_s``. The store: ``store_url``, else ``$JOULED_STORE``, else the store of
        ``config`` (a path or Config; default: the config of ``MarkerClient.from_config``, else the CLI's).
        Raises ``TimeoutError`` with one line after ``timeout`` seconds (is the daemon running?).
        """
        return _window_energy(self, f"run {self.run_id}", self.start_marker, self.end_marker, timeout, store_url, config)

    def start_epoch(self, epoch: int, attrs: dict[str, Any] | None = None) -> Marker:
        self.current_epoch = epoch
        return self.mark("epoch", "start", epoch, attrs=attrs)

    def end_epoch(self, epoch: int | None = None, attrs: dict[str, Any] | None = None) -> Marker:
        n = self.current_epoch if epoch is None else epoch
        if n is None:
            raise ValueError("end_epoch(): no epoch is open; pass the epoch number")
        return self.mark("epoch", "end", n, attrs=attrs)

    def _phase_epoch(self, epoch: int | None) -> int:
        n = self.current_epoch if epoch is None else epoch
        if n is None:
            raise ValueError("a phase belongs to an epoch: open one with r.epoch(n) or pass epoch=")
        return n

    def start_phase(self, phase: str, epoch: int | None = None, attrs: dict[str, Any] | None = None) -> Marker:
        return self.mark("phase", "start", self._phase_epoch(epoch), phase, attrs=attrs)

    def end_phase(self, phase: str, epoch: int | None = None, attrs: dict[str, Any] | None = None) -> Marker:
        return self.mark("phase", "end", self._phase_epoch(epoch), phase, attrs=attrs)

    def epoch(self, n: int, attrs: dict[str, Any] | None = None) -> _Window:
        """``with r.epoch(n):`` marks epoch n's start and end (the end gets status=error on an exception)."""
        return _Window(self, "epoch", n, None, attrs)

    def phase(self, name: str, epoch: int | None = None, attrs: dict[str, Any] | None = None) -> _Window:
        """``with r.phase("eval"):`` inside ``with r.epoch(n):`` (or pass ``epoch=``)."""
        return _Window(self, "phase", self._phase_epoch(epoch), name, attrs)

    def __enter__(self) -> RunHandle:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.end(None if et is None else {"status": "error", "error": et.__name__})


def _window_energy(
    handle: RunHandle, what: str, start: Marker | None, end: Marker | None, timeout: float, store_url: str | None,
    config: Any,
) -> Measurement:
    if start is None or end is None:
        raise RuntimeError(f"{what} has not ended: call .energy() after its with-block (or its end marker)")
    from jouled.query import resolve, wait_window

    cfg, url = resolve(store_url, config if config is not None else handle.client.config)
    deadline = time.monotonic() + timeout
    start_ns, end_ns = start.time_ns, end.time_ns
    if start.mono_ns is not None or end.mono_ns is not None:  # the daemon may have placed them by their monotonic time
        start_ns, end_ns = _stored_times(url, handle.client.host, start, end, deadline)
    left_s = max(0.1, deadline - time.monotonic())
    return wait_window(url, cfg, handle.client.host, start_ns, end_ns, gpus=handle.gpus, timeout_s=left_s,
                       waited_s=max(0.0, timeout - left_s))


def _stored_times(url: str, host: str, start: Marker, end: Marker, deadline: float) -> tuple[int, int]:
    """The times the daemon stored for two markers (mapped through CLOCK_MONOTONIC when it could, so an NTP step of
    this process's wall clock between them does not stretch the window); the markers' own times if not stored by
    ``deadline`` (``wait_window`` then says what is missing)."""
    from jouled.query import StoreError, open_readonly

    want = {start.seq: start.time_ns, end.seq: end.time_ns}
    found: dict[int, int] = {}
    while True:
        try:
            st = open_readonly(url)
        except StoreError:
            st = None
        if st is not None:
            try:
                found = {m.seq: m.time_ns for m in st.read_markers(run=start.run, host=host) if m.seq in want}
            finally:
                st.close()
        if len(found) == len(want) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return found.get(start.seq, start.time_ns), found.get(end.seq, end.time_ns)
