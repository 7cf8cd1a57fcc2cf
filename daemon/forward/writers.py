"""InfluxDB write clients for the forwarder: v1 (`/write`, http.client, basic auth) and v2 (`influxdb-client`), and how
an answer is classified — retry (down, timeout, 5xx, 429), config (401/403/404: a key to fix), reject (bad points)."""

from __future__ import annotations

import base64
import http.client
import re
import ssl
from typing import Literal, Protocol
from urllib.parse import unquote, urlencode, urlsplit

from jouled.errors import UserError
from jouled.secrets import redact_text, redact_url

ErrorKind = Literal["retry", "config", "reject"]
_DROPPED = re.compile(r"dropped=(\d+)")


class WriteError(Exception):
    """A write that did not land. `kind`: retry (keep the cursor, back off), config (one loud line naming the key
    to fix, retry slowly), reject (the server refused some points: bisect and quarantine them). `dropped`: how many
    points a v1 `partial write` answer says it dropped (None when the answer does not say)."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None, dropped: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.dropped = dropped


class Writer(Protocol):
    target: str  # where it writes, redacted: for logs and status

    def write(self, body: bytes) -> None: ...

    def close(self) -> None: ...


def target_id(url: str, api: str, database: str, bucket: str) -> str:
    """A stable name of the destination for cursor keys: api, host:port, database or bucket (no credentials).

    Another destination gets its own cursors, so pointing the daemon at a new InfluxDB sends it the whole log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 8086)
    return f"{api}:{host}:{port}{parts.path.rstrip('/')}/{database if api == 'v1' else bucket}"


def classify(status: int, text: str, target: str, api: str, database: str) -> WriteError:
    """What a non-2xx answer means for the forwarder (pure)."""
    body = " ".join(text.split())[:300]
    if status == 429 or status >= 500:
        return WriteError("retry", f"InfluxDB {target}: HTTP {status} {body}".rstrip(), status)
    if status in (401, 403):
        keys = "[influx] username and password_file (or the influx-password credential)" if api == "v1" else \
            "[influx] token_file (or the influx-token credential) and org"
        return WriteError("config", f"InfluxDB {target}: HTTP {status}, credentials refused — fix {keys}", status)
    if status == 404:
        if "database not found" in text:
            return WriteError("config", f"InfluxDB {target}: database {database!r} not found — create it "
                              f"(CREATE DATABASE \"{database}\") or fix [influx] database", status)
        if api == "v2" and "bucket" in text:
            return WriteError("config", f"InfluxDB {target}: {body} — fix [influx] bucket / org", status)
        return WriteError("config", f"InfluxDB {target}: HTTP 404 {body} — check [influx] url and api", status)
    if status in (400, 413, 422):
        m = _DROPPED.search(text)
        return WriteError("reject", f"InfluxDB {target}: HTTP {status} {body}", status,
                          int(m.group(1)) if m else None)
    return WriteError("config", f"InfluxDB {target}: HTTP {status} {body} — check the [influx] section", status)


class V1Writer:
    """POST /write?db=…&precision=ns[&rp=…] with basic auth: InfluxDB 1.x and the v1 endpoints of 2.x/3.x.

    On the standard library's `http.client`, one kept-alive connection: a write is a few hundred µs of Python where
    httpx's client took about three times that (URL parsing, cookies, auth flow, h11: 2.07 ms of CPU a write against
    0.66 ms, 130 points after a 0.3 s pause, median of 30; bench notes in docs/architecture.md), and the forwarder
    writes once a flush. It connects directly: no HTTP proxy. A connection the server closed while idle is opened
    again and the write sent once more (a write is idempotent: the same points overwrite themselves)."""

    def __init__(self, url: str, database: str, *, retention_policy: str = "", username: str = "",
                 password: str | None = None, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # a port that is not a number, or out of range
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise UserError(f"[influx] url {redact_url(url)!r}: not an http:// or https:// URL with a host (and a port number) — "
                            "e.g. http://localhost:8086")
        self.database = database
        self.target = redact_url(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._timeout_s = timeout_s
        query = {"db": database, "precision": "ns"}
        if retention_policy:
            query["rp"] = retention_policy
        self._path = parts.path.rstrip("/") + "/write?" + urlencode(query)
        user = username or (unquote(parts.username) if parts.username else "")
        pw = password if password is not None else (unquote(parts.password) if parts.password else "")
        self._secrets = [pw] if pw else []
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if user:
            token = base64.b64encode(f"{user}:{pw}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
            self._secrets.append(token)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout_s,
                                                         context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        return self._conn

    def _post(self, body: bytes) -> tuple[int, str]:
        conn = self._connection()
        conn.request("POST", self._path, body=body, headers=self._headers)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        if r.will_close:
            self.close()
        return r.status, text

    def write(self, body: bytes) -> None:
        for attempt in (1, 2):
            try:
                status, text = self._post(body)
                break
            except TimeoutError:
                self.close()
                raise WriteError("retry", f"InfluxDB {self.target}: timed out") from None
            except (http.client.HTTPException, OSError) as e:
                self.close()
                # a kept-alive connection the server closed while it was idle fails on first use: once more, fresh
                if attempt == 1 and isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError,
                                                   BrokenPipeError)):
                    continue
                reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                raise WriteError("retry", redact_text(f"InfluxDB {self.target}: cannot connect ({reason})",
                                                      self._secrets)) from None
        if status // 100 != 2:
            raise classify(status, text, self.target, "v1", self.database)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class V2Writer:
    """Writes through `influxdb-client` (extra `influx`): org, bucket, token; synchronous, no client-side retries
    (the forwarder retries, with its cursor)."""

    def __init__(self, url: str, org: str, bucket: str, token: str, *, timeout_s: float = 10.0) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.target = redact_url(url)
        self.org, self.bucket = org, bucket
        self._token = token
        self.client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000))
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self.api.write(bucket=self.bucket, org=self.org, record=body,
                           write_precision=WritePrecision.NS)  # type: ignore[arg-type]  # a str constant
        except ApiException as e:
            raise classify(int(e.status or 0), str(e.body or e.reason or ""), self.target, "v2", self.bucket) from None
        except Exception as e:  # urllib3's connection errors and timeouts, under several names
            msg = redact_text(f"InfluxDB {self.target}: cannot write ({type(e).__name__}: {e})", [self._token])
            raise WriteError("retry", msg.splitlines()[0][:300]) from None

    def close(self) -> None:
        self.client.close()
