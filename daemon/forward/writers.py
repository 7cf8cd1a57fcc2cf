"""InfluxDB write clients for the forwarder: v1 (`/write`, httpx, basic auth) and v2 (`influxdb-client`), and how
an answer is classified — retry (down, timeout, 5xx, 429), config (401/403/404: a key to fix), reject (bad points)."""

from __future__ import annotations

import re
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx

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
    """POST /write?db=…&precision=ns[&rp=…] with basic auth: InfluxDB 1.x and the v1 endpoints of 2.x/3.x."""

    def __init__(self, url: str, database: str, *, retention_policy: str = "", username: str = "",
                 password: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/write"
        self.database = database
        self.target = redact_url(url)
        self.params = {"db": database, "precision": "ns"}
        if retention_policy:
            self.params["rp"] = retention_policy
        self._secrets = [password] if password else []
        auth = httpx.BasicAuth(username, password or "") if username else None
        self.client = httpx.Client(timeout=timeout_s, auth=auth)

    def write(self, body: bytes) -> None:
        try:
            r = self.client.post(self.url, params=self.params, content=body,
                                 headers={"Content-Type": "text/plain; charset=utf-8"})
        except httpx.TimeoutException:
            raise WriteError("retry", f"InfluxDB {self.target}: timed out") from None
        except httpx.HTTPError as e:
            raise WriteError("retry", redact_text(f"InfluxDB {self.target}: cannot connect ({e})", self._secrets)) from None
        if r.status_code // 100 != 2:
            raise classify(r.status_code, r.text, self.target, "v1", self.database)

    def close(self) -> None:
        self.client.close()


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
