"""The embedded broker (amqtt): loopback only, password auth with a generated password file that marker clients read,
and a one-line refusal when its port is taken by another broker."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jouled.errors import UserError
from jouled.secrets import generated_password_path
from jouled.trainer.markers import MarkerClient
from tests.brokers import free_port, mosquitto_available, start_mosquitto
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.security.helpers import wait_until


def _runs(d: object) -> set[str]:
    return {m.run for m in d.daemon.store.read_markers()}  # type: ignore[attr-defined]


def _send(client: MarkerClient, run: str, timeout_s: float = 5.0) -> bool:
    with client.run(run, gpus=["dev0"]):
        pass
    return client.flush(timeout_s)


def _listen_addresses(port: int) -> set[str]:
    """The local addresses of listening TCP sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, st = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if st == "0A" and int(p, 16) == port:  # 0A = LISTEN
                out.add(str(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])) if len(addr) == 8 else addr)
    return out


def test_embedded_auth_generated_password_clients_read_it(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path, "", embedded_port=port)
    cfg.mqtt.embedded_auth = True
    d = start_daemon(cfg, [ScriptedSource()])
    try:
        assert _listen_addresses(port) == {"127.0.0.1"}  # loopback only
        pw_file = generated_password_path(cfg)
        assert pw_file == tmp_path / "mqtt-passwd"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o640
        password = pw_file.read_text().strip()
        assert len(password) >= 24
        # the trainer's client with the same config: no flags, it reads the generated file
        client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
        assert client.username == "jouled" and client.password == password
        assert _send(client, "auth-run")
        client.close()
        wait_until(lambda: "auth-run" in _runs(d), what="marker of the authorised client stored")
        url = f"mqtt://127.0.0.1:{port}"
        for i, (user, pw) in enumerate(((None, None), ("jouled", "wrong"), ("mallory", password))):
            bad = MarkerClient(url, host="testhost", spool_path=tmp_path / f"spool-bad{i}", username=user, password=pw,
                               connect_timeout_s=1.0)
            assert not _send(bad, f"bad-run{i}", 1.5)
            bad.close(0.2)
        client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
        assert _send(client, "auth-after")
        client.close()
        wait_until(lambda: "auth-after" in _runs(d), what="later marker stored")
        assert _runs(d) == {"auth-run", "auth-after"}
        assert password not in str(d.daemon.status())
    finally:
        d.stop()
    # a restart keeps the generated password (clients configured once keep working)
    d2 = start_daemon(cfg, [ScriptedSource()])
    try:
        assert generated_password_path(cfg).read_text().strip() == password
    finally:
        d2.stop()


def test_embedded_auth_with_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "etc" / "mqtt-passwd"
    pw.parent.mkdir()
    pw.write_text("a-chosen-secret-123\n")
    pw.chmod(0o640)
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    cfg.mqtt.embedded_auth = True
    cfg.mqtt.password_file = str(pw)
    d = start_daemon(cfg, [ScriptedSource()])
    try:
        assert not generated_password_path(cfg).exists()  # the configured file is used, nothing generated
        client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
        assert client.password == "a-chosen-secret-123"
        assert _send(client, "file-run")
        client.close()
        wait_until(lambda: "file-run" in _runs(d), what="marker stored")
    finally:
        d.stop()


def test_embedded_off_by_default_is_anonymous_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    d = start_daemon(make_config(tmp_path, "", embedded_port=port), [ScriptedSource()])
    try:
        assert _listen_addresses(port) == {"127.0.0.1"}
        client = MarkerClient(f"mqtt://127.0.0.1:{port}", host="testhost", spool_path=tmp_path / "spool")
        assert _send(client, "anon-ok")
        client.close()
        wait_until(lambda: "anon-ok" in _runs(d), what="marker stored")
        assert not generated_password_path(d.daemon.config).exists()
    finally:
        d.stop()


def test_non_loopback_bind_needs_auth(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    cfg.mqtt.embedded_host = "0.0.0.0"
    with pytest.raises(UserError, match=r"embedded_host = '0.0.0.0': .* only with password auth — set \[mqtt\] embedded_auth"):
        start_daemon(cfg, [ScriptedSource()])
    cfg.mqtt.embedded_auth = True
    d = start_daemon(cfg, [ScriptedSource()])
    try:
        assert _listen_addresses(cfg.mqtt.embedded_port) == {"0.0.0.0"}
    finally:
        d.stop()


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
def test_port_taken_by_another_broker_refused_unless_configured(tmp_path: Path) -> None:
    other = start_mosquitto()
    try:
        cfg = make_config(tmp_path, "", embedded_port=other.port)
        with pytest.raises(UserError) as e:
            start_daemon(cfg, [ScriptedSource()])
        assert str(e.value) == (
            f'127.0.0.1:{other.port} is taken by another MQTT broker — set [mqtt] url = "mqtt://127.0.0.1:{other.port}" '
            "to use it, or [mqtt] embedded_port"
        )
        cfg.mqtt.url = f"mqtt://127.0.0.1:{other.port}"  # configured to use it: fine
        d = start_daemon(cfg, [ScriptedSource()])
        try:
            assert not d.daemon.recorder.stats.embedded and d.daemon.recorder.stats.connected
        finally:
            d.stop()
    finally:
        other.close()


def test_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        port = s.getsockname()[1]
        with pytest.raises(UserError, match=rf"127.0.0.1:{port} is taken by another program \(not an MQTT broker\)"):
            start_daemon(make_config(tmp_path, "", embedded_port=port), [ScriptedSource()])


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
def test_jouled_run_port_taken_one_line(tmp_path: Path) -> None:
    other = start_mosquitto()
    try:
        env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
               "JOULED_MQTT_EMBEDDED_PORT": str(other.port), "JOULED_STORE": f"sqlite:///{tmp_path / 'log.db'}"}
        env.pop("JOULED_CONFIG", None)
        r = subprocess.run([sys.executable, "-m", "jouled.cli", "run", "--duration", "2", "--source", "estimate"],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines()[-1] == (
            f'Error: 127.0.0.1:{other.port} is taken by another MQTT broker — set [mqtt] url = '
            f'"mqtt://127.0.0.1:{other.port}" to use it, or [mqtt] embedded_port'
        )
    finally:
        other.close()
