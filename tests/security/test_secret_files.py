"""Secrets from files, systemd credentials or the environment (never the command line); file and folder modes."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.config import Config, load_config
from jouled.errors import UserError
from jouled.secrets import (
    exposure_warning,
    influx_password,
    influx_token,
    make_private_dir,
    mqtt_auth,
    read_secret,
    read_secret_file,
)
from jouled.service_cli import CONFIG, MQTT_PASSWORD, UNIT
from jouled.trainer.markers import MarkerClient
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _secret(p: Path, text: str, mode: int = 0o600) -> Path:
    p.write_text(text)
    p.chmod(mode)
    return p


def test_read_secret_order(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    f = _secret(tmp_path / "file", "from-file\nsecond line ignored\n")
    env = {"JOULED_X": " from-env \n"}
    assert read_secret("x", file=str(f), env_var="JOULED_X", value="v", environ=env) == "from-file"
    assert read_secret("x", env_var="JOULED_X", value="v", environ=env) == "from-env"
    assert read_secret("x", value="from-value", environ={}) == "from-value"
    assert read_secret("x", credential="mqtt-password", environ={}) is None
    # the systemd credential wins (LoadCredential= exists only inside the service)
    _secret(creds / "mqtt-password", "from-credential\n")
    env["CREDENTIALS_DIRECTORY"] = str(creds)
    assert read_secret("x", file=str(f), credential="mqtt-password", env_var="JOULED_X", environ=env) == "from-credential"
    assert read_secret("x", file=str(f), credential="influx-token", environ=env) == "from-file"  # not passed: next


def test_read_secret_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"\[mqtt\] password_file .*nope: file not found — create it"):
        read_secret_file(tmp_path / "nope", "[mqtt] password_file")
    with pytest.raises(UserError, match=r"empty — write the secret on its first line"):
        read_secret_file(_secret(tmp_path / "empty", "\n\n"), "[mqtt] password_file")
    with pytest.raises(UserError, match=r"is a folder"):
        read_secret_file(tmp_path, "[mqtt] password_file")
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(UserError, match=r"permission denied — run as a member of its group"):
            read_secret_file(_secret(tmp_path / "locked", "x\n", 0o000), "[mqtt] password_file")


def test_mqtt_auth_resolution(tmp_path: Path) -> None:
    cfg = Config()
    cfg.store.path = str(tmp_path / "log.db")
    cfg.mqtt.url = "mqtt://alice:url-pw@broker:1883"
    assert mqtt_auth(cfg, environ={}) == mqtt_auth(cfg, environ={})
    a = mqtt_auth(cfg, environ={})
    assert (a.username, a.password, a.origin) == ("alice", "url-pw", "url")
    cfg.mqtt.username, cfg.mqtt.password = "bob", "cfg-pw"
    a = mqtt_auth(cfg, environ={})
    assert (a.username, a.password, a.origin) == ("bob", "cfg-pw", "[mqtt] password")
    cfg.mqtt.password_file = str(_secret(tmp_path / "pw", "file-pw\n"))
    assert mqtt_auth(cfg, environ={}).password == "file-pw"
    creds = tmp_path / "creds"
    creds.mkdir()
    _secret(creds / "mqtt-password", "cred-pw\n")
    a = mqtt_auth(cfg, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert (a.password, a.origin) == ("cred-pw", "systemd credential mqtt-password")


def test_influx_token_and_password(tmp_path: Path) -> None:
    cfg = Config()
    assert influx_token(cfg, environ={}) is None
    assert influx_token(cfg, environ={"JOULED_INFLUX_TOKEN": "env-tok"}) == "env-tok"
    cfg.influx.token_file = str(_secret(tmp_path / "tok", "file-tok\n"))
    assert influx_token(cfg, environ={"JOULED_INFLUX_TOKEN": "env-tok"}) == "file-tok"
    creds = tmp_path / "creds"
    creds.mkdir()
    _secret(creds / "influx-token", "cred-tok\n")
    _secret(creds / "influx-password", "cred-pw\n")
    assert influx_token(cfg, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == "cred-tok"
    cfg.influx.password = "inline"
    assert influx_password(cfg, environ={}) == "inline"
    assert influx_password(cfg, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == "cred-pw"
    # and the environment variable is no config key (no "unknown key" error)
    load_config(None, environ={"JOULED_INFLUX_TOKEN": "x", "HOME": str(tmp_path)})


def test_inline_password_in_readable_config_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for mode, warns in ((0o644, True), (0o600, False)):
        p = tmp_path / f"c{mode:o}.toml"
        p.write_text('[mqtt]\nurl = "mqtt://broker:1883"\nusername = "alice"\npassword = "inline-pw"\n')
        p.chmod(mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="jouled.config"):
            cfg = load_config(p, environ={})
        assert cfg.mqtt.password == "inline-pw"  # still works, for compatibility
        msgs = [r.getMessage() for r in caplog.records if r.name == "jouled.config"]
        if warns:
            assert len(msgs) == 1 and "holding [mqtt] password" in msgs[0] and "readable by every user (mode 0644)" in msgs[0]
            assert "inline-pw" not in msgs[0]
        else:
            assert msgs == []
    g = _secret(tmp_path / "g", "x", 0o640)  # group-readable: fine for group jouled (the service), else a warning
    warning = exposure_warning(g, "f")
    assert (warning is None) == (g.group() == "jouled")
    assert warning is None or "readable by group" in warning


def test_private_dir_modes(tmp_path: Path, umask022: None) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    make_private_dir(existing / "a" / "b")
    assert _mode(existing) == 0o755  # not ours to change
    assert _mode(existing / "a") == 0o750 and _mode(existing / "a" / "b") == 0o750


def test_daemon_store_status_and_generated_password_modes(tmp_path: Path, umask022: None) -> None:
    cfg = make_config(tmp_path / "state" / "jouled", "", embedded_port=free_port())
    cfg.mqtt.embedded_auth = True
    cfg.daemon.status_path = str(tmp_path / "run" / "jouled" / "status.json")
    d = start_daemon(cfg, [ScriptedSource()])
    try:
        status = Path(cfg.daemon.status_path)
        for _ in range(100):
            if status.exists():
                break
            time.sleep(0.05)
    finally:
        d.stop()
    assert _mode(tmp_path / "state") == 0o750 and _mode(tmp_path / "state" / "jouled") == 0o750
    assert _mode(tmp_path / "run") == 0o750 and _mode(tmp_path / "run" / "jouled") == 0o750
    assert _mode(status) == 0o640
    assert _mode(tmp_path / "state" / "jouled" / "mqtt-passwd") == 0o640
    assert _mode(tmp_path / "state" / "jouled" / "log.db.lock") == 0o640


def test_spool_dir_mode(tmp_path: Path, umask022: None) -> None:
    c = MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host="h", spool_path=tmp_path / "state" / "spool",
                     connect_timeout_s=0.2)
    c.mark("run", "start", "r1")
    c.close(0.1)
    assert _mode(tmp_path / "state") == 0o750 and _mode(tmp_path / "state" / "spool") == 0o750
    assert _mode(tmp_path / "state" / "spool" / "seq") == 0o750


def test_service_install_generates_broker_password(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable"])
    assert res.exit_code == 0, res.output
    pw = tmp_path / MQTT_PASSWORD
    assert _mode(pw) == 0o640
    secret = pw.read_text().strip()
    assert len(secret) >= 24 and secret not in res.output
    unit = (tmp_path / UNIT).read_text()
    assert "LoadCredential=mqtt-password:/etc/jouled/mqtt-passwd" in unit
    assert "StateDirectoryMode=0750" in unit and "RuntimeDirectoryMode=0750" in unit
    cfg = load_config(tmp_path / CONFIG, environ={})
    assert cfg.mqtt.embedded_auth and cfg.mqtt.password_file == "/" + MQTT_PASSWORD
    # reinstalling (even --force) keeps the password, so configured clients keep working
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable", "--force"])
    assert res.exit_code == 0 and pw.read_text().strip() == secret
    dry = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable", "--dry-run"])
    assert f"would keep {pw} (exists: the broker password is kept)" in dry.output and secret not in dry.output
    runner.invoke(app, ["service", "uninstall", "--root", str(tmp_path), "--purge"])
    assert not pw.exists()
