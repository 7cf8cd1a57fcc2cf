"""Real time-series servers for tests and benchmarks: InfluxDB 1.x, VictoriaMetrics and Prometheus on free loopback ports.

Each ``start_*`` returns a ``ServerHandle`` (``stop``/``kill``/``start``/``restart`` keep the port and the data
directory, so a restarted InfluxDB still holds what it had). Their binaries come from Debian's ``influxdb``,
``victoria-metrics`` and ``prometheus`` packages (``.ci/system-deps``); ``*_available()`` says whether one is here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.brokers import BrokerHandle, free_port

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def influxd_available() -> bool:
    return Path(INFLUXD).exists()


def victoria_available() -> bool:
    return Path(VICTORIA).exists()


def prometheus_available() -> bool:
    return Path(PROMETHEUS).exists()


@dataclass
class ServerHandle(BrokerHandle):
    """A server process on 127.0.0.1:``port`` whose readiness is an HTTP GET of ``ready_path``."""

    ready_path: str = "/ping"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServerHandle:
        super().start(timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:  # listening is not ready: InfluxDB opens its port before its meta store
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code < 300:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self.name} not ready at {self.url}{self.ready_path}: {self.log_tail()}")
            time.sleep(0.05)

    # -- InfluxDB 1.x helpers (the v1 HTTP API: what tests use to look at what the forwarder wrote) --------------

    def influxql(self, q: str, db: str = "", **params: Any) -> list[dict[str, Any]]:
        """Run InfluxQL; the ``series`` of the first statement's result (``[]`` when it found nothing)."""
        args = {"q": q, "epoch": "ns", **params}
        if db:
            args["db"] = db
        r = httpx.post(self.url + "/query", data=args, timeout=30.0)
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxQL {q!r}: {result['error']}")
        return list(result.get("series", []))

    def create_database(self, db: str) -> None:
        self.influxql(f'CREATE DATABASE "{db}"')


def start_influxd(port: int | None = None, *, auth: bool = False) -> ServerHandle:
    """InfluxDB 1.x on 127.0.0.1:``port`` (HTTP API), data in a temp dir, running when this returns. ``auth``: the
    HTTP API asks for credentials (the first admin user may still be created without them)."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jouled-influxd-"))
    conf = workdir / "influxdb.conf"
    conf.write_text(
        "reporting-disabled = true\n"
        f'bind-address = "127.0.0.1:{free_port()}"\n'
        f'[meta]\n  dir = "{workdir}/meta"\n  logging-enabled = false\n'
        f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n  query-log-enabled = false\n'
        '  index-version = "inmem"\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n  max-body-size = 0\n'
        f"  auth-enabled = {'true' if auth else 'false'}\n"
        "[monitor]\n  store-enabled = false\n"
        "[subscriber]\n  enabled = false\n"
        "[continuous_queries]\n  enabled = false\n"
    )
    return ServerHandle("influxd", port, [INFLUXD, "-config", str(conf)], workdir).start()


def start_victoria(port: int | None = None) -> ServerHandle:
    """VictoriaMetrics single-node on 127.0.0.1:``port``: accepts InfluxDB line protocol on ``/write`` and
    ``/api/v2/write`` (the v2 write path) and answers PromQL on ``/api/v1/query``."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jouled-victoria-"))
    argv = [
        VICTORIA,
        f"-storageDataPath={workdir}/data",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-search.latencyOffset=0s",  # tests read what they just wrote
        "-loggerLevel=WARN",
    ]
    handle = ServerHandle("victoria-metrics", port, argv, workdir)
    handle.ready_path = "/health"
    return handle.start()


def start_prometheus(targets: list[str], port: int | None = None, scrape_interval_s: float = 1.0) -> ServerHandle:
    """Prometheus on 127.0.0.1:``port`` scraping ``targets`` (``host:port`` strings) every ``scrape_interval_s``."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jouled-prometheus-"))
    conf = workdir / "prometheus.yml"
    quoted = ", ".join(f'"{t}"' for t in targets)
    every = f"{round(scrape_interval_s * 1000)}ms"  # Prometheus durations are integers with a unit
    conf.write_text(
        f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
        f"scrape_configs:\n  - job_name: jouled\n    static_configs:\n      - targets: [{quoted}]\n"
    )
    argv = [
        PROMETHEUS,
        f"--config.file={conf}",
        f"--storage.tsdb.path={workdir}/data",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    handle = ServerHandle("prometheus", port, argv, workdir)
    handle.ready_path = "/-/ready"
    return handle.start()
