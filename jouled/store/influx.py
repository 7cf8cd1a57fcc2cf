"""Read-only stores over InfluxDB: `influx://host:8086/db` (v1 API, InfluxQL) and `influx2://host:8086?org=O&bucket=B`
(v2 API, Flux), answering what the query core asks a store (`jouled.store.reader.ReadStore`).

They read the schema the forwarder writes (docs/architecture.md, "Forwarding to InfluxDB"): measurement `power`
(tags host/source/device/role/kind/scope, fields power_w/energy_j), `marker`, `carbon`. What a series is comes from
its role/kind/scope tags; the nominal periods are not in InfluxDB, so windows are judged against the median spacing
of the samples (as for an imported series). Nobody vouches for completeness here: `watermarks()` is empty.

Safety: every user value (run, host, device, times) is a bound parameter — InfluxQL `params` with `$name`
placeholders, Flux extern options `jouled_<name>` (influxdb-client `params=`) — never text spliced into a query;
identifiers are constants, quoted.
Size: v1 reads use `chunked=true`, so a day of 10 devices at 10 Hz streams in chunks instead of hitting
`max-row-limit`. Credentials: v1 user from the URL or `[influx] username`, password from the URL or
`jouled.secrets.influx_password`; v2 token only from `jouled.secrets.influx_token` (never the command line).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from jouled.errors import UserError
from jouled.model import CarbonPoint, Marker
from jouled.secrets import redact_url, remember_secret
from jouled.series import SeriesMeta, default_meta
from jouled.store import influx_flux as flux
from jouled.store.influx_flux import INFLUX_MAX_NS, INFLUX_MIN_NS, clamp_ns
from jouled.store.reader import meta_at
from jouled.store.sqlite import SeriesData, SeriesKey
from jouled.store.url import is_influx_url as is_influx_url  # re-exported

if TYPE_CHECKING:
    import httpx

    from jouled.config import Config

SCHEMES = ("influx", "influx2")
DEFAULT_PORT = 8086
CHUNK_ROWS = 50_000  # rows per chunk of a chunked v1 response: big enough to amortise, small enough to stream
SERIES_TTL_S = 5.0  # how long a store trusts its list of series (a long-lived Query sees new series after this)
TAG_KEYS = ("host", "source", "device", "role", "kind", "scope")


class InfluxStoreError(UserError):
    """An InfluxDB store that cannot be read (bad URL, server down, refused credentials, no such database)."""


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfluxUrl:
    """A parsed influx:// or influx2:// store URL. `shown` is the URL with its password redacted."""

    api: Literal["v1", "v2"]
    base_url: str  # http(s)://host:port
    database: str = ""  # v1
    org: str = ""  # v2
    bucket: str = ""  # v2
    username: str = ""
    password: str | None = None
    shown: str = ""


def parse_influx_url(url: str, config: Config | None = None) -> InfluxUrl:
    """`influx://[user[:password]@]host[:port]/db[?tls=true]` or `influx2://host[:port]?org=O&bucket=B[&tls=true]`.

    The v2 org and bucket fall back to `[influx] org` / `bucket`; a token in the URL is refused (DESIGN.md: never
    on the command line). Raises InfluxStoreError with one line naming the fix.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
        host = parts.hostname or ""
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as e:
        raise InfluxStoreError(f"store URL {shown!r}: not a valid URL ({e}) — e.g. influx://127.0.0.1:8086/jouled") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InfluxStoreError(f"store URL {shown!r}: not an InfluxDB URL — use influx://host:8086/db or influx2://host:8086?org=O&bucket=B")
    if not host:
        raise InfluxStoreError(f"store URL {shown!r}: no host — e.g. {scheme}://127.0.0.1:8086/…")
    tls = query.pop("tls", "false").lower() in ("1", "true", "yes")
    netloc = f"[{host}]" if ":" in host else host
    base = f"{'https' if tls else 'http'}://{netloc}:{port}"
    user = unquote(parts.username or "")
    password = unquote(parts.password) if parts.password is not None else None
    if scheme == "influx":
        db = unquote(parts.path.strip("/"))
        if not db:
            raise InfluxStoreError(f"store URL {shown!r}: names no database — use influx://host:{port}/DATABASE")
        if "/" in db:
            raise InfluxStoreError(f"store URL {shown!r}: a database name has no '/' — use influx://host:{port}/DATABASE")
        return InfluxUrl("v1", base, database=db, username=user, password=password, shown=shown)
    if "token" in {k.lower() for k in query}:
        raise InfluxStoreError(
            f"store URL {shown!r}: a token never goes on the command line — set $JOULED_INFLUX_TOKEN or [influx] token_file"
        )
    org = query.get("org") or (config.influx.org if config is not None else "")
    bucket = query.get("bucket") or (config.influx.bucket if config is not None else "")
    if not org:
        raise InfluxStoreError(f"store URL {shown!r}: names no org — use influx2://host:{port}?org=ORG&bucket=BUCKET")
    if not bucket:
        raise InfluxStoreError(f"store URL {shown!r}: names no bucket — use influx2://host:{port}?org=ORG&bucket=BUCKET")
    return InfluxUrl("v2", base, org=org, bucket=bucket, shown=shown)


# --------------------------------------------------------------------------------------------------
# Rows → jouled types (pure, shared by v1 and v2)
# --------------------------------------------------------------------------------------------------


def meta_from_tags(source: str, device: str, tags: Mapping[str, Any]) -> SeriesMeta | None:
    """What a series is, from its role/kind/scope tags (None when it has no role tag: nobody declared it).

    The rest (comparison, periods unknown) is the default for the source; a role the default also gives keeps the
    default's comparison flag (nvidia-smi beside NVML)."""
    role = str(tags.get("role") or "")
    if not role:
        return None
    base = default_meta(source, device)
    kind = tags.get("kind")
    scope = tags.get("scope")
    return replace(
        base,
        role=role,
        kind="estimated" if kind == "estimated" else ("measured" if kind else base.kind),
        host_wide=(scope == "host") if scope else base.host_wide,
        comparison=base.comparison if base.role == role else False,
        origin="influx",
    )


def series_from_first_points(rows: Iterable[tuple[Mapping[str, Any], int]]) -> dict[SeriesKey, list[tuple[int, SeriesMeta]]]:
    """From (tags, first time) of each InfluxDB series, jouled's series with their declaration history.

    A series re-declared with another role/kind/scope is two InfluxDB series (the tags differ); each adds a
    declaration from its first point. A missing tag is "" (InfluxDB stores no empty tag)."""
    firsts: dict[SeriesKey, dict[SeriesMeta | None, int]] = {}
    for tags, t_ns in rows:
        key = SeriesKey(str(tags.get("host") or ""), str(tags.get("source") or ""), str(tags.get("device") or ""))
        meta = meta_from_tags(key.source, key.device, tags)
        seen = firsts.setdefault(key, {})
        seen[meta] = min(seen.get(meta, t_ns), t_ns)
    out: dict[SeriesKey, list[tuple[int, SeriesMeta]]] = {}
    for key, metas in firsts.items():
        out[key] = sorted(((t, m) for m, t in metas.items() if m is not None), key=lambda tm: tm[0])
    return out


def marker_from_row(row: Mapping[str, Any], time_ns: int, *, attrs: bool = True) -> Marker:
    """A `marker` point (tags and fields by name) as a Marker; a missing seq is 0, missing strings are ''/None;
    `attrs=False`: empty attrs (not parsed)."""
    epoch = row.get("epoch")
    gpus = row.get("gpus") or ""
    parsed: Any = {}
    if attrs:
        attrs_text = row.get("attrs") or "{}"
        try:
            parsed = json.loads(attrs_text)
        except ValueError:
            parsed = {"attrs": attrs_text}  # not JSON (another writer): kept as text rather than lost
    seq = row.get("seq")
    try:
        seq_i = int(seq) if seq not in (None, "") else 0
    except ValueError:
        seq_i = 0
    return Marker(
        time_ns=int(time_ns), host=str(row.get("host") or ""), run=str(row.get("run") or ""),
        scope=str(row.get("scope") or ""), event=str(row.get("event") or ""), seq=seq_i,
        epoch=None if epoch is None else int(epoch), phase=row.get("phase"), arch=row.get("arch"),
        gpus=tuple(str(gpus).split()), attrs=parsed if isinstance(parsed, dict) else {"attrs": parsed},
    )


def sort_markers(markers: list[Marker]) -> list[Marker]:
    """The SQLite log's order: by run, then seq (time breaks ties where seq was unknown)."""
    return sorted(markers, key=lambda m: (m.run, m.seq, m.time_ns))


def _float_col(values: list[list[Any]], i: int | None, n: int) -> np.ndarray:
    if i is None:
        return np.full(n, np.nan)
    # None (field absent at that time) → NaN; ints (a float InfluxDB printed without a point) → float
    return np.fromiter((np.nan if v[i] is None else v[i] for v in values), dtype=np.float64, count=n)


def columns_to_arrays(columns: list[str], values: list[list[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """InfluxQL JSON rows (time in integer ns) → (time_ns int64, power_w, energy_j) with NaN for null (pure)."""
    n = len(values)
    idx = {c: i for i, c in enumerate(columns)}
    t = np.fromiter((v[0] for v in values), dtype=np.int64, count=n)
    return t, _float_col(values, idx.get("power_w"), n), _float_col(values, idx.get("energy_j"), n)


class _SeriesCache:
    """The store's series and their declaration histories, re-read after SERIES_TTL_S."""

    def __init__(self) -> None:
        self._at = -1e18
        self._hist: dict[SeriesKey, list[tuple[int, SeriesMeta]]] = {}

    def get(self, load: Any) -> dict[SeriesKey, list[tuple[int, SeriesMeta]]]:
        now = time.monotonic()
        if now - self._at > SERIES_TTL_S:
            self._hist = load()
            self._at = now
        return self._hist


class _InfluxReader:
    """What v1 and v2 share: series/metadata bookkeeping on top of `_load_series_history`."""

    path: str

    def __init__(self) -> None:
        self._series = _SeriesCache()

    def _load_series_history(self) -> dict[SeriesKey, list[tuple[int, SeriesMeta]]]:
        raise NotImplementedError

    def _history(self) -> dict[SeriesKey, list[tuple[int, SeriesMeta]]]:
        return self._series.get(self._load_series_history)

    def series(self) -> list[SeriesKey]:
        hist = self._history()
        keys = sorted(hist, key=lambda k: (k.source, k.device, k.host))  # the SQLite log's order: rows come out alike
        return [SeriesKey(k.host, k.source, k.device, hist[k][-1][1] if hist[k] else None) for k in keys]

    def series_meta_history(self, key: SeriesKey) -> list[tuple[int, SeriesMeta]]:
        return list(self._history().get(SeriesKey(key.host, key.source, key.device), []))

    def series_meta_at(self, key: SeriesKey, t_ns: int) -> SeriesMeta | None:
        return meta_at(self.series_meta_history(key), t_ns)

    def watermarks(self) -> dict[SeriesKey, int]:
        return {}  # InfluxDB holds what was forwarded; nothing says up to when it is complete

    @staticmethod
    def _empty(key: SeriesKey) -> SeriesData:
        return SeriesData(key, np.empty(0, np.int64), np.empty(0), np.empty(0))


# --------------------------------------------------------------------------------------------------
# v1: InfluxQL over HTTP
# --------------------------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (backslash and quote escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _eq(tag: str, param: str) -> str:
    return f"{quote_ident(tag)} = ${param}"


Q_SERIES = f"SELECT * FROM {quote_ident('power')} GROUP BY * LIMIT 1"
Q_SAMPLES = (
    f"SELECT {quote_ident('power_w')}, {quote_ident('energy_j')} FROM {quote_ident('power')}"
    f" WHERE {_eq('host', 'host')} AND {_eq('source', 'source')} AND {_eq('device', 'device')}"
    " AND time >= $t0 AND time <= $t1"
)
Q_RUNS = f"SHOW TAG VALUES FROM {quote_ident('marker')} WITH KEY = {quote_ident('run')}"
Q_PROBE = "SHOW MEASUREMENTS LIMIT 1"


def markers_influxql(run: str | None, host: str | None) -> tuple[str, dict[str, Any]]:
    """The marker query and its bound parameters (pure)."""
    conds = ["time >= $t0 AND time <= $t1"]
    params: dict[str, Any] = {"t0": INFLUX_MIN_NS, "t1": INFLUX_MAX_NS}
    if run is not None:
        conds.append(_eq("run", "run"))
        params["run"] = run
    if host is not None:
        conds.append(_eq("host", "host"))
        params["host"] = host
    return f"SELECT * FROM {quote_ident('marker')} WHERE {' AND '.join(conds)}", params


def carbon_influxql(zone: str | None, start_ns: int | None, end_ns: int | None, forecast: bool) -> tuple[str, dict[str, Any]]:
    """The carbon query and its bound parameters (pure)."""
    conds = [_eq("forecast", "forecast"), "time >= $t0 AND time <= $t1"]
    params: dict[str, Any] = {
        "forecast": "true" if forecast else "false",
        "t0": clamp_ns(start_ns, INFLUX_MIN_NS), "t1": clamp_ns(end_ns, INFLUX_MAX_NS),
    }
    if zone:
        conds.append(_eq("zone", "zone"))
        params["zone"] = zone
    return f"SELECT * FROM {quote_ident('carbon')} WHERE {' AND '.join(conds)}", params


def first_last_influxql(field: str, fn: str) -> str:
    return f"SELECT {fn}({quote_ident(field)}) FROM {quote_ident('power')}"


class InfluxV1Store(_InfluxReader):
    """influx://host:8086/db — InfluxQL over the v1 HTTP API (InfluxDB 1.x, and the v1 endpoints of 2.x/3.x)."""

    def __init__(self, url: InfluxUrl, password: str | None = None, *, timeout_s: float = 60.0) -> None:
        import httpx

        super().__init__()
        self.url = url
        self.path = url.shown
        user = url.username
        pw = url.password if url.password is not None else password
        auth = httpx.BasicAuth(user, pw or "") if user else None
        self._client = httpx.Client(base_url=url.base_url, auth=auth, timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._httpx = httpx

    # -- HTTP -------------------------------------------------------------------------------------------

    def _fail(self, what: str, fix: str) -> InfluxStoreError:
        return InfluxStoreError(f"store {self.path}: {what} — {fix}")

    def _result_error(self, err: str) -> InfluxStoreError:
        if err.startswith("database not found"):
            return self._fail(f"InfluxDB has no database {self.url.database!r}",
                              "check the database in the URL (the forwarder's [influx] database)")
        if "authorization" in err.lower() or "authenticat" in err.lower():
            return self._auth_error(err)
        return self._fail(f"InfluxDB refused the query ({err})", "check the URL and the server's version (InfluxDB 1.x)")

    def _auth_error(self, detail: str) -> InfluxStoreError:
        who = f"user {self.url.username!r}" if self.url.username else "no user"
        return self._fail(f"InfluxDB refused the credentials ({who}: {detail})",
                          "set [influx] username and password_file (or the systemd credential influx-password)")

    @contextmanager
    def _post(self, q: str, params: Mapping[str, Any] | None) -> Iterator[httpx.Response]:
        """A streamed, chunked JSON /query response to one statement; HTTP errors, refused credentials and an
        unreachable server as one line."""
        httpx = self._httpx
        data = {"q": q, "db": self.url.database, "epoch": "ns", "chunked": "true", "chunk_size": str(CHUNK_ROWS)}
        if params:
            data["params"] = json.dumps(params)
        try:
            with self._client.stream("POST", "/query", data=data) as r:
                if r.status_code in (401, 403):
                    r.read()
                    raise self._auth_error(_error_text(r.text) or f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    r.read()
                    err = _error_text(r.text)
                    if err:
                        raise self._result_error(err)
                    raise self._fail(f"InfluxDB answered HTTP {r.status_code}", "is this an InfluxDB 1.x /query endpoint?")
                yield r
        except httpx.HTTPError as e:
            raise self._fail(f"cannot reach InfluxDB at {self.url.base_url} ({type(e).__name__}: {e})",
                             "is it running? check the URL's host and port") from None

    def _chunks(self, q: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Each result object of a chunked JSON response to one statement, as it streams in; errors as one line."""
        with self._post(q, params) as r:
            for line in r.iter_lines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise self._fail("the answer is not InfluxDB JSON", "is this URL an InfluxDB server?") from None
                if "error" in obj:
                    raise self._result_error(str(obj["error"]))
                for res in obj.get("results", []):
                    if "error" in res:
                        raise self._result_error(str(res["error"]))
                    yield res

    def _series_rows(self, q: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        for res in self._chunks(q, params):
            yield from res.get("series", [])

    def probe(self) -> None:
        """One cheap query: the server answers, accepts the credentials and has the database (else one line)."""
        for _ in self._chunks(Q_PROBE):
            pass

    # -- ReadStore ---------------------------------------------------------------------------------------

    def _load_series_history(self) -> dict[SeriesKey, list[tuple[int, SeriesMeta]]]:
        rows = [(s.get("tags", {}), int(s["values"][0][0])) for s in self._series_rows(Q_SERIES) if s.get("values")]
        return series_from_first_points(rows)

    def read_series(
        self, key: SeriesKey, start_ns: int | None = None, end_ns: int | None = None, *, extras: bool = False
    ) -> SeriesData:
        """The samples of one series in [start, end]; `extras` are not forwarded to InfluxDB (always empty)."""
        params = {
            "host": key.host, "source": key.source, "device": key.device,
            "t0": clamp_ns(start_ns, INFLUX_MIN_NS), "t1": clamp_ns(end_ns, INFLUX_MAX_NS),
        }
        # JSON, not CSV: measured on InfluxDB 1.6, CSV saved some server time but cost more to parse than it saved,
        # and a CSV answer to a query on a missing database is an empty 200 (no error to report)
        ts, ps, es = [], [], []
        for s in self._series_rows(Q_SAMPLES, params):
            t, p, e = columns_to_arrays(s["columns"], s.get("values", []))
            ts.append(t)
            ps.append(p)
            es.append(e)
        if not ts:
            return self._empty(key)
        t_all, p_all, e_all = np.concatenate(ts), np.concatenate(ps), np.concatenate(es)
        if t_all.size > 1 and not bool((t_all[1:] >= t_all[:-1]).all()):
            order = np.argsort(t_all, kind="stable")
            t_all, p_all, e_all = t_all[order], p_all[order], e_all[order]
        return SeriesData(key, t_all, p_all, e_all)

    def time_range(self) -> tuple[int, int] | None:
        firsts: list[int] = []
        lasts: list[int] = []
        for field in ("power_w", "energy_j"):
            for fn, out in (("first", firsts), ("last", lasts)):
                for s in self._series_rows(first_last_influxql(field, fn)):
                    out.extend(int(v[0]) for v in s.get("values", []) if v[1] is not None)
        if not firsts:
            return None
        return min(firsts), max(lasts)

    def read_markers(self, run: str | None = None, host: str | None = None, *, attrs: bool = True) -> list[Marker]:
        q, params = markers_influxql(run, host)
        out = []
        for s in self._series_rows(q, params):
            cols = s["columns"]
            for v in s.get("values", []):
                row = dict(zip(cols, v, strict=True))
                out.append(marker_from_row(row, int(row["time"]), attrs=attrs))
        return sort_markers(out)

    def runs(self) -> list[str]:
        vals = {str(v[1]) for s in self._series_rows(Q_RUNS) for v in s.get("values", [])}
        return sorted(vals)

    def read_carbon(
        self, zone: str | None = None, start_ns: int | None = None, end_ns: int | None = None, *, forecast: bool = False
    ) -> list[CarbonPoint]:
        q, params = carbon_influxql(zone, start_ns, end_ns, forecast)
        out = []
        for s in self._series_rows(q, params):
            cols = s["columns"]
            for v in s.get("values", []):
                row = dict(zip(cols, v, strict=True))
                if row.get("intensity_g_per_kwh") is None:
                    continue
                out.append(CarbonPoint(int(row["time"]), str(row.get("zone") or ""), str(row.get("provider") or ""),
                                       float(row["intensity_g_per_kwh"]), forecast))
        return sorted(out, key=lambda c: (c.time_ns, c.zone, c.provider))

    def close(self) -> None:
        self._client.close()


def _error_text(body: str) -> str:
    try:
        obj = json.loads(body)
    except ValueError:
        return ""
    if isinstance(obj, dict):
        if "error" in obj:
            return str(obj["error"])
        for res in obj.get("results", []) or []:
            if isinstance(res, dict) and "error" in res:
                return str(res["error"])
    return ""


# --------------------------------------------------------------------------------------------------
# v2: Flux through influxdb-client (the `influx` extra)
# --------------------------------------------------------------------------------------------------


class InfluxV2Store(_InfluxReader):
    """influx2://host:8086?org=O&bucket=B — Flux through influxdb-client. Not tested against a real server here."""

    def __init__(self, url: InfluxUrl, token: str, *, timeout_s: float = 60.0) -> None:
        from influxdb_client import InfluxDBClient

        super().__init__()
        self.url = url
        self.path = url.shown
        self._client = InfluxDBClient(url=url.base_url, token=token, org=url.org, timeout=int(timeout_s * 1000))
        self._api = self._client.query_api()

    def _rows(self, built: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        from influxdb_client.rest import ApiException

        text, params = built
        try:
            tables = self._api.query(text, org=self.url.org, params=params)
        except ApiException as e:
            status = getattr(e, "status", None)
            if status in (401, 403):
                raise InfluxStoreError(
                    f"store {self.path}: InfluxDB refused the token (HTTP {status}) — "
                    "check $JOULED_INFLUX_TOKEN or [influx] token_file (it needs read access to the bucket)"
                ) from None
            if status == 404:
                raise InfluxStoreError(
                    f"store {self.path}: InfluxDB has no org {self.url.org!r} or bucket {self.url.bucket!r} — "
                    "check org= and bucket= in the URL"
                ) from None
            raise InfluxStoreError(f"store {self.path}: InfluxDB refused the query (HTTP {status}: {e.reason}) — "
                                   "check the URL (an InfluxDB 2.x server)") from None
        except OSError as e:  # urllib3's connection errors are OSErrors
            raise InfluxStoreError(f"store {self.path}: cannot reach InfluxDB at {self.url.base_url} ({e}) — "
                                   "is it running? check the URL's host and port") from None
        except Exception as e:  # urllib3 MaxRetryError and friends (not OSError in every version)
            if type(e).__module__.startswith("urllib3"):
                raise InfluxStoreError(f"store {self.path}: cannot reach InfluxDB at {self.url.base_url} ({e}) — "
                                       "is it running? check the URL's host and port") from None
            raise
        return [rec.values for table in tables for rec in table.records]

    def probe(self) -> None:
        self._rows(flux.runs_query(self.url.bucket))

    def _load_series_history(self) -> dict[SeriesKey, list[tuple[int, SeriesMeta]]]:
        rows = [(r, int(r["t_ns"])) for r in self._rows(flux.series_query(self.url.bucket))]
        return series_from_first_points(rows)

    def read_series(
        self, key: SeriesKey, start_ns: int | None = None, end_ns: int | None = None, *, extras: bool = False
    ) -> SeriesData:
        rows = self._rows(flux.samples_query(self.url.bucket, key.host, key.source, key.device, start_ns, end_ns))
        if not rows:
            return self._empty(key)
        t = np.array([int(r["t_ns"]) for r in rows], dtype=np.int64)
        p = np.array([np.nan if r.get("power_w") is None else r["power_w"] for r in rows], dtype=np.float64)
        e = np.array([np.nan if r.get("energy_j") is None else r["energy_j"] for r in rows], dtype=np.float64)
        return SeriesData(key, t, p, e)

    def time_range(self) -> tuple[int, int] | None:
        lo = self._rows(flux.time_range_query(self.url.bucket, "min"))
        hi = self._rows(flux.time_range_query(self.url.bucket, "max"))
        if not lo or not hi:
            return None
        return int(lo[0]["t_ns"]), int(hi[0]["t_ns"])

    def read_markers(self, run: str | None = None, host: str | None = None, *, attrs: bool = True) -> list[Marker]:
        rows = self._rows(flux.markers_query(self.url.bucket, run, host))
        return sort_markers([marker_from_row(r, int(r["t_ns"]), attrs=attrs) for r in rows])

    def runs(self) -> list[str]:
        return sorted({str(r["_value"]) for r in self._rows(flux.runs_query(self.url.bucket)) if r.get("_value")})

    def read_carbon(
        self, zone: str | None = None, start_ns: int | None = None, end_ns: int | None = None, *, forecast: bool = False
    ) -> list[CarbonPoint]:
        rows = self._rows(flux.carbon_query(self.url.bucket, zone, start_ns, end_ns, forecast))
        out = [CarbonPoint(int(r["t_ns"]), str(r.get("zone") or ""), str(r.get("provider") or ""), float(r["_value"]), forecast)
               for r in rows if r.get("_value") is not None]
        return sorted(out, key=lambda c: (c.time_ns, c.zone, c.provider))

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------------


def open_influx(url: str, config: Config | None = None) -> InfluxV1Store | InfluxV2Store:
    """The InfluxDB store `url` names, checked with one cheap query (server up, credentials, database)."""
    from jouled.config import load_config
    from jouled.secrets import influx_password, influx_token

    cfg = config if config is not None else load_config(None)
    u = parse_influx_url(url, cfg)
    remember_secret(u.password)  # a password given in the URL is masked in every later log line too
    store: InfluxV1Store | InfluxV2Store
    if u.api == "v1":
        if not u.username and cfg.influx.username:
            u = replace(u, username=cfg.influx.username)
        store = InfluxV1Store(u, influx_password(cfg) if u.username and u.password is None else None)
    else:
        from jouled.extras import require

        require(f"--store {u.shown}", "influx", "influxdb_client")
        token = influx_token(cfg)
        if not token:
            raise InfluxStoreError(
                f"store {u.shown}: no InfluxDB token — set $JOULED_INFLUX_TOKEN or [influx] token_file"
                " (never on the command line)"
            )
        store = InfluxV2Store(u, token)
    try:
        store.probe()
    except BaseException:
        store.close()
        raise
    return store
