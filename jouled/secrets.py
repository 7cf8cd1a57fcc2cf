"""Secrets: redact them wherever URLs and messages are shown; read them from files, systemd credentials or the environment.

Where a secret comes from, first found wins:

1. a systemd credential, ``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredential=<name>:/path`` in the unit), under the
   names in ``CREDENTIAL_NAMES``: it exists only inside the service, where systemd (root) read the file for it;
2. a file named in the config (``[mqtt] password_file``, ``[influx] token_file``, ``[carbon] token_file``): its first line;
3. an environment variable (``JOULED_INFLUX_TOKEN``, ``JOULED_CARBON_TOKEN``), never a command-line option;
4. the value written in the config itself (``[mqtt] password``: kept for compatibility, warned about when the file is
   readable by others) or in a URL's ``user:password@``.

Every secret read here is remembered for the log filter (``RedactingFilter``), which also masks the password of any
``scheme://user:password@host`` and ``token=``/``key=`` query values in every log line.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jouled.errors import UserError
from jouled.userfile import read_user_text

if TYPE_CHECKING:
    from jouled.config import Config

log = logging.getLogger("jouled.secrets")

REDACTED = "***"

# systemd credential names jouled looks up in $CREDENTIALS_DIRECTORY (LoadCredential=<name>:<path>)
MQTT_PASSWORD = "mqtt-password"
INFLUX_TOKEN = "influx-token"
INFLUX_PASSWORD = "influx-password"
CARBON_TOKEN = "carbon-token"
CREDENTIAL_NAMES = (MQTT_PASSWORD, INFLUX_TOKEN, INFLUX_PASSWORD, CARBON_TOKEN)

SERVICE_GROUP = "jouled"  # the group the installed service runs as: the one group meant to read its secrets

# query parameters whose values are secrets (provider API keys and tokens put in URLs)
SECRET_QUERY_KEYS = frozenset({
    "token", "access_token", "auth", "auth_token", "authorization", "key", "apikey", "api_key", "api-key",
    "password", "passwd", "pass", "pwd", "secret", "client_secret", "sig", "signature",
})

_URL_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*:)(?P<pw>[^\s@/]*)(?P<at>@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:" + "|".join(re.escape(k) for k in sorted(SECRET_QUERY_KEYS, key=len, reverse=True)) + r")=)"
    r"(?P<val>[^&\s#'\"]+)",
    re.IGNORECASE,
)

_known: set[str] = set()  # secret values read through this module: masked in every log line
_known_lock = threading.Lock()
MIN_REMEMBERED_LEN = 4  # shorter "secrets" would mask ordinary words all over the log


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***`` (the user name stays: it helps debugging).

    Pure and total: a string that is not a URL comes back with the same regex masking ``redact_text`` applies.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if not parts.scheme or not parts.netloc:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _pw = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if sep else f"{user}@{hostport}"
    query = parts.query
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True)
        except ValueError:
            pairs = []
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL passwords, secret query values, and each of ``secrets`` (plus every secret read here) in free text."""
    out = _URL_USERINFO.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", text)
    out = _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", out)
    with _known_lock:
        values = set(_known)
    values.update(s for s in secrets if s)
    for s in sorted(values, key=len, reverse=True):  # longest first: a secret containing another is masked whole
        if s in out:
            out = out.replace(s, REDACTED)
    return out


def remember_secret(value: str | None) -> None:
    """Mask ``value`` in every later log line (too-short values are not remembered: they would mask words)."""
    if value and len(value) >= MIN_REMEMBERED_LEN:
        with _known_lock:
            _known.add(value)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in each record's message (and its exception text) before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string is the formatter's business, not ours
            return True
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            fmt = logging.Formatter()
            record.exc_text = redact_text(fmt.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put a ``RedactingFilter`` on every handler of ``logger`` (the root logger by default), once each."""
    target = logger or logging.getLogger()
    for h in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


# -- reading secrets ------------------------------------------------------------------------------------------------


def credential_path(name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/<name>`` when systemd passed that credential (LoadCredential=), else None."""
    env = os.environ if environ is None else environ
    base = env.get("CREDENTIALS_DIRECTORY", "")
    if not base:
        return None
    p = Path(base) / name
    return p if p.is_file() else None


def read_secret_file(path: str | Path, what: str) -> str:
    """The secret in ``path``: its first line, without the line end. One-line UserError when it cannot be read."""
    p = Path(path).expanduser()
    text = read_user_text(
        p, encoding="utf-8",
        missing=f"{what} {p}: file not found — create it (one line, the secret) or fix the path",
        folder=f"{what} {p}: is a folder — name the file holding the secret",
        denied=f"{what} {p}: permission denied — run as a member of its group ({_group_of(p)}) or fix its permissions",
        not_utf8=f"{what} {p}: not UTF-8 text — write the secret as one line of text",
        unreadable=f"{what} {p}: cannot read ({{strerror}}) — check the path and its permissions",
    )
    value = text.splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise UserError(f"{what} {p}: empty — write the secret on its first line")
    warning = exposure_warning(p, what)
    if warning:
        log.warning("%s", warning)
    remember_secret(value)
    return value


def read_secret(
    what: str,
    *,
    file: str = "",
    credential: str = "",
    env_var: str = "",
    value: str = "",
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The first of: the systemd credential ``credential``, ``file``'s first line, ``$env_var``, ``value``; else None."""
    env = os.environ if environ is None else environ
    if credential:
        p = credential_path(credential, env)
        if p is not None:
            return read_secret_file(p, f"{what} (systemd credential {credential})")
    if file:
        return read_secret_file(file, what)
    if env_var and env.get(env_var, "").strip():
        v = env[env_var].strip()
        remember_secret(v)
        return v
    if value:
        remember_secret(value)
        return value
    return None


def _group_of(p: Path) -> str:
    try:
        return grp.getgrgid(p.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "?"


def exposure_warning(path: str | Path, what: str) -> str | None:
    """A one-line warning when ``path`` (holding a secret) is readable by others than its owner and the service group.

    World-readable is always worth a warning; group-readable only when the group is not ``jouled`` (the installed
    service's group, which is meant to read it).
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o004:
        return f"{what} {p}: readable by every user (mode {mode:04o}) — chmod 0640 (or 0600) {p}"
    if mode & 0o040:
        group = _group_of(p)
        if group != SERVICE_GROUP:
            return f"{what} {p}: readable by group {group} (mode {mode:04o}) — chmod 0600 {p}, or chgrp {SERVICE_GROUP}"
    return None


# -- files and folders jouled creates -----------------------------------------------------------------------------

PRIVATE_DIR_MODE = 0o750  # store, spool and runtime folders: the owner and its group (the service group), nobody else
PRIVATE_FILE_MODE = 0o640  # status files and generated secrets


def make_private_dir(path: str | Path) -> Path:
    """``mkdir -p`` with mode 0750 for every folder it creates (existing folders keep theirs: the admin chose it)."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        # the umask still applies: 0750 at most, never more open than the user asked for
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=PRIVATE_DIR_MODE)
    return p


def write_private_file(path: str | Path, text: str, mode: int = PRIVATE_FILE_MODE, *, exclusive: bool = False) -> Path:
    """Write ``text`` to ``path`` created with ``mode`` from the start (never briefly readable by others)."""
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(p, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask, or an existing file's old mode
        data = memoryview(text.encode())
        while data:  # os.write may write less than asked (a filling disk): the rest, or the error
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return p


# -- MQTT credentials, one resolution for the daemon and every marker client ---------------------------------------

EMBEDDED_USER = "jouled"  # the user name of the embedded broker's auth when [mqtt] username is empty
GENERATED_PASSWORD_FILE = "mqtt-passwd"  # beside the store, created on first start when embedded_auth has no password


@dataclass(frozen=True)
class MqttAuth:
    """The user name and password a client presents (None: anonymous), and where the password came from."""

    username: str | None
    password: str | None
    origin: str  # "password_file /p", "systemd credential mqtt-password", "[mqtt] password", "url", "generated /p", ""


def generated_password_path(cfg: Config) -> Path:
    """Where the daemon writes the embedded broker's password when none is configured: beside the store."""
    return cfg.store_path().parent / GENERATED_PASSWORD_FILE


def uses_embedded_broker(cfg: Config, url: str | None = None) -> bool:
    """Whether ``url`` (default: [mqtt] url) means the daemon's embedded broker: empty, or its loopback address."""
    m = cfg.mqtt
    u = m.url if url is None else url
    if not u:
        return True
    if m.url:
        return False  # an external broker is configured: a URL pointing at it is that broker
    from jouled.mqtturl import parse_broker_url  # imports this module: loaded on use

    try:
        a = parse_broker_url(u)
    except ValueError:
        return False
    return a.transport == "tcp" and a.host in ("127.0.0.1", "localhost", "::1", m.embedded_host) and a.port == m.embedded_port


def mqtt_auth(
    cfg: Config, url: str | None = None, *, environ: Mapping[str, str] | None = None, create: bool = False
) -> MqttAuth:
    """The credentials for ``url`` (default: [mqtt] url, empty = the embedded broker), the same for every component.

    Password: systemd credential ``mqtt-password`` > ``[mqtt] password_file`` > ``[mqtt] password`` > the URL's.
    User name: ``[mqtt] username`` > the URL's > ``jouled`` for the embedded broker with auth. With
    ``[mqtt] embedded_auth`` and no password anywhere, the password generated beside the store is read
    (``create``: the daemon makes it on first start, mode 0640).
    """
    from jouled.mqtturl import parse_broker_url  # imports this module: the one parser, loaded on use

    m = cfg.mqtt
    u = m.url if url is None else url
    url_user = url_pw = None
    if u:
        with contextlib.suppress(ValueError):  # a bad URL is reported where it is connected to
            a = parse_broker_url(u)
            url_user, url_pw = a.username, a.password
    username = m.username or url_user
    password = read_secret("[mqtt] password_file", file=m.password_file, credential=MQTT_PASSWORD, environ=environ)
    origin = ""
    if password is not None:
        cred = credential_path(MQTT_PASSWORD, environ)
        origin = f"systemd credential {MQTT_PASSWORD}" if cred is not None else f"password_file {m.password_file}"
    elif m.password:
        password, origin = m.password, "[mqtt] password"
        remember_secret(password)
    elif url_pw:
        password, origin = url_pw, "url"
        remember_secret(password)
    if m.embedded_auth and uses_embedded_broker(cfg, u):
        username = username or EMBEDDED_USER
        if password is None:
            path = generated_password_path(cfg)
            if create and not path.exists():
                _generate_password(path)
            if path.exists():
                password, origin = read_secret_file(path, "embedded broker password"), f"generated {path}"
    return MqttAuth(username, password, origin)


def new_password() -> str:
    import secrets as _stdlib_secrets

    return _stdlib_secrets.token_urlsafe(24)


def _generate_password(path: Path) -> None:
    make_private_dir(path.parent)
    try:
        write_private_file(path, new_password() + "\n", exclusive=True)
    except FileExistsError:
        return  # another process made it first: use theirs
    except OSError as e:
        raise UserError(
            f"embedded broker password {path}: cannot create it ({e.strerror}) — set [mqtt] password_file"
        ) from None
    log.info("embedded broker: generated its password in %s (mode 0640); marker clients with this config read it", path)


# -- InfluxDB (for the forwarder and influx:// stores) ------------------------------------------------------------


def influx_token(cfg: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The v2 token: systemd credential ``influx-token`` > ``[influx] token_file`` > ``$JOULED_INFLUX_TOKEN``; else None.

    Never from the command line or the config file itself (DESIGN.md).
    """
    return read_secret("[influx] token_file", file=cfg.influx.token_file, credential=INFLUX_TOKEN,
                       env_var="JOULED_INFLUX_TOKEN", environ=environ)


def influx_password(cfg: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The v1 password: systemd credential ``influx-password`` > ``[influx] password_file`` > ``[influx] password``."""
    return read_secret("[influx] password_file", file=cfg.influx.password_file, credential=INFLUX_PASSWORD,
                       value=cfg.influx.password, environ=environ)
