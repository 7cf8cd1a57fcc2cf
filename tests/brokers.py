"""Real MQTT brokers for tests and benchmarks: Mosquitto and amqtt on free loopback ports, stoppable and restartable.

Importable helpers (``free_port``, ``start_mosquitto``, ``start_amqtt``, ``Subscriber``) plus, when run as a
script (``python tests/brokers.py amqtt PORT``), the amqtt broker process that ``start_amqtt`` launches.
Pytest fixtures wrapping these live in ``tests/markers/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MOSQUITTO = os.environ.get("JOULED_TEST_MOSQUITTO", "/usr/sbin/mosquitto")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until ``host:port`` accepts a TCP connection; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.02)


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists() or shutil.which("mosquitto") is not None


@dataclass
class BrokerHandle:
    """A broker process on 127.0.0.1:``port``; ``stop``/``kill``/``start``/``restart`` keep the same port."""

    name: str
    port: int
    argv: list[str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> BrokerHandle:
        if self.running:
            return self
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                wait_port(self.port, timeout_s=0.2)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"{self.name} did not listen on {self.port}: {self.log_tail()}") from None

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Orderly shutdown (SIGTERM)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as in a crash or a power cut of the broker host."""
        self._end(signal.SIGKILL)

    def restart(self) -> BrokerHandle:
        self.kill()
        return self.start()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_mosquitto(port: int | None = None, *, persistence: bool = False, extra_conf: str = "") -> BrokerHandle:
    """Mosquitto on 127.0.0.1:``port`` (anonymous), running when this returns.

    ``persistence``: keep sessions and queued messages in the work directory (saved at exit) across an orderly
    ``stop()``/``start()`` (what a production broker does); off by default.
    """
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jouled-mosquitto-"))
    conf = workdir / "mosquitto.conf"
    persist = (
        f"persistence true\npersistence_location {workdir}/\n"
        if persistence
        else "persistence false\n"
    )
    # run as root, mosquitto drops to user "mosquitto", which cannot write our temp dir: stay who we are
    user = pwd.getpwuid(os.getuid()).pw_name
    conf.write_text(
        f"user {user}\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"{persist}"
        "log_dest stdout\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 1000\n"
        f"{extra_conf}"
    )
    binary = MOSQUITTO if Path(MOSQUITTO).exists() else (shutil.which("mosquitto") or MOSQUITTO)
    return BrokerHandle("mosquitto", port, [binary, "-c", str(conf)], workdir).start()


def start_amqtt(port: int | None = None, *, websocket: bool = False) -> BrokerHandle:
    """The amqtt broker (pure Python, what the daemon embeds) on 127.0.0.1:``port`` in its own process
    (``websocket``: its listener speaks MQTT over WebSocket, for ws:// URLs)."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jouled-amqtt-"))
    argv = [sys.executable, str(Path(__file__).resolve()), "amqtt-ws" if websocket else "amqtt", str(port)]
    return BrokerHandle("amqtt", port, argv, workdir).start(timeout_s=30.0)


def amqtt_config(port: int) -> dict[str, Any]:
    """The daemon's own embedded-broker config (one TCP listener on loopback, anonymous, no $SYS chatter)."""
    from jouled.daemon.broker import broker_config

    return broker_config("127.0.0.1", port)


def _amqtt_main(port: int, websocket: bool = False) -> None:
    import asyncio

    from amqtt.broker import Broker

    async def serve() -> None:
        cfg = amqtt_config(port)
        if websocket:
            cfg["listeners"] = {"default": {"type": "ws", "bind": f"127.0.0.1:{port}"}}
        broker = Broker(cfg)
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(serve())


class TcpGate:
    """A TCP relay 127.0.0.1:``port`` → 127.0.0.1:``target``, that tests open and close.

    Closed, it refuses connections and cuts the ones it relays: the client sees the broker vanish.
    It lets a test choose *when* a client gets through again (after a subscriber is ready).
    """

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def open(self) -> TcpGate:
        if self._listener is not None:
            return self
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def close(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            with contextlib.suppress(OSError):
                ls.shutdown(socket.SHUT_RDWR)
            ls.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class Subscriber:
    """A paho subscriber (QoS 1, own network thread) that collects payloads of a topic filter."""

    def __init__(
        self,
        port: int,
        topic: str = "jouled/v1/+/markers",
        on_message: Callable[[bytes], None] | None = None,
        *,
        client_id: str | None = None,
        persistent: bool = False,
    ):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.got = threading.Condition(self.lock)
        self._subscribed = threading.Event()
        self._extra = on_message
        self.topic = topic
        cid = client_id or f"test-sub-{os.getpid()}-{port}-{time.monotonic_ns()}"
        # persistent: the broker keeps the subscription and queues messages while we are away
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not persistent)
        c.reconnect_delay_set(1, 1)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
            self._subscribed.set()

        def on_msg(client: Any, userdata: Any, msg: Any) -> None:
            with self.got:
                self.messages.append((msg.topic, bytes(msg.payload)))
                self.got.notify_all()
            if self._extra is not None:
                self._extra(bytes(msg.payload))

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_msg
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"could not subscribe to {topic} on 127.0.0.1:{port}")

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[bytes]:
        """Payloads received so far once at least ``n`` arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        with self.got:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.got.wait(left)
            return [p for _, p in self.messages]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("amqtt", "amqtt-ws"):
        _amqtt_main(int(sys.argv[2]), websocket=sys.argv[1] == "amqtt-ws")
    else:
        sys.exit("usage: brokers.py amqtt PORT")
