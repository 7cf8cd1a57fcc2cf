"""jouled.mqtturl: the one broker URL parser (daemon, MarkerClient, jouled mark, secrets): examples and a round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouled.daemon.recorder import parse_mqtt_url
from jouled.errors import UserError
from jouled.mqtturl import BrokerAddress, BrokerUrlError, parse_broker_url
from jouled.trainer.markers import MarkerClient
from tests.brokers import start_amqtt
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.reliability.helpers import wait_for

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
    ("ws://h:9001", ("h", 9001, False, None, None)),
    ("wss://u:pw@h/mqtt", ("h", 443, True, "u", "pw")),
])
def test_examples(url: str, want: tuple[object, ...]) -> None:
    a = parse_broker_url(url)
    assert (a.host, a.port, a.tls, a.username, a.password) == want


def test_websocket_urls_keep_their_path() -> None:
    assert (parse_broker_url("ws://h").port, parse_broker_url("ws://h").path) == (80, "/mqtt")
    a = parse_broker_url("wss://[::1]:8443/broker/mqtt%20x")
    assert (a.transport, a.tls, a.port, a.path) == ("websockets", True, 8443, "/broker/mqtt x")
    assert parse_broker_url("mqtt://h").transport == "tcp" and parse_broker_url("mqtt://h").path == ""


@pytest.mark.parametrize(("url", "why"), [
    ("http://x", "unknown scheme 'http'"),
    ("ws://x?a=1", "unexpected path"),
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
    for url in (f"http://alice:{SECRET}@broker:1883", f"mqtt://alice:{SECRET}@broker:99999", f"ws://alice:{SECRET}@b:0"):
        with pytest.raises(BrokerUrlError) as e:
            parse_broker_url(url)
        assert SECRET not in str(e.value) and "alice:***@" in str(e.value)


def test_the_daemon_and_the_client_read_urls_alike() -> None:
    for url in ("tcp://h:1884", "ssl://alice:pw@h", "mqtt://[::1]:1885", "ws://h:9001/p"):
        a, ep = parse_broker_url(url), parse_mqtt_url(url)
        assert (ep.hostname, ep.port, ep.tls, ep.transport) == (a.host, a.port, a.tls, a.transport)
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


_paths = st.one_of(st.just(""), st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12).map("/".__add__))


@given(host=_hosts, port=st.integers(1, 65535), tls=st.booleans(), user=_secret, password=_secret, path=_paths)
def test_round_trip(host: str, port: int, tls: bool, user: str | None, password: str | None, path: str) -> None:
    transport = "websockets" if path else "tcp"
    a = BrokerAddress(host, port, tls, user, password, transport, path)
    b = parse_broker_url(a.url)
    assert b == BrokerAddress(host, port, tls, user if (user or password) else None, password, transport, path)
    if ":" in host:  # IPv6 literals are bracketed
        assert f"[{host}]" in a.url


def test_daemon_and_client_meet_over_websocket(tmp_path: Path) -> None:
    """A real amqtt broker with a WebSocket listener: the daemon subscribes and MarkerClient publishes by ws://."""
    broker = start_amqtt(websocket=True)
    try:
        url = f"ws://127.0.0.1:{broker.port}/mqtt"
        cfg = make_config(tmp_path, url)
        d = start_daemon(cfg, [ScriptedSource()])
        try:
            wait_for(lambda: d.daemon.recorder.stats.connected, what="the daemon subscribed over WebSocket")
            with MarkerClient(url, host="testhost", spool_path=tmp_path / "spool") as c:
                with c.run("ws-run"):
                    pass
                assert c.flush(10)
            wait_for(lambda: len(d.daemon.store.read_markers("ws-run")) == 2, what="markers stored")
        finally:
            d.stop()
    finally:
        broker.close()
