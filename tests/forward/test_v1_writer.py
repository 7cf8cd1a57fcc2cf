"""The v1 write client (http.client, one kept-alive connection): the request InfluxDB gets (path prefix, query,
basic auth from the config or the URL), a connection the server dropped while idle, a server down, a URL that is not
http(s) — against a local HTTP server that records what it receives, and a real InfluxDB with auth on."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from jouled.daemon.forward.writers import V1Writer, WriteError
from jouled.errors import UserError
from tests.brokers import free_port
from tests.servers import influxd_available, start_influxd


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []
    drop_after_answer = False  # close the connection after each answer without saying so (an idle timeout)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body,
                          "type": self.headers.get("Content-Type")})
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.drop_after_answer:
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[ThreadingHTTPServer, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"seen": [], "drop_after_answer": False})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv, handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_request_has_the_prefix_query_and_basic_auth_from_the_url(
    recorder: tuple[ThreadingHTTPServer, type[_Recorder]],
) -> None:
    srv, h = recorder
    w = V1Writer(f"http://u%40x:p%3Aw@127.0.0.1:{srv.server_address[1]}/influx/", "my db", retention_policy="week")
    try:
        w.write(b"power,host=h power_w=1 1")
    finally:
        w.close()
    (req,) = h.seen
    assert req["path"] == "/influx/write?db=my+db&precision=ns&rp=week"
    assert req["auth"] == "Basic " + base64.b64encode(b"u@x:p:w").decode()
    assert req["body"] == b"power,host=h power_w=1 1" and req["type"] == "text/plain; charset=utf-8"
    assert "p:w" not in w.target and "p%3Aw" not in w.target  # redacted for logs and status


def test_config_credentials_win_over_none_in_the_url(recorder: tuple[ThreadingHTTPServer, type[_Recorder]]) -> None:
    srv, h = recorder
    w = V1Writer(f"http://127.0.0.1:{srv.server_address[1]}", "db", username="jouled", password="s3cret")
    w.write(b"x v=1 1")
    w.close()
    assert h.seen[0]["auth"] == "Basic " + base64.b64encode(b"jouled:s3cret").decode()
    assert h.seen[0]["path"] == "/write?db=db&precision=ns"


def test_a_connection_dropped_while_idle_is_opened_again(recorder: tuple[ThreadingHTTPServer, type[_Recorder]]) -> None:
    srv, h = recorder
    h.drop_after_answer = True
    w = V1Writer(f"http://127.0.0.1:{srv.server_address[1]}", "db")
    try:
        for i in range(3):
            w.write(f"x v={i} {i}".encode())
    finally:
        w.close()
    assert [r["body"] for r in h.seen] == [b"x v=0 0", b"x v=1 1", b"x v=2 2"]


def test_a_server_down_is_a_retry_naming_the_target_never_the_password() -> None:
    w = V1Writer(f"http://jouled:s3cret@127.0.0.1:{free_port()}", "db")
    with pytest.raises(WriteError) as e:
        w.write(b"x v=1 1")
    assert e.value.kind == "retry" and "cannot connect" in str(e.value) and "s3cret" not in str(e.value)


@pytest.mark.parametrize("url", ["influx://127.0.0.1:8086/db", "localhost:8086", "ftp://h/", "http://h:80x86",
                                 "http://h:99999", "http://:8086"])
def test_a_url_that_is_not_http_is_one_line_naming_the_key(url: str) -> None:
    with pytest.raises(UserError) as e:
        V1Writer(url, "db")
    assert "[influx] url" in str(e.value) and "http://localhost:8086" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(not influxd_available(), reason="InfluxDB 1.x (Debian influxdb) not installed")
def test_url_credentials_reach_a_real_influxdb_with_auth() -> None:
    srv = start_influxd(auth=True)
    try:
        assert httpx.post(srv.url + "/query", data={"q": "CREATE USER root WITH PASSWORD 'r00t' WITH ALL PRIVILEGES"}
                          ).status_code == 200
        assert httpx.post(srv.url + "/query", data={"q": 'CREATE DATABASE "w"'}, auth=("root", "r00t")).status_code == 200
        bad = V1Writer(srv.url.replace("http://", "http://root:nope@"), "w")
        with pytest.raises(WriteError) as e:
            bad.write(b"power,host=h power_w=1 1")
        assert e.value.kind == "config" and "credentials refused" in str(e.value)
        bad.close()
        good = V1Writer(srv.url.replace("http://", "http://root:r00t@"), "w")
        good.write(b"power,host=h power_w=7 1")
        good.write(b"power,host=h power_w=8 2")  # the same kept-alive connection
        good.close()
        got = httpx.post(srv.url + "/query", data={"q": "SELECT sum(power_w) FROM power", "db": "w"},
                         auth=("root", "r00t")).json()["results"][0]["series"][0]["values"][0][1]
        assert got == 15
    finally:
        srv.close()
