"""The one MQTT broker URL parser, used by the daemon's recorder, MarkerClient, `jouled mark` and the secrets.

    mqtt://[user[:password]@]host[:port]    plain TCP, default port 1883   (tcp:// is the same)
    mqtts://[user[:password]@]host[:port]   TLS, default port 8883         (ssl:// is the same)

Hosts may be names, IPv4 or bracketed IPv6 literals (``mqtt://[::1]:1883``). User and password are
percent-decoded (``p%40ss`` is ``p@ss``); who wins between them and [mqtt] username/password/password_file is
`jouled.secrets.mqtt_auth`'s business. WebSocket transports (ws://, wss://) are refused: both clients could
speak them (aiomqtt and paho have a websockets transport) but nothing here wires or tests them yet.
Pure: no I/O; errors are one line naming the URL with its password redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from jouled.errors import UserError
from jouled.secrets import redact_url

PLAIN_PORT = 1883
TLS_PORT = 8883
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}  # scheme → TLS
FORM = "expected mqtt://host[:port] or mqtts://host[:port] (tcp:// and ssl:// are the same)"


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

    @property
    def url(self) -> str:
        """The canonical URL (mqtt:// or mqtts://, port always written), password included: redact before showing."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        cred = ""
        if self.username or self.password:
            cred = quote(self.username or "", safe="") + (":" + quote(self.password, safe="") if self.password else "") + "@"
        return f"{'mqtts' if self.tls else 'mqtt'}://{cred}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt|tcp://[user[:password]@]host[:port]`` (1883) or ``mqtts|ssl://…`` (TLS, 8883); BrokerUrlError if not."""
    shown = redact_url(url)  # messages are printed and logged: never the password
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise BrokerUrlError(f"broker URL {shown!r}: {e} — {FORM}") from None
    scheme = parts.scheme.lower()
    if scheme in ("ws", "wss"):
        raise BrokerUrlError(f"broker URL {shown!r}: WebSocket transport is not supported — {FORM}")
    if scheme not in SCHEMES:
        what = f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise BrokerUrlError(f"broker URL {shown!r}: {what} — {FORM}")
    if not host:
        raise BrokerUrlError(f"broker URL {shown!r}: no host — {FORM}")
    if port == 0:
        raise BrokerUrlError(f"broker URL {shown!r}: port 0 — {FORM}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerUrlError(f"broker URL {shown!r}: unexpected path, query or fragment — {FORM}")
    tls = SCHEMES[scheme]
    return BrokerAddress(
        host=host,
        port=port or (TLS_PORT if tls else PLAIN_PORT),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,  # "user:@host": no password
    )
