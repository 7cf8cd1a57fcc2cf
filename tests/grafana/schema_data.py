"""Ten minutes of data in jouled's InfluxDB schema (power, marker, carbon, allocation, jouled_health) as line protocol.

What the dashboards' queries are run against: two hosts, GPUs with energy counters, RAPL package and DRAM, a wall
meter and an estimate; a run with four epochs and an architecture, a run without one; carbon intensity with a
forecast; a CE-NAS allocation; health points per source and for the forwarder (cumulative errors/missed counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jouled import influxproto as lp
from jouled.model import Allocation, CarbonPoint, Marker

HOSTS = ("node-a", "node-b")
RUN = "run-1"
ARCH = "nb201-|nor_conv_3x3~0|+|skip_connect~0|"  # NAS-Bench-201 arch strings carry regex characters
SEARCH = "search-1"
ZONE = "DE"
ATTRS = {"lr": 0.1, "note": 'a "quoted" word, with = and \\'}


@dataclass(frozen=True)
class Device:
    source: str
    device: str
    role: str
    kind: str
    scope: str
    power_w: float
    counter: bool


DEVICES = (
    Device("nvml", "gpu0", "gpu", "measured", "device", 250.0, True),
    Device("nvml", "gpu1", "gpu", "measured", "device", 180.0, True),
    Device("rapl", "package-0", "package", "measured", "device", 65.0, True),
    Device("rapl", "dram-0", "dram", "measured", "device", 8.0, True),
    Device("visa", "wall", "wall", "measured", "host", 520.0, False),
    Device("estimate", "cpu", "cpu-estimate", "estimated", "host", 70.0, False),
)


def lines(now_ns: int, span_s: int = 600) -> list[str]:
    """Line protocol for [now - span_s, now], one power sample per device per second, encoded by the forwarder's
    own encoder (jouled.influxproto), so the tags, field names and field types are what the forwarder writes."""
    s = 1_000_000_000
    t0 = now_ns - span_s * s
    out: list[str] = []
    for host in HOSTS:
        for d in DEVICES if host == HOSTS[0] else DEVICES[:1]:
            tags = {"host": host, "source": d.source, "device": d.device, "role": d.role, "kind": d.kind, "scope": d.scope}
            times = np.array([t0 + i * s for i in range(span_s + 1)], dtype=np.int64)
            power = np.array([d.power_w * (1.0 + 0.1 * ((i // 30) % 2)) for i in range(span_s + 1)])  # 30 s steps
            energy = np.array([d.power_w * i * 1.05 for i in range(span_s + 1)]) if d.counter else np.full(len(times), np.nan)
            out += lp.encode_samples(lp.power_prefix(tags), times, power, energy)
    host = HOSTS[0]
    seq = 0

    def marker(run: str, scope: str, event: str, t_s: float, epoch: int | None = None, arch: str | None = None) -> None:
        nonlocal seq
        seq += 1
        out.append(lp.encode_marker(Marker(t0 + int(t_s * s), host, run, scope, event, seq, epoch=epoch, phase="train",
                                           arch=arch, gpus=("gpu0", "gpu1"), attrs=ATTRS)))

    # run-1: run start, 4 epochs of 100 s (train), run end; run-2 without an arch
    marker(RUN, "run", "start", 20, arch=ARCH)
    for e in range(4):
        marker(RUN, "epoch", "start", 20 + 100 * e, e, ARCH)
        marker(RUN, "epoch", "end", 20 + 100 * (e + 1) - 0.5, e, ARCH)
    marker(RUN, "run", "end", 430, arch=ARCH)
    seq = 0
    marker("run-2", "run", "start", 450)
    marker("run-2", "epoch", "start", 450, 0)
    marker("run-2", "epoch", "end", 550, 0)
    marker("run-2", "run", "end", 560)
    encoded: list[str | None] = []
    for i in range(0, span_s + 1, 60):
        for forecast in (False, True):
            encoded.append(lp.encode_carbon(CarbonPoint(t0 + i * s, ZONE, "electricitymaps", 300.0 + i / 10 + 5 * forecast,
                                                        forecast)))
    for i in range(0, span_s + 1, 30):
        lam = (i % 120) / 120
        encoded.append(lp.encode_allocation(Allocation(t0 + i * s, SEARCH, round(8 * lam), 8 - round(8 * lam), lam,
                                                       300.0 + i / 10)))
    for host in HOSTS:
        for k, i in enumerate(range(0, span_s + 1, 10)):
            for src in ("nvml", "rapl", "visa"):  # errors and missed: cumulative counts, as the daemon reports them
                encoded.append(lp.encode_health(host, src, {"rate_hz": 9.9 + (k % 3) * 0.05, "jitter_s": 0.0004,
                               "errors": k // 7, "missed": k // 11, "last_sample_age_s": 0.1}, t0 + i * s))
            encoded.append(lp.encode_health(host, "forwarder", {"lag_s": 1.5 + (k % 4), "backlog_points": 10 * (k % 5)},
                                            t0 + i * s))
    return out + [line for line in encoded if line is not None]
