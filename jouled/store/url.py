"""Store URLs (``sqlite:///abs/path.db``) to paths and back — light (no numpy), so the CLI resolves them cheaply."""

from __future__ import annotations

from pathlib import Path

from jouled.errors import UserError
from jouled.secrets import redact_url


def parse_store_url(url: str) -> Path:
    """`sqlite:///abs/path.db` → path. Other schemes belong to the InfluxDB store."""
    if url.startswith("sqlite:///"):
        return Path("/" + url[len("sqlite://") :].lstrip("/"))
    if url.startswith("sqlite://"):
        raise UserError(f"store URL {url!r}: use three slashes and an absolute path, e.g. sqlite:///var/lib/jouled/jouled.db")
    if "://" not in url:
        return Path(url)
    scheme = url.split("://", 1)[0]
    shown = redact_url(url)  # an influx://user:password@host URL: the message is printed, never the password
    if scheme.lower() in ("influx", "influx2"):  # a reader opens these before this; here is a writer (or status)
        raise UserError(f"store URL {shown!r}: the daemon logs to SQLite, not to InfluxDB — use sqlite:///path.db and "
                        "set [influx] url to forward to it (energy, export and the Python API read influx:// directly)")
    raise UserError(f"store URL {shown!r}: scheme '{scheme}' is not a store — use sqlite:///path.db (the daemon's "
                    "log), or influx://host:8086/db or influx2://host:8086?org=O&bucket=B to read from InfluxDB")


def is_influx_url(url: str) -> bool:
    """An InfluxDB store URL (influx:// v1, influx2:// v2): read by jouled.store.influx, not by the SQLite store."""
    return "://" in url and url.split("://", 1)[0].lower() in ("influx", "influx2")


def sqlite_url(path: str | Path) -> str:
    """The store URL of a log file: sqlite:///abs/path.db."""
    return "sqlite://" + str(Path(path).expanduser().resolve())
