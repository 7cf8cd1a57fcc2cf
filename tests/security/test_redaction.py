"""Credentials in URLs: used by every component and redacted wherever they are printed, logged or written."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jouled.secrets import RedactingFilter, redact_text, redact_url, remember_secret
from jouled.trainer.markers import MarkerClient
from tests.security.helpers import secured_mosquitto_available, start_secure_mosquitto, wait_until

SECRET = "pw-Zq81vK"


@pytest.mark.parametrize(("url", "want"), [
    ("mqtt://alice:pw@127.0.0.1:1883", "mqtt://alice:***@127.0.0.1:1883"),
    ("mqtts://alice:p%40ss@broker:8883", "mqtts://alice:***@broker:8883"),
    ("mqtt://alice:p@ss@broker", "mqtt://alice:***@broker"),  # an unescaped @ in the password
    ("mqtt://alice@broker", "mqtt://alice@broker"),  # a user name alone is no secret
    ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
    ("http://u:tok@influx:8086/write?db=j", "http://u:***@influx:8086/write?db=j"),
    ("https://api.example/v3?zone=DE&token=abc123&x=1", "https://api.example/v3?zone=DE&token=***&x=1"),
    ("https://api.example/v3?API_KEY=abc", "https://api.example/v3?API_KEY=***"),
    ("influx2://h:8086?org=o&bucket=b", "influx2://h:8086?org=o&bucket=b"),
    ("sqlite:////var/lib/jouled/jouled.db", "sqlite:////var/lib/jouled/jouled.db"),
    ("not a url", "not a url"),
    ("", ""),
])
def test_redact_url(url: str, want: str) -> None:
    assert redact_url(url) == want


def test_redact_text_and_log_filter(caplog: pytest.LogCaptureFixture) -> None:
    text = "broker mqtt://bob:hunter2x@h:1 refused; see https://x/y?token=T0K&z=1 and 'mqtt://c:d@e'"
    out = redact_text(text)
    assert "hunter2x" not in out and "T0K" not in out and ":d@" not in out
    assert "mqtt://bob:***@h:1" in out and "token=***&z=1" in out
    assert redact_text("the secret is k3y-value here", ["k3y-value"]) == "the secret is *** here"
    remember_secret("remembered-Secr3t")
    rec = logging.LogRecord("jouled.x", logging.INFO, __file__, 1, "connect %s with %s", ("mqtt://a:b@c", "remembered-Secr3t"),
                            None)
    assert RedactingFilter().filter(rec)
    assert rec.getMessage() == "connect mqtt://a:***@c with ***"


def _read_runs(db: Path) -> set[str]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return {r[0] for r in con.execute("SELECT run FROM markers")}
        finally:
            con.close()
    except sqlite3.Error:
        return set()


@pytest.mark.skipif(not secured_mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed")
def test_jouled_run_with_url_password_stores_markers_and_never_shows_it(tmp_path: Path) -> None:
    broker = start_secure_mosquitto({"alice": SECRET})
    url = f"mqtt://alice:{SECRET}@127.0.0.1:{broker.port}"
    db = tmp_path / "data" / "log.db"
    env = {
        **os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"), "JOULED_MQTT_URL": url, "JOULED_STORE": f"sqlite:///{db}",
        "COLUMNS": "80",
    }
    env.pop("JOULED_CONFIG", None)
    env.pop("RUNTIME_DIRECTORY", None)
    (tmp_path / "run").mkdir(mode=0o700)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jouled.cli", "run", "--verbose", "--source", "estimate"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def connected() -> bool:
            for p in tmp_path.rglob("*.status.json"):
                try:
                    if json.loads(p.read_text()).get("markers", {}).get("connected"):
                        return True
                except (ValueError, OSError):
                    pass
            assert proc.poll() is None, proc.communicate()[1]
            return False

        wait_until(connected, 60, "daemon subscribed (status file says connected)")
        client = MarkerClient(url, host=os.uname().nodename, spool_path=tmp_path / "spool")
        with client.run("secret-test-run", gpus=[]) as r, r.epoch(0):
            pass
        assert client.flush(10)
        client.close()
        wait_until(lambda: "secret-test-run" in _read_runs(db), 30, "markers stored by the daemon")
        status_cli = subprocess.run([sys.executable, "-m", "jouled.cli", "status"], env=env, capture_output=True,
                                    text=True, timeout=60)
        status_json = subprocess.run([sys.executable, "-m", "jouled.cli", "status", "--format", "json"], env=env,
                                     capture_output=True, text=True, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            broker.close()
    assert proc.returncode == 0, err
    assert f"mqtt://alice:***@127.0.0.1:{broker.port}" in err  # the INFO line says where it subscribed, redacted
    assert "markers: subscribed" in err
    status_files = list(tmp_path.rglob("*.status.json"))
    assert status_files
    for p in status_files:
        assert SECRET not in p.read_text(), p
        assert json.loads(p.read_text())["markers"]["broker"] == f"mqtt://alice:***@127.0.0.1:{broker.port}"
    assert "markers via mqtt://alice:***@" in status_cli.stdout, status_cli.stdout + status_cli.stderr
    for text in (out, err, status_cli.stdout, status_cli.stderr, status_json.stdout, status_json.stderr):
        assert SECRET not in text
    # and nothing else the daemon wrote holds it (the log, its lock, the spool)
    for p in tmp_path.rglob("*"):
        if p.is_file() and p.parent != tmp_path / "spool":
            assert SECRET.encode() not in p.read_bytes(), p


def test_store_url_with_credentials_never_echoed() -> None:
    from typer.testing import CliRunner

    from jouled.cli import app

    res = CliRunner().invoke(app, ["energy", "runs", "--store", f"influx://u:{SECRET}@127.0.0.1:8086/db"])
    assert res.exit_code == 2
    assert SECRET not in res.output and "influx://u:***@127.0.0.1:8086/db" in res.output


def test_broker_url_errors_never_echo_the_password() -> None:
    from jouled.markers import parse_broker_url

    with pytest.raises(ValueError) as e:
        parse_broker_url(f"http://alice:{SECRET}@broker:1883")
    assert SECRET not in str(e.value) and "alice:***@" in str(e.value)
