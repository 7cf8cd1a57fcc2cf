"""The embedded MQTT broker (amqtt) the daemon starts on loopback when no external broker is configured.

It binds loopback only unless password auth is on (a non-loopback bind without auth is refused), and with
``[mqtt] embedded_auth = true`` it accepts only the configured user and password (``SecretAuthPlugin``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from jouled.errors import UserError

log = logging.getLogger("jouled.broker")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


# MQTT 3.1.1 CONNECT, client id "jouled-probe", clean session, keepalive 5 s: enough for any broker to answer CONNACK
_PROBE_CONNECT = bytes([0x10, 24, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 5, 0, 12]) + b"jouled-probe"


def speaks_mqtt(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether what listens on ``host:port`` answers an MQTT CONNECT with a CONNACK (accepted or refused)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(_PROBE_CONNECT)
            head = s.recv(2)
            with contextlib.suppress(OSError):
                s.sendall(bytes([0xE0, 0]))  # DISCONNECT, so the broker does not log a lost client
            return len(head) == 2 and head[0] == 0x20 and head[1] == 2
    except OSError:
        return False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_embedded_bind(host: str, port: int, auth: bool) -> None:
    """Refuse a bind the embedded broker must not make: beyond loopback without auth; a port another program holds."""
    if not is_loopback(host) and not auth:
        raise UserError(
            f"[mqtt] embedded_host = {host!r}: the embedded broker listens beyond loopback only with password auth — "
            "set [mqtt] embedded_auth = true, or embedded_host = \"127.0.0.1\""
        )
    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if port and port_in_use(probe, port):
        if speaks_mqtt(probe, port):
            raise UserError(
                f"{probe}:{port} is taken by another MQTT broker — set [mqtt] url = \"mqtt://{probe}:{port}\" to use "
                "it, or [mqtt] embedded_port"
            )
        raise UserError(f"{probe}:{port} is taken by another program (not an MQTT broker) — set [mqtt] embedded_port")


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class SecretAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: accept only ``users`` (name → sha256 of the password); anonymous clients are refused."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)  # user name → sha256 hex of the password

    async def authenticate(self, *, session: Session) -> bool | None:
        users: dict[str, str] = getattr(self.context.config, "users", {}) or {}
        if not session or not session.username:
            return False
        want = users.get(session.username)
        got = _digest(session.password or "")
        # compare even for an unknown user, so timing says nothing about which user names exist
        ok = hmac.compare_digest(got, want or _digest("\0unknown"))
        return bool(want) and ok


class LoopbackAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: every client is accepted (the broker listens on loopback only; see broker_config).

    jouled's own rather than amqtt's AnonymousAuthPlugin: that one's module imports pwdlib, argon2 and cffi for the
    password files it also handles (0.8 MB of RSS in the shim daemon of bench/observer.py), which loopback never reads.
    """

    async def authenticate(self, *, session: Session) -> bool | None:
        if session:
            session.is_anonymous = True
        return True


def broker_config(host: str, port: int, users: dict[str, str] | None = None) -> dict[str, Any]:
    """amqtt's config: one TCP listener; anonymous when ``users`` is None, else only those (name → password)."""
    if users:
        plugins: dict[str, Any] = {
            f"{__name__}.SecretAuthPlugin": {"users": {u: _digest(p) for u, p in users.items()}},
        }
    else:
        # loopback only, anonymous: the same trust as the local status file. No $SYS chatter, no packet logs.
        plugins = {f"{__name__}.LoopbackAuthPlugin": {}}
    return {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}, "plugins": plugins}


class EmbeddedBroker:
    """amqtt on <host>:<port> (127.0.0.1 by default), started and stopped inside the daemon's event loop."""

    def __init__(self, port: int, host: str = "127.0.0.1", users: dict[str, str] | None = None) -> None:
        if not is_loopback(host) and not users:
            raise UserError(f"embedded broker on {host}:{port}: beyond loopback only with password auth")
        self.host = host
        self.port = port
        self.users = users
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs every connection at INFO; the daemon's log is for the daemon's own news
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(broker_config(self.host, self.port, self.users))
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.shutdown()
            self._broker = None
