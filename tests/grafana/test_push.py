"""`jouled grafana push` against a small real HTTP server that speaks the part of Grafana's API it calls.

The server (``FakeGrafana``: http.server on a free port) answers GET /api/health, GET/POST /api/folders and
POST /api/dashboards/db like Grafana 10 does, checks the bearer token, keeps what it was sent, and can be told to
answer an error. Checked: the request bodies are the committed dashboards (datasource uids rewritten when asked),
the auth header, folder creation once, idempotence (same uids, versions go up, nothing added), and that each error
(no token, bad URL, 401, 403, 404, server down, a non-Grafana answer) is one line and exit 2, never the token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jouled.grafana import dashboard_files
from jouled.grafana_cli import grafana_app, with_datasource_uid
from tests.brokers import free_port

pytest.importorskip("grafana_client")

TOKEN = "glsa_test_token_0123456789"
runner = CliRunner()


@dataclass
class FakeGrafana:
    token: str = TOKEN
    folders: list[dict[str, Any]] = field(default_factory=list)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid → {"body": ..., "version": n}
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)  # method, path, headers, body
    fail: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)  # (method, path) → (status, body)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, headers, body))
        path = path.split("?")[0]
        if (method, path) in self.fail:
            return self.fail[(method, path)]
        if path == "/api/health":
            return 200, {"commit": "test", "database": "ok", "version": "10.4.0"}
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"message": "invalid API key"}
        if (method, path) == ("GET", "/api/folders"):
            return 200, self.folders
        if (method, path) == ("POST", "/api/folders"):
            folder = {"id": len(self.folders) + 1, "uid": f"f{len(self.folders) + 1}", "title": body["title"]}
            self.folders.append(folder)
            return 200, folder
        if (method, path) == ("POST", "/api/dashboards/db"):
            d = body["dashboard"]
            if body.get("folderUid") and body["folderUid"] not in {f["uid"] for f in self.folders}:
                return 404, {"message": "folder not found", "status": "not-found"}
            old = self.dashboards.get(d["uid"])
            if old and not body.get("overwrite"):
                return 412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"}
            version = old["version"] + 1 if old else 1
            self.dashboards[d["uid"]] = {"body": body, "version": version}
            return 200, {"id": 7, "uid": d["uid"], "url": f"/d/{d['uid']}/x", "status": "success", "version": version,
                         "slug": "x"}
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body = json.loads(raw) if raw else None
            status, payload = fake.answer(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "grafana.token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


def committed() -> dict[str, dict[str, Any]]:
    out = {}
    for f in dashboard_files():
        d = json.loads(f.read_text(encoding="utf-8"))
        out[d["uid"]] = d
    return out


def _push(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(grafana_app, ["push", *args], env={"JOULED_GRAFANA_TOKEN": "", **(env or {})})


def _one_line_error(r: Any, *needles: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    err = r.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert "Traceback" not in r.output + r.stderr
    assert TOKEN not in r.output + r.stderr
    for n in needles:
        assert n in err, err
    return str(err)


def test_push_uploads_the_committed_dashboards_with_the_token(grafana: FakeGrafana, token_file: Path) -> None:
    r = _push("--url", grafana.url, "--token-file", str(token_file), "--folder", "jouled")
    assert r.exit_code == 0, (r.output, r.stderr)
    want = committed()
    assert set(grafana.dashboards) == set(want) == {"jouled-influxql", "jouled-flux", "jouled-prometheus"}
    for uid, got in grafana.dashboards.items():
        assert got["body"]["dashboard"] == want[uid]
        assert got["body"]["overwrite"] is True
        assert got["body"]["folderUid"] == "f1"
    assert [f["title"] for f in grafana.folders] == ["jouled"]
    api_calls = [(m, p.split("?")[0]) for m, p, h, _ in grafana.requests if p != "/api/health"]
    assert all(h.get("authorization") == f"Bearer {TOKEN}" for m, p, h, _ in grafana.requests if p != "/api/health")
    assert api_calls.count(("POST", "/api/dashboards/db")) == 3
    assert r.output.count("pushed ") == 3 and "/d/jouled-influxql/" in r.output
    assert TOKEN not in r.output


def test_push_again_overwrites_and_adds_nothing(grafana: FakeGrafana, token_file: Path) -> None:
    for _ in range(2):
        r = _push("--url", grafana.url + "/", "--token-file", str(token_file), "--folder", "jouled")
        assert r.exit_code == 0, (r.output, r.stderr)
    assert len(grafana.folders) == 1  # found by title the second time, not created again
    assert len(grafana.dashboards) == 3
    assert {d["version"] for d in grafana.dashboards.values()} == {2}
    assert "version 2" in r.output


def test_token_from_the_environment_and_datasource_uids(grafana: FakeGrafana) -> None:
    r = _push("--url", grafana.url, "--dashboard", "promql", "--datasource-uid", "promql=site-prom",
              env={"JOULED_GRAFANA_TOKEN": TOKEN})
    assert r.exit_code == 0, (r.output, r.stderr)
    assert list(grafana.dashboards) == ["jouled-prometheus"]
    body = grafana.dashboards["jouled-prometheus"]["body"]
    assert "folderUid" not in body  # no --folder: Grafana's General folder
    text = json.dumps(body["dashboard"])
    assert "jouled-prometheus\"" not in text.replace('"uid": "jouled-prometheus"', "", 1)  # only the dashboard's own uid
    assert body["dashboard"] == with_datasource_uid(committed()["jouled-prometheus"], "jouled-prometheus", "site-prom")
    assert text.count('"uid": "site-prom"') >= 10  # panels, targets, variables, annotation


def test_without_a_token_it_says_where_to_put_one(grafana: FakeGrafana) -> None:
    _one_line_error(_push("--url", grafana.url), "--token-file", "JOULED_GRAFANA_TOKEN")
    assert grafana.requests == []


def test_an_empty_or_missing_token_file(grafana: FakeGrafana, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    _one_line_error(_push("--url", grafana.url, "--token-file", str(empty)), "empty")
    _one_line_error(_push("--url", grafana.url, "--token-file", str(tmp_path / "nope")), "not found")


def test_a_wrong_token_is_401_in_one_line(grafana: FakeGrafana, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("glsa_wrong\n")
    bad.chmod(0o600)
    err = _one_line_error(_push("--url", grafana.url, "--token-file", str(bad), "--folder", "x"), "HTTP 401", "token")
    assert "glsa_wrong" not in err
    assert grafana.dashboards == {} and grafana.folders == []


@pytest.mark.parametrize(("status", "needle"), [(403, "Editor"), (404, "root URL"), (500, "Grafana's log")])
def test_http_errors_from_the_dashboard_api(grafana: FakeGrafana, token_file: Path, status: int, needle: str) -> None:
    grafana.fail[("POST", "/api/dashboards/db")] = (status, {"message": "nope"})
    _one_line_error(_push("--url", grafana.url, "--token-file", str(token_file)), f"HTTP {status}", needle,
                    "/api/dashboards/db")


def test_a_folder_api_that_is_not_there(grafana: FakeGrafana, token_file: Path) -> None:
    """A URL with the wrong sub-path: the folder list is a 404 — one line, nothing uploaded."""
    grafana.fail[("GET", "/api/folders")] = (404, {"message": "Not found"})
    _one_line_error(_push("--url", grafana.url, "--token-file", str(token_file), "--folder", "jouled"),
                    "HTTP 404", "/api/folders")
    assert grafana.dashboards == {}


def test_something_else_answers_at_the_url(grafana: FakeGrafana, token_file: Path) -> None:
    grafana.fail[("GET", "/api/health")] = (200, "<html>a wiki</html>")
    grafana.fail[("GET", "/api/folders")] = (200, "<html>a wiki</html>")
    grafana.fail[("POST", "/api/dashboards/db")] = (200, "<html>a wiki</html>")
    _one_line_error(_push("--url", grafana.url, "--token-file", str(token_file)), "not Grafana's JSON", "/api/health")


def test_grafana_down_is_one_line(token_file: Path) -> None:
    _one_line_error(_push("--url", f"http://127.0.0.1:{free_port()}", "--token-file", str(token_file)),
                    "not reachable", "check --url")


@pytest.mark.parametrize("url", ["ftp://grafana:3000", "grafana:3000", "http://", "http://h:notaport"])
def test_a_bad_url_is_one_line(token_file: Path, url: str) -> None:
    _one_line_error(_push("--url", url, "--token-file", str(token_file)), "--url")


@pytest.mark.parametrize("value", ["prometheus", "sql=x", "promql="])
def test_a_bad_datasource_uid_is_one_line(grafana: FakeGrafana, token_file: Path, value: str) -> None:
    _one_line_error(_push("--url", grafana.url, "--token-file", str(token_file), "--datasource-uid", value),
                    "--datasource-uid", "FLAVOUR=UID")
    assert grafana.requests == []


def test_a_password_in_the_url_is_not_printed(grafana: FakeGrafana, token_file: Path) -> None:
    url = f"http://admin:s3cr3t-pw@127.0.0.1:{free_port()}"
    err = _one_line_error(_push("--url", url, "--token-file", str(token_file)), "not reachable")
    assert "s3cr3t-pw" not in err
