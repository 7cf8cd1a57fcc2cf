"""The embedded MQTT broker (amqtt) the daemon starts on loopback when no external broker is configured."""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

log = logging.getLogger("jouled.broker")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def broker_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # loopback only, anonymous: the same trust as the local status file. No $SYS chatter, no packet logs.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """amqtt on 127.0.0.1:<port>, started and stopped inside the daemon's event loop."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs every connection at INFO; the daemon's log is for the daemon's own news
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(broker_config(self.host, self.port))
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.shutdown()
            self._broker = None
