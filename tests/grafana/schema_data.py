"""Ten minutes of data in jouled's InfluxDB schema (power, marker, carbon, allocation, jouled_health) as line protocol.

What the dashboards' queries are run against: two hosts, GPUs with energy counters, RAPL package and DRAM, a wall
meter and an estimate; a run with four epochs and an architecture, a run without one; carbon intensity with a
forecast; a CE-NAS allocation; health points per source and for the forwarder (cumulative errors/missed counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

HOSTS = ("node-a", "node-b")
RUN = "run-1"
ARCH = "nb201-|nor_conv_3x3~0|+|skip_connect~0|"  # NAS-Bench-201 arch strings carry regex characters
SEARCH = "search-1"
ZONE = "DE"
ATTRS = json.dumps({"lr": 0.1, "note": 'a "quoted" word'}, separators=(",", ":"))


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


def _field_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def lines(now_ns: int, span_s: int = 600) -> list[str]:
    """Line protocol for [now - span_s, now], one power sample per device per second."""
    s = 1_000_000_000
    t0 = now_ns - span_s * s
    out: list[str] = []
    for host in HOSTS:
        for d in DEVICES if host == HOSTS[0] else DEVICES[:1]:
            tags = (f"power,host={host},source={d.source},device={d.device},role={_tag(d.role)},kind={d.kind},"
                    f"scope={d.scope}")
            for i in range(span_s + 1):
                p = d.power_w * (1.0 + 0.1 * ((i // 30) % 2))  # a square wave: steps every 30 s
                fields = f"power_w={p}"
                if d.counter:
                    fields += f",energy_j={d.power_w * i * 1.05}"
                out.append(f"{tags} {fields} {t0 + i * s}")
    # run-1: run start, 4 epochs of 100 s (train), run end; seq counts per run
    host = HOSTS[0]
    seq = 0

    def marker(run: str, scope: str, event: str, t_s: float, epoch: int | None = None, arch: str = "") -> None:
        nonlocal seq
        seq += 1
        fields = [f"phase={_field_str('train')}", f"gpus={_field_str('gpu0 gpu1')}", f"attrs={_field_str(ATTRS)}"]
        if epoch is not None:
            fields.append(f"epoch={epoch}i")
        if arch:
            fields.append(f"arch={_field_str(arch)}")
        out.append(f"marker,host={host},run={run},scope={scope},event={event},seq={seq} {','.join(fields)} "
                   f"{t0 + int(t_s * s)}")

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
    for i in range(0, span_s + 1, 60):
        ci = 300.0 + i / 10
        out.append(f"carbon,zone={ZONE},provider=electricitymaps,forecast=false intensity_g_per_kwh={ci} {t0 + i * s}")
        out.append(f"carbon,zone={ZONE},provider=electricitymaps,forecast=true intensity_g_per_kwh={ci + 5} {t0 + i * s}")
    for i in range(0, span_s + 1, 30):
        lam = (i % 120) / 120
        out.append(f"allocation,search={SEARCH} gpus_sampling={round(8 * lam)}i,gpus_evaluation={8 - round(8 * lam)}i,"
                   f"lambda_s={lam},intensity_g_per_kwh={300.0 + i / 10} {t0 + i * s}")
    for host in HOSTS:
        for k, i in enumerate(range(0, span_s + 1, 10)):
            for src in ("nvml", "rapl", "visa"):
                out.append(f"jouled_health,host={host},source={src} rate_hz={9.9 + (k % 3) * 0.05},jitter_s=0.0004,"
                           f"errors={k // 7}i,missed={k // 11}i,last_sample_age_s=0.1 {t0 + i * s}")
            out.append(f"jouled_health,host={host},source=forwarder lag_s={1.5 + (k % 4)},backlog_points={10 * (k % 5)}i "
                       f"{t0 + i * s}")
    return out
