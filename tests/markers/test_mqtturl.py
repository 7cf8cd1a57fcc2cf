"""jouled.mqtturl: the one broker URL parser (daemon, MarkerClient, jouled mark, secrets): examples and a round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouled.daemon.recorder import parse_mqtt_url
from jouled.errors import UserError
from jouled.mqtturl import BrokerAddress, BrokerUrlError, parse_broker_url

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(("url", "want"), [
    ("mqtt://127.0.0.1", ("127.0.0.1", 1883, False, None, None)),
    ("tcp://broker:1884", ("broker", 1884, False, None, None)),
    ("mqtts://broker", ("broker", 8883, True, None, None)),
    ("ssl://broker", ("broker", 8883, True, None, None)),
    ("SSL://Broker.Example:9883/", ("broker.example", 9883, True, None, None)),
    ("mqtt://[::1]", ("::1", 1883, False, None, None)),
    ("mqtts://[fe80::1]:8884", ("fe80::1", 8884, True, None, None)),
    ("mqtts://alice:p%40ss@broker.example:9883", ("broker.example", 9883, True, "alice", "p@ss")),
    ("mqtt://alice@h", ("h", 1883, False, "alice", None)),
    ("mqtt://alice:@h", ("h", 1883, False, "alice", None)),
    ("mqtt://u:p%3Aw%2F@[::1]:1", ("::1", 1, False, "u", "p:w/")),
    ("  mqtt://h:1883  ", ("h", 1883, False, None, None)),
])
def test_examples(url: str, want: tuple[object, ...]) -> None:
    a = parse_broker_url(url)
    assert (a.host, a.port, a.tls, a.username, a.password) == want


@pytest.mark.parametrize(("url", "why"), [
    ("http://x", "unknown scheme 'http'"),
    ("ws://x:9001", "WebSocket"),
    ("wss://x", "WebSocket"),
    ("mqtt://", "no host"),
    ("mqtt://h:99999", "out of range"),
    ("mqtt://h:0", "port 0"),
    ("mqtt://h:port", "Port could not be cast"),
    ("mqtt://h/topic", "unexpected path"),
    ("mqtt://h?x=1", "unexpected path"),
    ("mqtt://[::1", "Invalid IPv6"),
    ("127.0.0.1:1883", "scheme"),
    ("", "no scheme"),
])
def test_bad_urls_are_one_line_user_errors(url: str, why: str) -> None:
    with pytest.raises(BrokerUrlError, match="expected mqtt://host") as e:
        parse_broker_url(url)
    assert why in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_errors_name_the_url_without_its_password() -> None:
    for url in (f"http://alice:{SECRET}@broker:1883", f"mqtt://alice:{SECRET}@broker:99999", f"ws://alice:{SECRET}@b"):
        with pytest.raises(BrokerUrlError) as e:
            parse_broker_url(url)
        assert SECRET not in str(e.value) and "alice:***@" in str(e.value)


def test_the_daemon_and_the_client_read_urls_alike() -> None:
    for url in ("tcp://h:1884", "ssl://alice:pw@h", "mqtt://[::1]:1885"):
        a, ep = parse_broker_url(url), parse_mqtt_url(url)
        assert (ep.hostname, ep.port, ep.tls) == (a.host, a.port, a.tls)
        assert "pw" not in ep.url
    with pytest.raises(UserError, match="unknown scheme"):
        parse_mqtt_url("http://h")


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hosts = st.one_of(
    st.lists(_label, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
_secret = st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12))


@given(host=_hosts, port=st.integers(1, 65535), tls=st.booleans(), user=_secret, password=_secret)
def test_round_trip(host: str, port: int, tls: bool, user: str | None, password: str | None) -> None:
    a = BrokerAddress(host, port, tls, user, password)
    b = parse_broker_url(a.url)
    assert b == BrokerAddress(host, port, tls, user if (user or password) else None, password)
    if ":" in host:  # IPv6 literals are bracketed
        assert f"[{host}]" in a.url
