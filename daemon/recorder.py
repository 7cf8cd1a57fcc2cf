"""The daemon's marker recorder: subscribe over MQTT, validate, dedup, snapshot counters, store each marker.

A marker is acknowledged to the dedup tracker only once it is stored: while the store cannot be written
(disk full, read-only) markers wait in a bounded in-memory queue and are retried, like samples, and a
redelivery of one still waiting is recognised as such rather than lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jouled.backoff import Backoff
from jouled.clock import CLOCK, boot_id
from jouled.config import MqttConfig
from jouled.daemon.broker import EmbeddedBroker, check_embedded_bind
from jouled.errors import UserError
from jouled.markers import QOS, TOPIC_WILDCARD, LocalClock, MarkerError, MarkerTracker, host_from_topic, parse_marker
from jouled.model import Marker
from jouled.mqtturl import parse_broker_url
from jouled.secrets import MqttAuth, mqtt_auth, redact_url
from jouled.store.sqlite import MarkerRowError

if TYPE_CHECKING:
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.markers")

RECONNECT_MIN_S = 0.1  # short: with a persistent broker a 2 s restart then loses nothing (the session queues)
RECONNECT_MAX_S = 2.0
PERSISTENCE_HINT = "enable persistence on the broker (mosquitto: persistence true)"
MAX_PENDING_MARKERS = 100_000  # held while the store cannot be written (a marker is ≤ 64 KiB, most ~300 B)
MAX_PENDING_MARKER_BYTES = 64 * 1024 * 1024


@dataclass
class BrokerEndpoint:
    hostname: str
    port: int
    tls: bool
    url: str  # redacted: safe to log and to write in the status file
    transport: str = "tcp"  # tcp | websockets (ws://, wss://)
    websocket_path: str | None = None


def parse_mqtt_url(url: str) -> BrokerEndpoint:
    """Where the broker is (jouled.mqtturl, the parser MarkerClient uses too); the URL's user:password are taken by
    ``jouled.secrets.mqtt_auth``, never kept here."""
    a = parse_broker_url(url)
    return BrokerEndpoint(a.host, a.port, a.tls, redact_url(url), a.transport, a.path or None)


def daemon_client_id(host: str, store_path: Path) -> str:
    """The daemon's MQTT client id, unique per host and log: two daemons (two logs) never take each other's
    session, while a restarted daemon gets its own persistent session (clean_session=False) back."""
    digest = hashlib.sha1(str(Path(store_path).resolve()).encode()).hexdigest()[:8]
    return f"jouled-{host}-{digest}"


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """TLS for mqtts://: [mqtt] tls_ca (system CAs when empty), tls_cert + tls_key (client certificate), tls_insecure."""
    try:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"[mqtt] tls_ca {cfg.tls_ca}: cannot load it ({_ssl_why(e)}) — name a PEM CA bundle") from None
    if cfg.tls_cert:
        try:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
        except (OSError, ssl.SSLError) as e:
            raise UserError(
                f"[mqtt] tls_cert {cfg.tls_cert} / tls_key {cfg.tls_key or '(in the cert file)'}: cannot load them "
                f"({_ssl_why(e)}) — name a PEM certificate and its unencrypted key"
            ) from None
    elif cfg.tls_key:
        raise UserError("[mqtt] tls_key without tls_cert — set tls_cert to the client certificate, or drop tls_key")
    if cfg.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ssl_why(e: Exception) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e) or type(e).__name__


@dataclass
class MarkerStats:
    broker: str = ""
    embedded: bool = False
    connected: bool = False
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    last_error: str = ""
    pending: int = 0  # accepted, waiting for the store
    dropped: int = 0  # pending markers dropped because the queue was full
    store_errors: int = 0
    failed: int = 0  # unexpected errors in handling (a bug if ever non-zero)
    # whether the broker keeps this daemon's session (subscription + queued QoS-1 markers) across its restarts:
    # "unknown" until a reconnect tells (the CONNACK's session-present flag), "persistent", "not persistent",
    # or "embedded" (the broker lives and dies with the daemon; clients spool meanwhile)
    session: str = "unknown"
    session_present: bool | None = None  # the last CONNACK's flag
    connects: int = 0
    outages: int = 0  # connections lost and not back at the first retry

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session, "session_present": self.session_present, "connects": self.connects,
            "outages": self.outages,
            "broker": self.broker, "embedded": self.embedded, "connected": self.connected,
            "received": self.received, "stored": self.stored, "duplicates": self.duplicates,
            "rejected": dict(self.rejected), "warnings": dict(self.warnings), "last_error": self.last_error,
            "pending": self.pending, "dropped": self.dropped, "store_errors": self.store_errors,
            "failed": self.failed,
        }


class MarkerRecorder:
    """Turns MQTT marker messages into stored markers; never lets a bad one stop the daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cfg = daemon.config.mqtt
        self.tracker = MarkerTracker()
        self.stats = MarkerStats()
        self._logged_kinds: set[str] = set()
        self.ready = asyncio.Event()
        self.local = LocalClock(daemon.host, boot_id(), CLOCK.anchor_wall_ns, CLOCK.anchor_mono_ns)
        # accepted markers not stored yet, oldest first, keyed (run, seq); with their payload sizes
        self._pending: OrderedDict[tuple[str, int], tuple[Marker, int]] = OrderedDict()
        self._pending_bytes = 0
        self._write_lock = asyncio.Lock()
        self._store_error = ""
        self._retry_needed = asyncio.Event()  # set while the store refuses markers: the retry loop runs
        self.embedded = not self.cfg.url
        # credentials and TLS resolved before the daemon starts, so a missing password file or a bad
        # certificate is one line at `jouled run`, not a reconnect loop
        self.auth: MqttAuth = mqtt_auth(daemon.config, create=True)
        self.endpoint = (
            parse_mqtt_url(self.cfg.url) if self.cfg.url
            else BrokerEndpoint("127.0.0.1", self.cfg.embedded_port, False, f"mqtt://127.0.0.1:{self.cfg.embedded_port}")
        )
        self.tls = tls_context(self.cfg) if self.endpoint.tls else None
        if self.embedded:
            if self.cfg.embedded_auth and not self.auth.password:
                raise UserError("[mqtt] embedded_auth = true but no password — set [mqtt] password_file")
            check_embedded_bind(self.cfg.embedded_host, self.cfg.embedded_port, self.cfg.embedded_auth)

    def seed_from_store(self) -> None:
        """After a restart, remember what is stored so redeliveries and open windows are recognised."""
        for m in self.daemon.store.read_markers():
            self.tracker.seed(m)

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged_kinds:  # once per kind: a misbehaving client must not flood the log
            self._logged_kinds.add(kind)
            log.warning("%s (further '%s' markers are counted in `jouled status`, not logged)", message, kind)

    def _reject(self, kind: str, topic: str, problem: object) -> None:
        self.stats.rejected[kind] += 1
        self._log_once(kind, f"rejected marker on {topic}: {problem}")

    async def handle(self, topic: str, payload: bytes) -> Marker | None:
        """Validate, dedup, snapshot, store. Returns the marker if it is stored now, else None.

        A marker the store cannot take right now stays queued (``stats.pending``) and is retried.
        """
        self.stats.received += 1
        try:
            m = parse_marker(
                payload, topic_host=host_from_topic(topic), now_ns=CLOCK.now_ns(), max_skew_s=self.cfg.max_clock_skew_s,
                local=self.local,  # this host's markers: their monotonic reading, mapped onto CLOCK (NTP steps)
            )
        except MarkerError as e:
            self._reject(e.kind, topic, e)
            return None
        queued = self._pending.get((m.run, m.seq))
        if queued is not None:  # accepted earlier, not stored yet: a redelivery, or a clash
            if queued[0] == m:
                self.stats.duplicates += 1
            else:
                self._reject("duplicate_seq", topic, f"run {m.run!r} seq {m.seq} already used by a different marker")
            return None
        res = self.tracker.check(m)
        if res.status == "redelivery":
            self.stats.duplicates += 1
            return None
        if res.status == "rejected":
            self._reject(res.problem.kind if res.problem else "rejected", topic, res.problem)
            return None
        # counters first, so the window edge sits on a fresh counter reading
        self.daemon.sampler.snapshot()
        self._enqueue(m, len(payload))
        if self._store_error:  # the store is failing: the retry loop writes the queue at its cadence, not per message
            return None
        stored = await self.flush_pending()
        return m if any(s is m for s in stored) else None

    def _enqueue(self, m: Marker, size: int) -> None:
        self._pending[(m.run, m.seq)] = (m, size)
        self._pending_bytes += size
        while len(self._pending) > MAX_PENDING_MARKERS or self._pending_bytes > MAX_PENDING_MARKER_BYTES:
            _, (old, old_size) = self._pending.popitem(last=False)
            self._pending_bytes -= old_size
            self.stats.dropped += 1
            self._log_once("dropped", f"store unwritable and marker queue full: dropped run {old.run!r} seq {old.seq}")
        self.stats.pending = len(self._pending)

    async def flush_pending(self) -> list[Marker]:
        """Write every queued marker, oldest first; acknowledge the stored ones. Never raises (but cancellation)."""
        async with self._write_lock:
            if not self._pending:
                return []
            batch = [m for m, _ in self._pending.values()]
            bad: list[tuple[Marker, str]] = []
            try:
                await self.daemon.in_store_thread(self.daemon.store.write_markers, batch)
            except MarkerRowError as e:  # values SQLite cannot hold: the others are stored
                bad = e.bad
            except Exception as e:  # disk full, read-only, locked…: keep them all and retry
                self._store_failed(e, len(batch))
                return []
            for m in batch:
                _, size = self._pending.pop((m.run, m.seq), (m, 0))
                self._pending_bytes -= size
            self.stats.pending = len(self._pending)
            bad_ids = {id(b) for b, _ in bad}
            for b, why in bad:
                self._reject("unstorable", "store", f"run {b.run!r} seq {b.seq}: {why}")
            stored = [m for m in batch if id(m) not in bad_ids]
            if stored:
                self.daemon.logged()  # the forwarder sends them now, whether or not samples are flowing
            for m in stored:
                problem = self.tracker.ack(m)
                if problem is not None:
                    self.stats.warnings[problem.kind] += 1
                    self._log_once(problem.kind, f"marker kept with a warning: {problem}")
            self.stats.stored += len(stored)
            if self._store_error:
                log.info("store: markers writing again (%d held markers stored)", len(stored))
                self._store_error = ""
            return stored

    def _store_failed(self, e: Exception, n: int) -> None:
        msg = f"{type(e).__name__}: {e}".splitlines()[0]
        h = self.daemon.store_health
        h.write_errors += 1
        h.last_error = msg
        self.stats.store_errors += 1
        self.stats.last_error = msg
        if msg != self._store_error:
            log.error("store %s: marker write failed (%s); keeping %d markers in memory and retrying", h.path, msg, n)
        self._store_error = msg
        self._retry_needed.set()

    async def _retry_loop(self) -> None:
        """Retry queued markers at the sample flush cadence, also when no new marker arrives; asleep (no wake-ups)
        while the store takes every marker."""
        period = self.daemon.config.daemon.flush_interval_s
        while True:
            await self._retry_needed.wait()
            await asyncio.sleep(period)
            if self._pending:
                await self.flush_pending()
            if not self._store_error:
                self._retry_needed.clear()

    def _judge_session(self, present: bool | None, broker_was_down: bool) -> None:
        """After each connect: did the broker keep our session? (see ``session_verdict``)."""
        s = self.stats
        s.session_present = present
        before = s.session
        s.session = session_verdict(s.session, reconnect=s.connects > 0, broker_was_down=broker_was_down,
                                    present=bool(present))
        s.connects += 1
        if s.session == "not persistent" and before != "not persistent":
            log.warning("markers: broker %s lost this daemon's session while it was away — markers sent while the "
                        "daemon reconnects may be lost; %s", s.broker, PERSISTENCE_HINT)
        elif s.session == "persistent" and before != "persistent":
            log.info("markers: broker %s kept this daemon's session across an outage (persistent)", s.broker)

    async def run(self) -> None:
        import aiomqtt

        embedded: EmbeddedBroker | None = None
        ep = self.endpoint
        if self.embedded:
            host, port = self.cfg.embedded_host, self.cfg.embedded_port
            users = {self.auth.username or "": self.auth.password or ""} if self.cfg.embedded_auth else None
            embedded = EmbeddedBroker(port, host, users)
            try:
                await embedded.start()
                self.stats.embedded = True
            except Exception as e:  # e.g. the port was taken after the check at start
                log.error("embedded broker on %s:%d failed to start (%s); markers are off", host, port, e)
                return
            if users:
                log.info("embedded broker on %s:%d: password auth on (user %s, password from %s)",
                         host, port, self.auth.username, self.auth.origin)
        self.stats.broker = ep.url
        await self.daemon.in_store_thread(self.seed_from_store)
        tls = self.tls
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)  # equal jitter: daemons behind one broker retry out of step
        failed_tries = 0  # connection attempts failed since the last connect: > 0 means the broker was down
        client_class = session_client_class()
        if self.stats.embedded:
            self.stats.session = "embedded"
        retry = asyncio.create_task(self._retry_loop(), name="marker-retry")
        try:
            while True:
                try:
                    async with client_class(
                        hostname=ep.hostname, port=ep.port, transport=ep.transport, websocket_path=ep.websocket_path,
                        username=self.auth.username, password=self.auth.password,
                        tls_context=tls, identifier=daemon_client_id(self.daemon.host, self.daemon.store.path),
                        clean_session=False,  # QoS-1 markers published while we reconnect are kept for us
                    ) as client:
                        await client.subscribe(TOPIC_WILDCARD, qos=QOS)
                        self._judge_session(client.session_present, failed_tries > 0)
                        failed_tries = 0
                        self.stats.connected = True
                        self.stats.last_error = ""
                        backoff.reset()
                        log.info("markers: subscribed to %s on %s", TOPIC_WILDCARD, ep.url)
                        self.ready.set()
                        self.daemon.status_changed()  # readers of the file (a `nas search` child's parent) see it now
                        async for msg in client.messages:
                            try:
                                await self.handle(str(msg.topic), bytes(msg.payload or b""))  # type: ignore[arg-type]
                            except Exception as e:  # a bug must not drop the subscription
                                self.stats.failed += 1
                                self.stats.last_error = f"{type(e).__name__}: {e}"
                                log.exception("marker handling failed: %s", self.stats.last_error)
                except aiomqtt.MqttError as e:
                    if not self.stats.connected:
                        failed_tries += 1
                        if failed_tries == 1 and self.stats.connects:
                            self.stats.outages += 1
                    if self.stats.connected:
                        self.daemon.status_changed()
                    self.stats.connected = False
                    err = f"{e}".splitlines()[0]
                    if err != self.stats.last_error:
                        log.warning("markers: broker %s unreachable (%s); retrying", ep.url, err)
                    self.stats.last_error = err
                    await asyncio.sleep(backoff.next_delay())
        finally:
            self.stats.connected = False
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
            if self._pending:  # a last try at shutdown
                await self.flush_pending()
            if self._pending:
                log.error("store: %d markers could not be written at shutdown", len(self._pending))
            if embedded is not None:
                await embedded.stop()


def session_verdict(state: str, *, reconnect: bool, broker_was_down: bool, present: bool) -> str:
    """What a CONNACK says about the broker's sessions (clean_session=False, a fixed client id).

    The first connect of this process says nothing about broker restarts (no session yet, or one kept while only
    the daemon restarted). On a reconnect, no session means the broker lost it (not persistent: markers published
    before we resubscribed went nowhere); a session kept across an outage where the broker refused connections
    means it persists. A session kept across a blip with no refusal proves nothing new.
    """
    if state == "embedded" or not reconnect:
        return state
    if not present:
        return "not persistent"
    return "persistent" if broker_was_down else state


def session_client_class() -> type[Any]:
    """aiomqtt.Client that remembers the CONNACK's session-present flag (aiomqtt does not expose it)."""
    import aiomqtt

    class SessionClient(aiomqtt.Client):
        session_present: bool | None = None

        def _on_connect(self, *args: Any, **kwargs: Any) -> None:
            flags = args[2] if len(args) > 2 else kwargs.get("flags")
            self.session_present = bool(getattr(flags, "session_present", False))
            super()._on_connect(*args, **kwargs)

    return SessionClient


def attach_marker_recorder(daemon: Daemon) -> MarkerRecorder:
    rec = MarkerRecorder(daemon)

    async def markers(_: Daemon) -> None:
        await rec.run()

    daemon.tasks.append(markers)
    daemon.status_extras["markers"] = rec.stats.as_dict
    daemon.recorder = rec
    return rec
