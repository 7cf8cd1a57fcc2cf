"""One dataset written to both an SQLite log and InfluxDB (jouled.influxproto's line protocol), for the reader tests.

Counters and power-only series, a declared comparison series (nvidia-smi), an estimated host-wide series, a wall
meter, an undeclared series, a gap, two hosts, three runs with epochs and phases, and carbon intensity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from jouled import influxproto
from jouled.model import CarbonPoint, Marker
from jouled.series import SeriesMeta, default_meta
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


# -- line protocol: the forwarder's own encoder (jouled.influxproto), so the reader is tested on what it will read --


def power_lines(key: SeriesKey, meta: SeriesMeta | None, t: np.ndarray, p: np.ndarray, e: np.ndarray) -> list[str]:
    return influxproto.encode_series(key.host, key.source, key.device, meta, t, p, e)


def marker_line(m: Marker) -> str:
    return influxproto.encode_marker(m)


def carbon_line(c: CarbonPoint) -> str:
    line = influxproto.encode_carbon(c)
    assert line is not None
    return line


def write_lines(url: str, db: str, lines: Iterable[str], batch: int = 50_000) -> None:
    buf: list[str] = []

    def flush() -> None:
        r = httpx.post(f"{url}/write", params={"db": db, "precision": "ns"}, content="\n".join(buf).encode(), timeout=120)
        assert r.status_code == 204, r.text
        buf.clear()

    for ln in lines:
        buf.append(ln)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()


# -- the dataset ---------------------------------------------------------------------------------------------------


@dataclass
class Series:
    key: SeriesKey
    meta: SeriesMeta | None  # None: undeclared (an imported series)
    t: np.ndarray
    p: np.ndarray
    e: np.ndarray


def _series(host: str, source: str, device: str, meta: SeriesMeta | None, rate_hz: float, span_s: float,
            watts: float, *, power: bool = True, counter: bool = True, gap: tuple[float, float] | None = None,
            phase: float = 0.0) -> Series:
    n = int(span_s * rate_hz)
    t_s = np.arange(n) / rate_hz + phase
    if gap is not None:
        t_s = t_s[(t_s < gap[0]) | (t_s > gap[1])]
    p = watts + 20.0 * np.sin(t_s / 7.0)
    e = np.cumsum(np.full(t_s.size, watts / rate_hz))
    return Series(SeriesKey(host, source, device), meta, T0 + (t_s * NS).astype(np.int64),
                  p if power else np.full(t_s.size, np.nan), e if counter else np.full(t_s.size, np.nan))


def series() -> list[Series]:
    gpu = SeriesMeta(role="gpu", power_period_s=0.1, counter_period_s=0.1)
    return [
        _series("h1", "nvml", "gpu0", gpu, 10, 300, 250.0, gap=(100.0, 103.0)),
        _series("h1", "nvml", "gpu1", SeriesMeta(role="gpu", power_period_s=0.1), 10, 300, 180.0, counter=False),
        _series("h1", "smi", "gpu0", SeriesMeta(role="gpu", comparison=True, power_period_s=1.0), 1, 300, 248.0,
                counter=False, phase=0.3),
        _series("h1", "rapl", "package-0", SeriesMeta(role="package", counter_period_s=0.1), 10, 300, 90.0, power=False),
        _series("h1", "rapl", "dram-0", SeriesMeta(role="dram", counter_period_s=0.1), 10, 300, 12.0, power=False),
        _series("h1", "estimate", "cpu", SeriesMeta(role="cpu-estimate", kind="estimated", host_wide=True,
                                                    power_period_s=0.5), 2, 300, 70.0, counter=False),
        _series("h1", "visa", "wall", SeriesMeta(role="wall", power_period_s=0.5), 2, 300, 600.0, counter=False),
        _series("h1", "csv", "meter1", None, 1, 300, 40.0, counter=False),  # undeclared: default meta
        _series("h2", "nvml", "gpu0", gpu, 10, 300, 300.0, phase=0.05),
    ]


def markers() -> list[Marker]:
    out: list[Marker] = []

    def run(host: str, name: str, start_s: float, epochs: int, epoch_s: float, arch: str | None,
            gpus: Sequence[str]) -> None:
        seq = 0

        def add(t_s: float, scope: str, event: str, epoch: int | None = None, phase: str | None = None) -> None:
            nonlocal seq
            out.append(Marker(T0 + int(t_s * NS), host, name, scope, event, seq, epoch=epoch, phase=phase, arch=arch,
                              gpus=tuple(gpus), attrs={"lr": 0.1, "note": "x"} if scope == "run" else {}))
            seq += 1

        add(start_s, "run", "start")
        t = start_s + 0.5
        for ep in range(epochs):
            add(t, "epoch", "start", ep)
            add(t + 0.01, "phase", "start", ep, "train")
            add(t + epoch_s * 0.7, "phase", "end", ep, "train")
            add(t + epoch_s * 0.7 + 0.01, "phase", "start", ep, "eval")
            add(t + epoch_s - 0.02, "phase", "end", ep, "eval")
            add(t + epoch_s, "epoch", "end", ep)
            t += epoch_s + 0.25
        add(t + 0.5, "run", "end")

    run("h1", "r1", 10.0, 3, 30.0, "resnet18", ("gpu0", "gpu1"))
    run("h1", "r2", 150.0, 4, 25.0, "vit-tiny", ("gpu0",))
    run("h2", "r3", 20.0, 2, 60.0, None, ("gpu0",))
    return out


def carbon() -> list[CarbonPoint]:
    pts = [CarbonPoint(T0 + i * 30 * NS, "DE", "trace", 300.0 + 10.0 * i) for i in range(-1, 11)]
    pts.append(CarbonPoint(T0 + 400 * NS, "DE", "trace", 999.0, forecast=True))
    pts.append(CarbonPoint(T0 + 60 * NS, "FR", "trace", 50.0))
    return pts


def fill_sqlite(st: SqliteStore, ss: Sequence[Series], ms: Sequence[Marker], cs: Sequence[CarbonPoint]) -> None:
    for s in ss:
        declare = {s.key: s.meta} if s.meta is not None else None
        st.write_batches([ChunkBatch(s.key, s.t, s.p, s.e)], declare=declare, since_ns=int(s.t[0]))
    st.write_markers(ms)
    st.write_carbon(cs)


def influx_lines(ss: Sequence[Series], ms: Sequence[Marker], cs: Sequence[CarbonPoint]) -> list[str]:
    lines: list[str] = []
    for s in ss:
        lines.extend(power_lines(s.key, s.meta, s.t, s.p, s.e))
    lines.extend(marker_line(m) for m in ms)
    lines.extend(carbon_line(c) for c in cs)
    return lines


def default_role(source: str, device: str) -> str:
    return default_meta(source, device).role
