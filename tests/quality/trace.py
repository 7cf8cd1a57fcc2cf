"""A run with known truth, written into a real SQLite log: every number `assess` and `compare` print is derived by
hand from the constants here (see test_quality_cli.py for the arithmetic).

Run `r1` on host `h`, 20 s from T0, GPU gpu0; epochs 0: [0, 2] s, 1: [2, 2.5] s, 2: [2.5, 10] s, 3: [10, 20] s.
- nvml gpu0: 100 W constant, power and counter every 0.1 s at 0.05, 0.15, …, 19.95 s, none in (12, 15) s (a 3.1 s
  hole), extra power_avg_w = 100 W with each reading.
- smi gpu0: 110 W at 1 Hz, 0.3, 1.3, …, 19.3 s.
- visa wall: 300 W at 2 Hz, 0.25, 0.75, …, 19.75 s.
- rapl package-0: a counter only, 50 W, every 1 s at 0, 1, …, 20 s.
"""

from __future__ import annotations

from pathlib import Path

from jouled.model import CarbonPoint, Marker, Sample
from jouled.store.sqlite import SqliteStore, sqlite_url

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
EPOCHS = ((0, 0.0, 2.0), (1, 2.0, 2.5), (2, 2.5, 10.0), (3, 10.0, 20.0))
NVML_W, SMI_W, WALL_W, RAPL_W = 100.0, 110.0, 300.0, 50.0


def ns(t_s: float) -> int:
    return T0 + round(t_s * S)


def nvml_times() -> list[float]:
    ts = [round(0.05 + 0.1 * i, 2) for i in range(200)]
    return [t for t in ts if not 12.0 < t < 15.0]


def samples() -> list[Sample]:
    out = [Sample(ns(t), "h", "nvml", "gpu0", NVML_W, NVML_W * t, {"power_avg_w": NVML_W}) for t in nvml_times()]
    out += [Sample(ns(0.3 + i), "h", "smi", "gpu0", SMI_W, None) for i in range(20)]
    out += [Sample(ns(0.25 + 0.5 * i), "h", "visa", "wall", WALL_W, None) for i in range(40)]
    out += [Sample(ns(float(i)), "h", "rapl", "package-0", None, RAPL_W * i) for i in range(21)]
    return out


def markers(attrs: dict[str, object] | None = None) -> list[Marker]:
    out = [Marker(ns(0.0), "h", "r1", "run", "start", 0, gpus=("gpu0",), attrs=attrs or {})]
    seq = 1
    for e, a, b in EPOCHS:
        out.append(Marker(ns(a), "h", "r1", "epoch", "start", seq, epoch=e, gpus=("gpu0",)))
        out.append(Marker(ns(b), "h", "r1", "epoch", "end", seq + 1, epoch=e, gpus=("gpu0",)))
        seq += 2
    out.append(Marker(ns(20.0), "h", "r1", "run", "end", seq, gpus=("gpu0",)))
    return out


def make_store(path: Path, attrs: dict[str, object] | None = None, *, carbon: bool = False) -> str:
    """The run in a new log at `path`; `carbon`: 200 g/kWh for the first 10 s, then 400 g/kWh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    st = SqliteStore(path)
    st.write_samples(samples())
    st.write_markers(markers(attrs))
    if carbon:
        st.write_carbon([CarbonPoint(ns(-60.0), "DE", "test", 200.0), CarbonPoint(ns(10.0), "DE", "test", 400.0)])
    st.close()
    return sqlite_url(path)
