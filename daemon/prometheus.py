"""The daemon's Prometheus endpoint: `[prometheus] listen` serves /metrics, built at scrape time from the daemon's state.

Nothing here runs per sample: a scrape calls `Daemon.status()` (health, markers, store, forwarder) and tails the
local log from where the previous scrape stopped (raw chunks only, `res_s = 0`), integrating the new samples into
per-series energy totals. With nobody scraping, the endpoint costs an idle thread. The registry is the daemon's
own (not prometheus_client's global one), so several daemons can live in one process (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import selectors
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from jouled import __version__
from jouled.clock import CLOCK
from jouled.errors import UserError
from jouled.osthread import name_os_thread
from jouled.series import default_meta

if TYPE_CHECKING:
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.prometheus")

LISTEN_KEY = "[prometheus] listen"
STALE_S = 30.0  # a series with no sample for this long loses its power gauge (a lost GPU is not "still at 250 W")
CHUNKS_PER_QUERY = 1000  # the log is tailed in pages, so a first scrape after hours holds one page at a time
REQUEST_TIMEOUT_S = 5.0  # a client that connects and says nothing cannot hold the (single) serving thread longer

ENERGY_HELP = (
    "Energy since the daemon started, joules. From the device's own energy counter where it has one (the sum of "
    "its increments; a counter reset adds nothing), else the trapezoidal integral of jouled_power_watts over the "
    "samples in the log. Use rate()/increase(); never decreases while the daemon runs."
)


# -- the listen address (pure) -------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (every interface) → (host, port); a UserError naming the key otherwise."""
    raw = listen.strip()
    host, sep, port_s = raw.rpartition(":")
    if not sep or not port_s.isdigit() or not (0 < int(port_s) < 65536):
        raise UserError(
            f'{LISTEN_KEY} = "{listen}": expected host:port such as "127.0.0.1:9464" (IPv6: "[::1]:9464"); '
            'empty turns /metrics off'
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UserError(f'{LISTEN_KEY} = "{listen}": put an IPv6 address in brackets, e.g. "[::1]:9464"')
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or "" = every interface): reachable from elsewhere as far as we can tell


# -- energy since start (pure) ----------------------------------------------------------------------


@dataclass
class SeriesEnergy:
    """One series' running total: the last sample taken into it, and whether it follows a counter."""

    total_j: float = 0.0
    last_t_ns: int = -(2**63)
    last_power_w: float = math.nan
    last_power_t_ns: int = 0
    last_energy_j: float = math.nan  # the counter's last finite value (counter mode)
    counter: bool = False  # once a series shows a finite energy_j, its counter is what the total follows


def add_samples(
    state: SeriesEnergy, t_ns: np.ndarray, power_w: np.ndarray, energy_j: np.ndarray, after_ns: np.ndarray | None = None,
) -> None:
    """Take samples (sorted by time) into the series' total; samples at or before the last one taken are skipped,
    so a chunk read twice (the log's compaction rewrites old chunks under new ids) counts once.

    `after_ns`: per sample, the time it must be after instead of the last one taken (`chunk_thresholds`: several
    chunks taken at once, each judged as if the ones before it had been taken first).

    Counter mode adds every increase between consecutive finite counter values (the counter may be read less often
    than power: NaN in between) and nothing across a decrease (a driver reload resets NVML's counter). Power mode
    adds the trapezoid of each pair of consecutive finite power values (gaps included, like `jouled energy`).
    """
    keep = t_ns > (state.last_t_ns if after_ns is None else after_ns)
    if not keep.any():
        return
    t, p, e = t_ns[keep], power_w[keep], energy_j[keep]
    fin_e = np.isfinite(e)
    if fin_e.any():
        state.counter = True
    if state.counter:
        ev = e[fin_e]
        if ev.size:
            chain = np.concatenate(([state.last_energy_j], ev)) if math.isfinite(state.last_energy_j) else ev
            d = np.diff(chain)
            state.total_j += float(d[d > 0].sum())
            state.last_energy_j = float(ev[-1])
    else:
        fin_p = np.isfinite(p)
        tp, pv = t[fin_p], p[fin_p]
        if pv.size:
            if math.isfinite(state.last_power_w):
                tp = np.concatenate(([state.last_power_t_ns], tp))
                pv = np.concatenate(([state.last_power_w], pv))
            if pv.size > 1:
                state.total_j += float(np.sum((pv[1:] + pv[:-1]) * 0.5 * (np.diff(tp) / 1e9)))
    fin_p = np.isfinite(p)
    if fin_p.any():
        i = int(np.flatnonzero(fin_p)[-1])
        state.last_power_w, state.last_power_t_ns = float(p[i]), int(t[i])
    state.last_t_ns = int(t[-1])


def add_chunks(state: SeriesEnergy, chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """`add_samples` of each (time, power, energy) chunk in turn, with the same result, in as few calls as that allows:
    one for the chunks after the series follows its counter (or when none of them has a counter value), one per
    chunk before that (the switch from power to counter happens at a chunk). A scrape every 15 s finds ~8 chunks a
    series at the 2 s flush; numpy's call overhead on 20-sample chunks was most of a scrape's CPU."""
    i = 0
    if not state.counter and any(bool(np.isfinite(c[2]).any()) for c in chunks):
        while i < len(chunks) and not state.counter:
            add_samples(state, *chunks[i])
            i += 1
    rest = chunks[i:]
    if rest:
        ts = [c[0] for c in rest]
        add_samples(state, np.concatenate(ts), np.concatenate([c[1] for c in rest]), np.concatenate([c[2] for c in rest]),
                    chunk_thresholds(state.last_t_ns, ts))


def chunk_thresholds(last_t_ns: int, chunks_t_ns: list[np.ndarray]) -> np.ndarray:
    """For chunks (each sorted by time) taken in this order, per sample: the time it must be after, as `add_samples`
    chunk by chunk would have it — the latest sample of the chunks before its own (or `last_t_ns`, when later).
    So a batch of chunks is one `add_samples` call with the same samples kept, a rewritten old chunk among them too."""
    ends = np.array([c[-1] if c.size else np.iinfo(np.int64).min for c in chunks_t_ns], dtype=np.int64)
    before = np.empty(len(chunks_t_ns), dtype=np.int64)
    before[0] = last_t_ns
    if len(chunks_t_ns) > 1:
        np.maximum(np.maximum.accumulate(ends[:-1]), last_t_ns, out=before[1:])
    return np.repeat(before, [c.size for c in chunks_t_ns])


# -- the log, tailed at scrape time ------------------------------------------------------------------------


class LogTail:
    """A read-only connection to the daemon's log and a cursor over its raw chunks (scrape thread only)."""

    def __init__(self, path: Path, host: str, sources: set[str], since_ns: int) -> None:
        self.path = path
        self.host = host
        self.sources = sources
        self.since_ns = since_ns
        self.series: dict[tuple[str, str], SeriesEnergy] = {}
        self._conn: sqlite3.Connection | None = None
        # chunks written before the daemon started are not its samples: start after the last one
        self.cursor = self._query_one("SELECT coalesce(max(id), 0) FROM chunks")

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=2000")  # a checkpoint in progress must not fail the scrape
        return self._conn

    def _query_one(self, sql: str) -> int:
        return int(self.conn().execute(sql).fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def poll(self) -> None:
        """Take every raw chunk written since the last poll into the per-series totals."""
        while True:
            rows = self.conn().execute(
                "SELECT c.id, s.host, s.source, s.device, c.n, c.time_ns, c.power_w, c.energy_j FROM chunks c"
                " JOIN series s ON s.id = c.series_id WHERE c.id > ? AND c.res_s = 0 AND c.t1_ns >= ?"
                " ORDER BY c.id LIMIT ?",
                (self.cursor, self.since_ns, CHUNKS_PER_QUERY),
            ).fetchall()
            per_series: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
            for cid, host, source, device, n, t, p, e in rows:
                self.cursor = max(self.cursor, int(cid))
                # only this daemon's own series: `jouled import` may write other hosts' samples into the same log
                if host != self.host or source not in self.sources:
                    continue
                per_series.setdefault((source, device), []).append((
                    np.frombuffer(t, "<i8"),
                    np.frombuffer(p, "<f8") if p is not None else np.full(n, np.nan),
                    np.frombuffer(e, "<f8") if e is not None else np.full(n, np.nan),
                ))
            for key, chunks in per_series.items():
                add_chunks(self.series.setdefault(key, SeriesEnergy(last_t_ns=self.since_ns - 1)), chunks)
            if len(rows) < CHUNKS_PER_QUERY:
                return

    def latest_carbon(self, now_ns: int) -> list[tuple[str, str, float]]:
        """(zone, provider, g/kWh) of the latest non-forecast intensity per zone and provider up to now."""
        rows = self.conn().execute(
            "SELECT zone, provider, intensity_g_per_kwh, max(time_ns) FROM carbon"
            " WHERE forecast = 0 AND time_ns <= ? GROUP BY zone, provider",
            (now_ns,),
        ).fetchall()
        return [(str(z), str(p), float(v)) for z, p, v, _t in rows]

    def latest_allocations(self) -> list[tuple[str, int, int, float]]:
        """(search, gpus_sampling, gpus_evaluation, lambda_s) of each search's latest CE-NAS allocation."""
        rows = self.conn().execute(
            "SELECT search, gpus_sampling, gpus_evaluation, lambda_s, max(time_ns) FROM allocation GROUP BY search"
        ).fetchall()
        return [(str(s), int(a), int(b), float(lam)) for s, a, b, lam, _t in rows]


# -- the collector ------------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    """A finite number from the status dict, else None (the status is read defensively: it grows over time)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


class JouledCollector:
    """Builds every jouled_* metric family from the daemon at scrape time."""

    def __init__(self, daemon: Daemon, tail: LogTail) -> None:
        self.daemon = daemon
        self.tail = tail
        self._lock = threading.Lock()  # one scrape at a time owns the tail's cursor and totals
        self._last_error = ""

    def describe(self) -> list[Metric]:
        return []  # register without a trial scrape; the names are dynamic anyway

    def _status(self) -> dict[str, Any]:
        # status() reads the sampler threads' live counters; a deque they append to may change under the
        # percentile's iteration (RuntimeError): a retry a moment later reads it whole
        for _ in range(3):
            try:
                return self.daemon.status()
            except RuntimeError:
                time.sleep(0.001)
        return self.daemon.status()

    def _roles(self) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for r in self.daemon.sampler.runners:
            for dev, meta in r.series_meta().items():
                out[(r.source.name, dev)] = meta.role
        return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        d = self.daemon
        host = d.host
        st = self._status()
        now_ns = CLOCK.now_ns()

        info = InfoMetricFamily("jouled_build", "jouled's version", labels=["version"])
        info.add_metric([__version__], {})
        yield info

        yield from self._log_metrics(host, now_ns)

        lbl = ["host", "source"]
        rate = GaugeMetricFamily("jouled_sample_rate_hz", "Achieved sampling rate per source since start, Hz", labels=lbl)
        target = GaugeMetricFamily("jouled_sample_target_rate_hz", "Configured sampling rate per source, Hz", labels=lbl)
        samples = CounterMetricFamily("jouled_samples", "Readings taken per source (all its devices)", labels=lbl)
        errors = CounterMetricFamily("jouled_read_errors", "Failed reads per source", labels=lbl)
        missed = CounterMetricFamily(
            "jouled_missed_ticks", "Sampling ticks skipped because a read overran its deadline", labels=lbl
        )
        age = GaugeMetricFamily("jouled_last_sample_age_seconds", "Seconds since the source's last reading", labels=lbl)
        up = GaugeMetricFamily(
            "jouled_source_up", "1 while the source is sampling, 0 when unavailable, retrying or stopped", labels=lbl
        )
        for s in st.get("sources", []) if isinstance(st.get("sources"), list) else []:
            if not isinstance(s, Mapping):
                continue
            labels = [host, str(s.get("name", ""))]
            for fam, key in ((rate, "achieved_rate_hz"), (target, "target_rate_hz"), (samples, "readings"),
                             (errors, "errors"), (missed, "missed"), (age, "last_sample_age_s")):
                v = _num(s.get(key))
                if v is not None:
                    fam.add_metric(labels, v)
            up.add_metric(labels, 1.0 if s.get("state") == "sampling" else 0.0)
        yield from (rate, target, samples, errors, missed, age, up)

        markers = st.get("markers")
        if isinstance(markers, Mapping):
            fam = CounterMetricFamily(
                "jouled_markers", "Markers received over MQTT, by what became of them", labels=["host", "result"]
            )
            rejected = markers.get("rejected")
            results: dict[str, float | None] = {
                "stored": _num(markers.get("stored")),
                "duplicate": _num(markers.get("duplicates")),
                "rejected": float(sum(v for v in rejected.values() if _num(v) is not None))
                if isinstance(rejected, Mapping) else None,
                "dropped": _num(markers.get("dropped")),
                "failed": _num(markers.get("failed")),
            }
            for result, v in results.items():
                if v is not None:
                    fam.add_metric([host, result], v)
            yield fam
            connected = GaugeMetricFamily(
                "jouled_mqtt_connected", "1 while the marker subscriber is connected to its broker", labels=["host"]
            )
            connected.add_metric([host], 1.0 if markers.get("connected") else 0.0)
            yield connected

        store = st.get("store")
        if isinstance(store, Mapping):
            for name, key, helptext, counter in (
                ("jouled_store_write_errors", "write_errors", "Failed writes to the local log (samples kept, retried)", True),
                ("jouled_store_samples_written", "written", "Samples written to the local log", True),
                ("jouled_store_pending_samples", "pending", "Samples waiting for the local log", False),
            ):
                v = _num(store.get(key))
                if v is None:
                    continue
                if counter:
                    c = CounterMetricFamily(name, helptext, labels=["host"])
                    c.add_metric([host], v)
                    yield c
                else:
                    g = GaugeMetricFamily(name, helptext, labels=["host"])
                    g.add_metric([host], v)
                    yield g

        fwd = st.get("forwarder")
        if isinstance(fwd, Mapping):
            family: type[GaugeMetricFamily] | type[CounterMetricFamily]
            for family, name, key, helptext in (
                (GaugeMetricFamily, "jouled_forwarder_lag_seconds", "lag_s",
                 "Age of the oldest sample not yet forwarded to InfluxDB"),
                (GaugeMetricFamily, "jouled_forwarder_backlog_points", "backlog_points",
                 "Points in the log not yet forwarded to InfluxDB"),
                (CounterMetricFamily, "jouled_forwarder_points_sent", "points_sent", "Points written to InfluxDB"),
                (CounterMetricFamily, "jouled_forwarder_errors", "errors", "Failed writes to InfluxDB (retried)"),
            ):
                v = _num(fwd.get(key))
                if v is not None:
                    m = family(name, helptext, labels=["host"])
                    m.add_metric([host], v)
                    yield m

    def _log_metrics(self, host: str, now_ns: int) -> Iterator[Metric]:
        tail = self.tail
        lbl = ["host", "source", "device", "role"]
        power = GaugeMetricFamily("jouled_power_watts", "Last power reading in the log, watts", labels=lbl)
        energy = CounterMetricFamily("jouled_energy_joules", ENERGY_HELP, labels=lbl)
        carbon = GaugeMetricFamily(
            "jouled_carbon_intensity_g_per_kwh", "Latest known grid carbon intensity, gCO2/kWh", labels=["zone", "provider"]
        )
        gpus = GaugeMetricFamily(
            "jouled_cenas_gpus", "GPUs of the latest CE-NAS allocation, by role", labels=["search", "role"]
        )
        lam = GaugeMetricFamily("jouled_cenas_lambda_s", "Latest CE-NAS sampling share lambda_s (0..1)", labels=["search"])
        try:
            tail.poll()
            roles = self._roles()
            stale_ns = now_ns - int(STALE_S * 1e9)
            for (source, device), s in sorted(tail.series.items()):
                role = roles.get((source, device)) or default_meta(source, device).role
                labels = [host, source, device, role]
                energy.add_metric(labels, s.total_j)
                if math.isfinite(s.last_power_w) and s.last_power_t_ns >= stale_ns:
                    power.add_metric(labels, s.last_power_w)
            for zone, provider, v in tail.latest_carbon(now_ns):
                carbon.add_metric([zone, provider], v)
            for search, n_s, n_e, lambda_s in tail.latest_allocations():
                gpus.add_metric([search, "sampling"], n_s)
                gpus.add_metric([search, "evaluation"], n_e)
                lam.add_metric([search], lambda_s)
        except sqlite3.Error as e:  # the log busy or gone: serve the status metrics, say why once per distinct error
            msg = f"{type(e).__name__}: {e}"
            if msg != self._last_error:
                log.warning("prometheus: cannot read the log %s (%s); /metrics serves the status metrics only",
                            tail.path, msg)
            self._last_error = msg
            tail.close()
        else:
            self._last_error = ""
        yield from (power, energy, carbon, gpus, lam)


# -- the HTTP server ------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape a second is not news for the journal


class _Server6(WSGIServer):
    address_family = socket.AF_INET6


# One serving thread, not a thread per request (prometheus_client's start_http_server): scrapes are small and
# rare, and one thread keeps one SQLite connection and one set of running totals without cross-thread handoff.


@dataclass
class MetricsServer:
    """/metrics bound at build time (a taken port fails `jouled run` at once), served from one thread while running.

    The thread sleeps in one select on the listening socket and a wake-up socket pair, without a timeout: no wake-up
    at all between scrapes (`serve_forever` polls its stop flag, twice a second by default). `stop` writes to the pair.
    """

    server: WSGIServer
    collector: JouledCollector
    thread: threading.Thread | None = None
    _wake: tuple[socket.socket, socket.socket] = field(default_factory=socket.socketpair)
    _stopping: bool = False

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread = threading.Thread(target=self._serve, name="jouled-prometheus", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        name_os_thread()  # "jouled-prometheus" in `top -H`
        self.server.timeout = 0  # handle_request after select said readable: take the connection, never wait
        with selectors.DefaultSelector() as sel:
            sel.register(self.server, selectors.EVENT_READ)
            sel.register(self._wake[0], selectors.EVENT_READ)
            while not self._stopping:
                for key, _events in sel.select():
                    if key.fileobj is self.server and not self._stopping:
                        self.server.handle_request()  # one scrape, answered in this thread

    def stop(self) -> None:
        self._stopping = True
        if self.thread is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
            self.thread.join(5.0)
        self.server.server_close()
        for s in self._wake:
            s.close()
        self.collector.tail.close()


def bind(daemon: Daemon, listen: str) -> MetricsServer:
    host, port = parse_listen(listen)
    if not is_loopback(host):
        log.warning('%s = "%s" is not a loopback address: /metrics has no authentication, anyone who can reach '
                    "the port reads it (keep a firewall in front, or use 127.0.0.1)", LISTEN_KEY, listen)
    registry = CollectorRegistry(auto_describe=False)
    tail = LogTail(daemon.store.path, daemon.host, {r.source.name for r in daemon.sampler.runners}, daemon.started_ns)
    collector = JouledCollector(daemon, tail)
    registry.register(collector)  # type: ignore[arg-type]
    cls = _Server6 if ":" in host else WSGIServer
    try:
        server = make_server(host, port, make_wsgi_app(registry), server_class=cls, handler_class=_QuietHandler)
    except OSError as e:
        tail.close()
        if e.errno == errno.EADDRINUSE:
            why = f"port {port} is already in use"
        elif e.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine"
        else:
            why = e.strerror or str(e)
        raise UserError(f'{LISTEN_KEY} = "{listen}": cannot listen ({why}) — choose another address or port, '
                        'or set it to "" to turn /metrics off') from None
    return MetricsServer(server, collector)


def attach_prometheus(daemon: Daemon) -> MetricsServer | None:
    """With `[prometheus] listen` set: bind now (errors at start), serve while the daemon runs. None when off."""
    listen = daemon.config.prometheus.listen.strip()
    if not listen:
        return None
    ms = bind(daemon, listen)

    async def prometheus(_: Daemon) -> None:
        ms.start()
        log.info("prometheus: serving /metrics on %s", listen)
        try:
            await asyncio.Event().wait()
        finally:
            # stop() joins the serving thread (a scrape in progress finishes first): off the event loop
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(ms.stop))

    daemon.tasks.append(prometheus)
    daemon.status_extras["prometheus"] = lambda: {"listen": listen, "port": ms.port}
    return ms
