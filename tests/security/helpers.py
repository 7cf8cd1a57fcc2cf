"""Security test helpers: a CA with server and client certificates (cryptography), a Mosquitto with passwords and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.brokers import MOSQUITTO, BrokerHandle, free_port, mosquitto_available

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def secured_mosquitto_available() -> bool:
    return mosquitto_available() and Path(MOSQUITTO_PASSWD).exists()


@dataclass
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a stranger's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # signed by another CA: the broker must refuse it
    rogue_key: Path


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    path.chmod(0o600)


def _cert(subject: str, key: Any, issuer: Any, issuer_key: Any, *, ca: bool, server: bool = False) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False,
        ), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path) -> Pki:
    """Generate the PEM files in ``d`` (a CA, its server and client certificates, a rogue client's own CA + cert)."""
    from cryptography.hazmat.primitives import serialization

    def pem(c: Any, path: Path) -> Path:
        path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return path

    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("jouled test CA", ca_key, _name("jouled test CA"), ca_key, ca=True)
    srv_key, cli_key, rogue_ca_key, rogue_key = _key(), _key(), _key(), _key()
    srv = _cert("127.0.0.1", srv_key, ca.subject, ca_key, ca=False, server=True)
    cli = _cert("trainer", cli_key, ca.subject, ca_key, ca=False)
    rogue_ca = _cert("rogue CA", rogue_ca_key, _name("rogue CA"), rogue_ca_key, ca=True)
    rogue = _cert("trainer", rogue_key, rogue_ca.subject, rogue_ca_key, ca=False)
    for key, name in ((srv_key, "server.key"), (cli_key, "client.key"), (rogue_key, "rogue.key")):
        _write_key(key, d / name)
    return Pki(
        ca=pem(ca, d / "ca.pem"), server_cert=pem(srv, d / "server.pem"), server_key=d / "server.key",
        client_cert=pem(cli, d / "client.pem"), client_key=d / "client.key",
        rogue_cert=pem(rogue, d / "rogue.pem"), rogue_key=d / "rogue.key",
    )


@dataclass
class SecureBroker:
    """A Mosquitto with ``allow_anonymous false`` and a password file; optional TLS listeners."""

    handle: BrokerHandle
    port: int  # plain TCP, passwords required
    tls_port: int | None  # TLS, server certificate only (client certificate optional)
    mtls_port: int | None  # TLS with require_certificate true

    def close(self) -> None:
        self.handle.close()


def start_secure_mosquitto(users: dict[str, str], pki: Pki | None = None) -> SecureBroker:
    """Mosquitto on 127.0.0.1 requiring one of ``users`` (name → password); with ``pki``, two TLS listeners too."""
    workdir = Path(tempfile.mkdtemp(prefix="jouled-mosquitto-sec-"))
    passwd = workdir / "passwd"
    first = True
    for user, password in users.items():
        args = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if first else []) + [str(passwd), user, password]
        subprocess.run(args, check=True, capture_output=True)
        first = False
    port = free_port()
    user = pwd.getpwuid(os.getuid()).pw_name
    conf = [
        f"user {user}", "per_listener_settings false", "allow_anonymous false", f"password_file {passwd}",
        "persistence false", "log_dest stdout", "log_type all", f"listener {port} 127.0.0.1",
    ]
    tls_port = mtls_port = None
    if pki is not None:
        tls_port, mtls_port = free_port(), free_port()
        for p, require in ((tls_port, False), (mtls_port, True)):
            conf += [
                f"listener {p} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}", f"require_certificate {'true' if require else 'false'}",
            ]
    (workdir / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    binary = MOSQUITTO if Path(MOSQUITTO).exists() else (shutil.which("mosquitto") or MOSQUITTO)
    h = BrokerHandle("mosquitto", port, [binary, "-c", str(workdir / "mosquitto.conf")], workdir).start()
    return SecureBroker(h, port, tls_port, mtls_port)


def wait_until(pred: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout_s} s")
        time.sleep(0.05)
