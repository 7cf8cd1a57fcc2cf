"""An InfluxDB store that cannot be read is one line naming the URL (password redacted) and the fix, exit 2:
server down, unknown database, no database in the URL, refused credentials (a real auth-enabled InfluxDB 1.x),
a v2 URL without a token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import jouled.query
from jouled.cli import app
from jouled.query import StoreError
from tests.brokers import free_port
from tests.influx_read import dataset as ds
from tests.servers import ServerHandle, influxd_available, start_influxd

pytestmark = pytest.mark.influx
runner = CliRunner()


def _one_line(res, *needles: str, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == code, res.output
    text = res.output
    assert "Traceback" not in text and text.strip().count("\n") == 0, text
    for n in needles:
        assert n in text, text
    return text


def test_server_down_is_one_line() -> None:
    url = f"influx://jo:hunter22@127.0.0.1:{free_port()}/jouled"
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", url])
    text = _one_line(res, "cannot reach InfluxDB", "is it running?", "jo:***@127.0.0.1")
    assert "hunter22" not in text
    with pytest.raises(StoreError, match="cannot reach"):
        jouled.query.open(url)


def test_unknown_database_and_no_database(influxd: ServerHandle) -> None:
    res = runner.invoke(app, ["energy", "epochs", "--run", "r", "--no-progress", "--store",
                              f"influx://127.0.0.1:{influxd.port}/nope"])
    _one_line(res, "no database 'nope'", f"influx://127.0.0.1:{influxd.port}/nope")
    res = runner.invoke(app, ["export", "samples", "--run", "r", "--store", f"influx://127.0.0.1:{influxd.port}"])
    _one_line(res, "names no database", "influx://127.0.0.1:")


def test_empty_database_says_no_markers(influxd: ServerHandle, influx_db: str) -> None:
    url = f"influx://127.0.0.1:{influxd.port}/{influx_db}"
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", url])
    _one_line(res, "no markers yet", url)
    ds.write_lines(influxd.url, influx_db, ds.influx_lines([], ds.markers()[:3], []))
    res = runner.invoke(app, ["energy", "epochs", "--run", "nope", "--no-progress", "--store", url])
    _one_line(res, "run 'nope': no markers", "known runs: r1")


def test_v2_without_token_or_with_token_in_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULED_INFLUX_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", f"influx2://127.0.0.1:{free_port()}?org=o&bucket=b"])
    _one_line(res, "no InfluxDB token", "JOULED_INFLUX_TOKEN")
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", "influx2://127.0.0.1:1?org=o&bucket=b&token=t0ps3cret"])
    text = _one_line(res, "never goes on the command line")
    assert "t0ps3cret" not in text
    monkeypatch.setenv("JOULED_INFLUX_TOKEN", "tok-123456")  # a token, but nothing listens: one line, not a traceback
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", f"influx2://127.0.0.1:{free_port()}?org=o&bucket=b"])
    _one_line(res, "cannot reach InfluxDB")


# -- a real InfluxDB 1.x with authentication on -------------------------------------------------------------------


@pytest.fixture(scope="module")
def influxd_auth() -> Iterator[ServerHandle]:
    if not influxd_available():
        pytest.skip("influxd (InfluxDB 1.x) not installed")
    srv = start_influxd(auth=True)
    # the first admin may be created without credentials; after that everything needs them
    r = httpx.post(srv.url + "/query", data={"q": "CREATE USER admin WITH PASSWORD 's3cr3t-pw' WITH ALL PRIVILEGES"})
    assert r.status_code == 200, r.text
    r = httpx.post(srv.url + "/query", data={"q": 'CREATE DATABASE "jouled"'}, auth=("admin", "s3cr3t-pw"))
    assert r.status_code == 200, r.text
    body = "\n".join(ds.influx_lines(ds.series()[:1], [m for m in ds.markers() if m.run == "r1"], []))
    r = httpx.post(srv.url + "/write", params={"db": "jouled", "precision": "ns"}, content=body.encode(),
                   auth=("admin", "s3cr3t-pw"))
    assert r.status_code == 204, r.text
    try:
        yield srv
    finally:
        srv.stop()


def test_refused_credentials_then_config_credentials(influxd_auth: ServerHandle, tmp_path: Path) -> None:
    base = f"127.0.0.1:{influxd_auth.port}/jouled"
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", f"influx://{base}"])
    _one_line(res, "refused the credentials", "[influx] username and password_file")
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--store", f"influx://admin:wrong-pw@{base}"])
    text = _one_line(res, "refused the credentials", "admin:***@")
    assert "wrong-pw" not in text
    pw = tmp_path / "influx-password"
    pw.write_text("s3cr3t-pw\n")
    os.chmod(pw, 0o600)
    cfg = tmp_path / "j.toml"
    cfg.write_text(f'[influx]\nusername = "admin"\npassword_file = "{pw}"\n')
    res = runner.invoke(app, ["energy", "runs", "--no-progress", "--format", "json", "--config", str(cfg),
                              "--store", f"influx://{base}"])
    assert res.exit_code == 0, res.output
    assert "r1" in res.stdout and "s3cr3t-pw" not in res.output
