"""Series metadata: what a stored series is (device, role, measured or estimated, periods), and totals chosen by role (pure).

A source declares one `SeriesMeta` per device when the daemon opens it; the daemon stores it with the data
(`series_meta`, versioned by the time it was declared), and the energy math and the totals read it back instead of
guessing from source names. Series nobody declared (imported CSV samples, logs written before schema v2, sources
without a declaration) get `default_meta(source, device)`: the one documented place where names are interpreted.

Roles and totals (RAPL semantics: /work/shared/REFERENCE.md):
- `gpu`: one physical GPU; counted once per device (NVML preferred to nvidia-smi, measured to estimated).
- `package`: a CPU package (RAPL `package-N`); counted.
- `dram`: DRAM of a package; on Intel a separate RAPL domain, not inside `package`: counted.
- `core`, `uncore`: RAPL sub-domains that lie inside their package: reported, never added.
- `psys`: the whole SoC/platform (it contains the packages): its own figure, never added to the packages.
- `wall`: a wall meter measures everything plus PSU losses: a separate total (`wall_j`), never added.
- `cpu-estimate`: a model of the host's CPU power; counted only when no measured `package` exists.
- `other`: anything else (an unknown imported source): reported, not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

Measurement = Literal["measured", "estimated"]

ROLES: tuple[str, ...] = ("gpu", "package", "dram", "core", "uncore", "psys", "wall", "cpu-estimate", "other")
TOTAL_ROLES = frozenset({"gpu", "package", "dram", "cpu-estimate"})  # what a run's energy_j adds up
WALL_ROLES = frozenset({"wall"})  # reported as wall_j beside the total
# a counter window shorter than this many of the counter's own update periods is flagged `coarse`: its energy can
# be off by up to 1/COARSE_UPDATES (5 %) of the window's energy, one update period's worth at the two ends together
COARSE_UPDATES = 20
TICK = 0.0  # a declared period meaning "once per sampler tick": the daemon replaces it by its period for that source


@dataclass(frozen=True, slots=True)
class SeriesMeta:
    """What one series is. Periods in seconds; None: unknown (judged against the median spacing of the samples).

    `device`: the physical device ('' = the series' own device name): series of two sources with the same role and
    device are one device and count once. `comparison`: a second view of a device that another source reads
    directly (nvidia-smi beside NVML), used in totals only when no direct series of the device exists.
    `origin`: `source` when declared by the source, `default` when inferred from the source name.
    """

    role: str
    device: str = ""
    kind: Measurement = "measured"
    host_wide: bool = False  # the whole machine's load billed to whatever run is in the window (the CPU estimate)
    power_period_s: float | None = None
    counter_period_s: float | None = None  # None also when the series has no counter
    counter_resolution_j: float | None = None
    comparison: bool = False
    origin: str = "source"
    # the device's own power limits (a GPU's min/max power-management limit, NVML), None: unknown; `jouled assess`
    # judges the range of power a run used against them
    power_min_w: float | None = None
    power_max_w: float | None = None
    # how often the device itself updates its counter / power value (NVML on an H200: 100 ms for both), None: unknown.
    # A read returns the value of the last update, so a counter window is off by up to one update's energy: windows
    # shorter than COARSE_UPDATES updates are flagged `coarse`
    counter_update_s: float | None = None
    power_update_s: float | None = None

    @property
    def estimated(self) -> bool:
        return self.kind == "estimated"

    def resolved(self, tick_s: float) -> SeriesMeta:
        """Replace TICK periods by the sampler's period; a counter cannot be read faster than the ticks that read it."""
        power = tick_s if self.power_period_s == TICK else self.power_period_s
        counter = self.counter_period_s
        if counter is not None:
            counter = tick_s if counter == TICK else max(counter, tick_s)
        return replace(self, power_period_s=power, counter_period_s=counter)

    def for_device(self, device: str) -> str:
        return self.device or device


def rapl_role(device: str) -> str:
    """`package-0` → package, `dram-0` → dram, `core-1` → core, `uncore-0` → uncore, `psys` → psys, else other."""
    base = device.rsplit("-", 1)[0] if device[-1:].isdigit() and "-" in device else device
    return base if base in ("package", "dram", "core", "uncore", "psys") else "other"


def default_meta(source: str, device: str, period_s: float | None = None) -> SeriesMeta:
    """The documented default for a series no source declared (imported samples, older logs), from its source name.

    nvml → gpu, measured (nvidia-smi: gpu, comparison); rapl → the zone's role (package-N, dram-N, core-N, uncore-N,
    psys); visa → wall; estimate → cpu-estimate, estimated, host-wide; anything else → other, measured. Periods are
    `period_s` for both fields when given (the daemon's tick for an undeclaring source), else unknown: windows are
    then judged against the median spacing of each field's own samples.
    """
    role, host_wide, comparison = "other", False, False
    kind: Measurement = "measured"
    if source == "nvml":
        role = "gpu"
    elif source == "smi":
        role, comparison = "gpu", True
    elif source == "rapl":
        role = rapl_role(device)
    elif source == "visa":
        role = "wall"
    elif source == "estimate":
        role, kind, host_wide = "cpu-estimate", "estimated", True
    return SeriesMeta(
        role=role, kind=kind, host_wide=host_wide, power_period_s=period_s, counter_period_s=period_s,
        comparison=comparison, origin="default",
    )


def meta_or_default(meta: SeriesMeta | None, source: str, device: str) -> SeriesMeta:
    return meta if meta is not None else default_meta(source, device)


def period_or_nan(period_s: float | None) -> float:
    return float("nan") if period_s is None or not math.isfinite(period_s) or period_s <= 0 else float(period_s)


# --------------------------------------------------------------------------------------------------
# Totals chosen by role
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotalChoice:
    """Which `source:device` keys make a run's total, and which make its wall figure."""

    total: tuple[str, ...]
    wall: tuple[str, ...]


def _rank(source: str, meta: SeriesMeta) -> tuple[int, int, int, str]:
    # measured before estimated, direct before comparison, counter before power-only, then the name (deterministic)
    return (int(meta.estimated), int(meta.comparison), int(meta.counter_period_s is None), source)


def choose_totals(keys: Iterable[str], metas: Mapping[tuple[str, str], SeriesMeta] | None = None) -> TotalChoice:
    """From `source:device` keys, the ones that add up to a total — each physical device once — and the wall meters.

    A device measured by two sources (NVML and nvidia-smi on gpu0) counts once, by the best series (`_rank`);
    core/uncore (inside the package), psys (contains the packages) and unknown roles are never added; the CPU
    estimate counts only when no measured package does.
    """
    best: dict[tuple[str, str], tuple[tuple[int, int, int, str], str]] = {}
    wall: list[str] = []
    for key in keys:
        src, dev = key.split(":", 1)
        meta = metas.get((src, dev)) if metas is not None else None
        meta = meta_or_default(meta, src, dev)
        if meta.role in WALL_ROLES:
            wall.append(key)
            continue
        if meta.role not in TOTAL_ROLES:
            continue
        slot = (meta.role, meta.for_device(dev))
        rank = _rank(src, meta)
        cur = best.get(slot)
        if cur is None or rank < cur[0]:
            best[slot] = (rank, key)
    has_package = any(role == "package" for role, _ in best)
    chosen = sorted(
        (key for (role, _dev), (_rank_, key) in best.items() if not (role == "cpu-estimate" and has_package)),
        key=lambda k: (_ROLE_ORDER.get(_role_of(k, metas), 9), k),
    )
    return TotalChoice(tuple(chosen), tuple(sorted(wall)))


_ROLE_ORDER = {r: i for i, r in enumerate(ROLES)}


def _role_of(key: str, metas: Mapping[tuple[str, str], SeriesMeta] | None) -> str:
    src, dev = key.split(":", 1)
    meta = metas.get((src, dev)) if metas is not None else None
    return meta_or_default(meta, src, dev).role
