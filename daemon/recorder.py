"""The daemon's marker recorder: subscribe over MQTT, validate, dedup, snapshot counters, store each marker."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from jouled.clock import CLOCK
from jouled.config import MqttConfig
from jouled.daemon.broker import EmbeddedBroker, port_in_use
from jouled.errors import UserError
from jouled.markers import QOS, TOPIC_WILDCARD, MarkerError, MarkerTracker, host_from_topic, parse_marker
from jouled.model import Marker

if TYPE_CHECKING:
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.markers")

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0


@dataclass
class BrokerEndpoint:
    hostname: str
    port: int
    tls: bool
    url: str


def parse_mqtt_url(url: str) -> BrokerEndpoint:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise UserError(f"[mqtt] url {url!r}: use mqtt://host:1883 or mqtts://host:8883")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        raise UserError(f"[mqtt] url {url!r}: the port is not a number — use mqtt://host:1883") from None
    return BrokerEndpoint(u.hostname, port, tls, url)


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    if cfg.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "broker": self.broker, "embedded": self.embedded, "connected": self.connected,
            "received": self.received, "stored": self.stored, "duplicates": self.duplicates,
            "rejected": dict(self.rejected), "warnings": dict(self.warnings), "last_error": self.last_error,
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

    def seed_from_store(self) -> None:
        """After a restart, remember what is stored so redeliveries and open windows are recognised."""
        for m in self.daemon.store.read_markers():
            self.tracker.seed(m)

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged_kinds:  # once per kind: a misbehaving client must not flood the log
            self._logged_kinds.add(kind)
            log.warning("%s (further '%s' markers are counted in `jouled status`, not logged)", message, kind)

    async def handle(self, topic: str, payload: bytes) -> Marker | None:
        """Validate, dedup, snapshot, store. Returns the stored marker or None."""
        self.stats.received += 1
        try:
            m = parse_marker(
                payload, topic_host=host_from_topic(topic), now_ns=CLOCK.now_ns(), max_skew_s=self.cfg.max_clock_skew_s
            )
        except MarkerError as e:
            self.stats.rejected[e.kind] += 1
            self._log_once(e.kind, f"rejected marker on {topic}: {e}")
            return None
        res = self.tracker.accept(m)
        if res.status == "redelivery":
            self.stats.duplicates += 1
            return None
        if res.status == "rejected":
            kind = res.problem.kind if res.problem else "rejected"
            self.stats.rejected[kind] += 1
            self._log_once(kind, f"rejected marker on {topic}: {res.problem}")
            return None
        if res.problem is not None:
            self.stats.warnings[res.problem.kind] += 1
            self._log_once(res.problem.kind, f"marker kept with a warning: {res.problem}")
        # counters first, so the window edge sits on a fresh counter reading
        self.daemon.sampler.snapshot()
        await asyncio.to_thread(self.daemon.store.write_markers, [m])
        self.stats.stored += 1
        return m

    async def run(self) -> None:
        import aiomqtt

        embedded: EmbeddedBroker | None = None
        if self.cfg.url:
            ep = parse_mqtt_url(self.cfg.url)
        else:
            port = self.cfg.embedded_port
            if port_in_use("127.0.0.1", port):
                log.warning(
                    "embedded broker: 127.0.0.1:%d is already in use — using the broker listening there; "
                    "set [mqtt] url to choose a broker, or [mqtt] embedded_port for another port", port,
                )
            else:
                embedded = EmbeddedBroker(port)
                try:
                    await embedded.start()
                    self.stats.embedded = True
                except Exception as e:
                    log.error("embedded broker on 127.0.0.1:%d failed to start (%s); markers are off", port, e)
                    return
            ep = BrokerEndpoint("127.0.0.1", port, False, f"mqtt://127.0.0.1:{port}")
        self.stats.broker = ep.url
        await asyncio.to_thread(self.seed_from_store)
        tls = tls_context(self.cfg) if ep.tls else None
        backoff = RECONNECT_MIN_S
        try:
            while True:
                try:
                    async with aiomqtt.Client(
                        hostname=ep.hostname, port=ep.port,
                        username=self.cfg.username or None, password=self.cfg.password or None,
                        tls_context=tls, identifier=f"jouled-daemon-{self.daemon.host}",
                        clean_session=False,  # QoS-1 markers published while we reconnect are kept for us
                    ) as client:
                        await client.subscribe(TOPIC_WILDCARD, qos=QOS)
                        self.stats.connected = True
                        self.stats.last_error = ""
                        backoff = RECONNECT_MIN_S
                        log.info("markers: subscribed to %s on %s", TOPIC_WILDCARD, ep.url)
                        self.ready.set()
                        async for msg in client.messages:
                            try:
                                await self.handle(str(msg.topic), bytes(msg.payload or b""))  # type: ignore[arg-type]
                            except Exception as e:  # a storage hiccup must not drop the subscription
                                self.stats.last_error = f"{type(e).__name__}: {e}"
                                log.error("marker handling failed: %s", self.stats.last_error)
                except aiomqtt.MqttError as e:
                    self.stats.connected = False
                    err = f"{e}".splitlines()[0]
                    if err != self.stats.last_error:
                        log.warning("markers: broker %s unreachable (%s); retrying", ep.url, err)
                    self.stats.last_error = err
                    await asyncio.sleep(backoff)
                    backoff = min(RECONNECT_MAX_S, backoff * 2)
        finally:
            self.stats.connected = False
            if embedded is not None:
                await embedded.stop()


def attach_marker_recorder(daemon: Daemon) -> MarkerRecorder:
    rec = MarkerRecorder(daemon)

    async def markers(_: Daemon) -> None:
        await rec.run()

    daemon.tasks.append(markers)
    daemon.status_extras["markers"] = rec.stats.as_dict
    daemon.recorder = rec
    return rec
