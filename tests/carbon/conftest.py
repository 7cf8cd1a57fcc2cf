"""A real HTTP server on 127.0.0.1 (free port) that answers scripted responses, and paths to the shared traces."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "carbon"


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Resp:
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes → sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Handler = Callable[[Req], Resp]


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Req] = []
        self.handler: Handler = lambda r: Resp(404, {"error": "no handler"})
        srv = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                u = urlsplit(self.path)
                req = Req(
                    "GET",
                    u.path,
                    {k: v[0] for k, v in parse_qs(u.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                )
                srv.requests.append(req)
                resp = srv.handler(req)
                if resp.delay_s:
                    time.sleep(resp.delay_s)
                body = resp.body
                data = (
                    body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
                )
                try:
                    self.send_response(resp.status)
                    ctype = "application/json" if not isinstance(body, str | bytes) else "text/plain"
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in resp.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def script(self, responses: list[Resp], then: Handler | None = None) -> None:
        """Answer these in order, then ``then`` (or the last one again)."""
        queue = list(responses)

        def h(req: Req) -> Resp:
            if queue:
                return queue.pop(0)
            return then(req) if then else responses[-1]

        self.handler = h

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


class Sleeps:
    """Records the waits a fetcher asks for instead of sleeping (the waits are what we test)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)


class Mono:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def mono() -> Mono:
    return Mono()


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data file {path} not present")
    return path
