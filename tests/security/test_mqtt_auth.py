"""MQTT username/password and TLS against a real Mosquitto: the daemon's recorder and MarkerClient both connect with
the same credentials (URL, password_file, TLS files); a client with a wrong password or no certificate never lands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jouled.config import Config
from jouled.errors import UserError
from jouled.trainer.markers import MarkerClient
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.security.helpers import Pki, SecureBroker, make_pki, secured_mosquitto_available, start_secure_mosquitto, wait_until

PASSWORD = "Tr0ub4dor-pw-xq"

pytestmark = pytest.mark.skipif(not secured_mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: Pki) -> Iterator[SecureBroker]:
    b = start_secure_mosquitto({"alice": PASSWORD, "trainer": PASSWORD + "-t"}, pki)
    yield b
    b.close()


def _runs(d: object) -> set[str]:
    return {m.run for m in d.daemon.store.read_markers()}  # type: ignore[attr-defined]


def _send(client: MarkerClient, run: str, timeout_s: float = 5.0) -> bool:
    with client.run(run, gpus=["dev0"]):
        pass
    return client.flush(timeout_s)


def test_url_credentials_used_by_daemon_and_client(tmp_path: Path, broker: SecureBroker) -> None:
    url = f"mqtt://alice:{PASSWORD}@127.0.0.1:{broker.port}"
    d = start_daemon(make_config(tmp_path, url), [ScriptedSource()])
    try:
        assert d.daemon.recorder.stats.connected
        good = MarkerClient(url, host="testhost", spool_path=tmp_path / "spool-good")
        assert _send(good, "good-run")
        good.close()
        wait_until(lambda: "good-run" in _runs(d), what="marker of the authorised client stored")
        # a wrong password and no password at all: refused by the broker, nothing lands
        bad = MarkerClient(f"mqtt://alice:wrong@127.0.0.1:{broker.port}", host="testhost",
                           spool_path=tmp_path / "spool-bad", connect_timeout_s=1.0)
        anon = MarkerClient(f"mqtt://127.0.0.1:{broker.port}", host="testhost", spool_path=tmp_path / "spool-anon",
                            connect_timeout_s=1.0)
        assert not _send(bad, "bad-run", 1.5) and not _send(anon, "anon-run", 1.5)
        assert "refused" in bad.stats().last_error and "wrong" not in bad.stats().last_error
        bad.close(0.2)
        anon.close(0.2)
        good2 = MarkerClient(url, host="testhost", spool_path=tmp_path / "spool-good")
        assert _send(good2, "after-run")
        good2.close()
        wait_until(lambda: "after-run" in _runs(d), what="a later authorised marker stored")
        assert "bad-run" not in _runs(d) and "anon-run" not in _runs(d)
        status = d.daemon.status()
    finally:
        d.stop()
    assert status["markers"]["broker"] == f"mqtt://alice:***@127.0.0.1:{broker.port}"
    assert PASSWORD not in str(status)


def test_password_file_for_daemon_and_from_config_client(tmp_path: Path, broker: SecureBroker) -> None:
    pw = tmp_path / "mqtt-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    cfg = make_config(tmp_path, f"mqtt://127.0.0.1:{broker.port}")
    cfg.mqtt.username = "alice"
    cfg.mqtt.password_file = str(pw)
    d = start_daemon(cfg, [ScriptedSource()])
    try:
        client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
        assert client.password == PASSWORD and client.username == "alice"
        assert _send(client, "file-run")
        client.close()
        wait_until(lambda: "file-run" in _runs(d), what="marker stored")
    finally:
        d.stop()


def _tls_config(tmp_path: Path, port: int, pki: Pki, *, cert: bool) -> Config:
    cfg = make_config(tmp_path, f"mqtts://127.0.0.1:{port}")
    cfg.mqtt.username, cfg.mqtt.password = "alice", PASSWORD
    cfg.mqtt.tls_ca = str(pki.ca)
    if cert:
        cfg.mqtt.tls_cert, cfg.mqtt.tls_key = str(pki.client_cert), str(pki.client_key)
    return cfg


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert-only", "client-cert-required"])
def test_tls_daemon_and_client(tmp_path: Path, broker: SecureBroker, pki: Pki, client_cert: bool) -> None:
    port = broker.mtls_port if client_cert else broker.tls_port
    assert port is not None
    cfg = _tls_config(tmp_path, port, pki, cert=client_cert)
    d = start_daemon(cfg, [ScriptedSource()])
    try:
        client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
        assert _send(client, "tls-run")
        client.close()
        wait_until(lambda: "tls-run" in _runs(d), what="marker over TLS stored")
        url = f"mqtts://alice:{PASSWORD}@127.0.0.1:{port}"
        if client_cert:  # no certificate, or one from another CA: the handshake fails, nothing lands
            for i, (c, k) in enumerate(((None, None), (str(pki.rogue_cert), str(pki.rogue_key)))):
                bad = MarkerClient(url, host="testhost", spool_path=tmp_path / f"spool-bad{i}", tls_ca=str(pki.ca),
                                   tls_cert=c, tls_key=k, connect_timeout_s=1.0)
                assert not _send(bad, f"nocert-run{i}", 1.5)
                bad.close(0.2)
        # right certificate (or none needed), wrong password: refused
        wrong = MarkerClient(
            f"mqtts://alice:wrong@127.0.0.1:{port}", host="testhost", spool_path=tmp_path / "spool-wrong",
            tls_ca=str(pki.ca), tls_cert=cfg.mqtt.tls_cert or None, tls_key=cfg.mqtt.tls_key or None,
            connect_timeout_s=1.0,
        )
        assert not _send(wrong, "wrong-run", 1.5)
        wrong.close(0.2)
        # a plain-TCP client on the TLS port gets nowhere either
        plain = MarkerClient(f"mqtt://alice:{PASSWORD}@127.0.0.1:{port}", host="testhost",
                             spool_path=tmp_path / "spool-plain", connect_timeout_s=1.0)
        assert not _send(plain, "plain-run", 1.5)
        plain.close(0.2)
        client2 = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool")
        assert _send(client2, "tls-after")
        client2.close()
        wait_until(lambda: "tls-after" in _runs(d), what="later TLS marker stored")
        assert _runs(d) == {"tls-run", "tls-after"}
    finally:
        d.stop()


def test_tls_files_checked_at_start(tmp_path: Path, broker: SecureBroker, pki: Pki) -> None:
    assert broker.tls_port is not None
    cfg = _tls_config(tmp_path, broker.tls_port, pki, cert=False)
    cfg.mqtt.tls_ca = str(tmp_path / "missing-ca.pem")
    with pytest.raises(UserError, match=r"\[mqtt\] tls_ca .*missing-ca.pem: cannot load it"):
        start_daemon(cfg, [ScriptedSource()])
    cfg = _tls_config(tmp_path, broker.tls_port, pki, cert=False)
    cfg.mqtt.tls_cert, cfg.mqtt.tls_key = str(pki.client_cert), str(pki.server_key)  # key of another certificate
    with pytest.raises(UserError, match=r"\[mqtt\] tls_cert .*cannot load them"):
        start_daemon(cfg, [ScriptedSource()])
