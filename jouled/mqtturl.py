"""The one MQTT broker URL parser, used by the daemon's recorder, MarkerClient, `jouled mark` and the secrets.

    mqtt://[user[:password]@]host[:port]    plain TCP, default port 1883   (tcp:// is the same)
    mqtts://[user[:password]@]host[:port]   TLS, default port 8883         (ssl:// is the same)
    ws://[user[:password]@]host[:port][/path]    MQTT over WebSocket, default port 80, path /mqtt
    wss://[user[:password]@]host[:port][/path]   the same over TLS, default port 443

Hosts may be names, IPv4 or bracketed IPv6 literals (``mqtt://[::1]:1883``). User and password are
percent-decoded (``p%40ss`` is ``p@ss``); who wins between them and [mqtt] username/password/password_file is
`jouled.secrets.mqtt_auth`'s business. Both clients speak every scheme: the daemon's aiomqtt and MarkerClient's
paho each have a "websockets" transport with a path.
Pure: no I/O; errors are one line naming the URL with its password redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from jouled.errors import UserError
from jouled.secrets import redact_url

PLAIN_PORT = 1883
TLS_PORT = 8883
WS_PORT = 80
WSS_PORT = 443
WS_PATH = "/mqtt"  # paho's and most brokers' default
# scheme → (TLS, transport)
SCHEMES = {
    "mqtt": (False, "tcp"), "tcp": (False, "tcp"), "mqtts": (True, "tcp"), "ssl": (True, "tcp"),
    "ws": (False, "websockets"), "wss": (True, "websockets"),
}
FORM = "expected mqtt://host[:port] or mqtts://host[:port] (tcp:// and ssl:// are the same; ws:// and wss:// for WebSocket)"


class BrokerUrlError(UserError, ValueError):
    """A broker URL that cannot be used; a UserError (one line, exit 2) and a ValueError (callers that validate)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where an MQTT broker is and the credentials its URL carried (None: none, or empty, in the URL)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    transport: str = "tcp"  # tcp | websockets
    path: str = ""  # the WebSocket path (websockets only)

    @property
    def url(self) -> str:
        """The canonical URL (mqtt:// or mqtts://, port always written), password included: redact before showing."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        cred = ""
        if self.username or self.password:
            cred = quote(self.username or "", safe="") + (":" + quote(self.password, safe="") if self.password else "") + "@"
        if self.transport == "websockets":
            return f"{'wss' if self.tls else 'ws'}://{cred}{host}:{self.port}{quote(self.path, safe='/')}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{cred}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt|tcp://[user[:password]@]host[:port]`` (1883), ``mqtts|ssl://…`` (TLS, 8883), ``ws://…[/path]`` (80) or
    ``wss://…[/path]`` (443); BrokerUrlError if not."""
    shown = redact_url(url)  # messages are printed and logged: never the password
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise BrokerUrlError(f"broker URL {shown!r}: {e} — {FORM}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        what = f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise BrokerUrlError(f"broker URL {shown!r}: {what} — {FORM}")
    if not host:
        raise BrokerUrlError(f"broker URL {shown!r}: no host — {FORM}")
    if port == 0:
        raise BrokerUrlError(f"broker URL {shown!r}: port 0 — {FORM}")
    tls, transport = SCHEMES[scheme]
    ws = transport == "websockets"
    if (parts.path not in ("", "/") and not ws) or parts.query or parts.fragment:
        raise BrokerUrlError(f"broker URL {shown!r}: unexpected path, query or fragment — {FORM}")
    default_port = (WSS_PORT if tls else WS_PORT) if ws else (TLS_PORT if tls else PLAIN_PORT)
    return BrokerAddress(
        host=host,
        port=port or default_port,
        tls=tls,
        transport=transport,
        path=(unquote(parts.path) or WS_PATH) if ws else "",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,  # "user:@host": no password
    )
