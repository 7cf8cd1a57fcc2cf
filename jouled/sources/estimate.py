"""CPU power estimated from utilisation (CodeCarbon's fallback model) when no sensor can be read."""

from __future__ import annotations

import csv
import importlib.util
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from jouled.clock import CLOCK
from jouled.config import EstimateConfig
from jouled.errors import SourceUnavailable
from jouled.model import Reading, SourceKind
from jouled.series import TICK, SeriesMeta

from . import rapl
from .base import SourceInfo

DEFAULT_TDP_W = 85.0  # CodeCarbon's POWER_CONSTANT for a CPU it cannot identify


def estimate_power_w(tdp_w: float, idle_fraction: float, util: float, sockets: int = 1) -> float:
    """P = sockets × (P_idle + (TDP − P_idle) × u), with P_idle = idle_fraction × TDP and u in [0, 1]."""
    u = min(1.0, max(0.0, util))
    idle_w = idle_fraction * tdp_w
    return sockets * (idle_w + (tdp_w - idle_w) * u)


def normalise_cpu_name(name: str) -> str:
    """'Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz' → 'intel xeon gold 6248'.

    'AMD EPYC 7763 64-Core Processor' → 'amd epyc 7763'.
    """
    s = re.sub(r"\((?:R|TM|tm)\)", "", name)
    s = re.sub(r"\s+CPU\s*@.*$", "", s)
    s = re.sub(r"\s*@\s*[\d.]+\s*GHz", "", s)
    s = re.sub(r"\s+\d+-Core Processor$", "", s)
    s = re.sub(r"\s+(?:Processor|CPU)$", "", s)
    return " ".join(s.split()).lower()


def read_cpuinfo(path: Path) -> tuple[str, int]:
    """(model name, number of physical packages) from /proc/cpuinfo; ('', 1) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", 1
    model = ""
    packages: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "physical id":
            packages.add(value.strip())
    return model, max(1, len(packages))


def codecarbon_table() -> Path | None:
    """CodeCarbon's cpu_power.csv when codecarbon is installed (found without importing it: it is heavy)."""
    try:
        spec = importlib.util.find_spec("codecarbon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "hardware" / "cpu_power.csv"
    return path if path.is_file() else None


def lookup_tdp_w(model: str, table: Path) -> tuple[str, float] | None:
    """(matched name, TDP) for the CPU model, matching names after normalisation; None when unknown."""
    want = normalise_cpu_name(model)
    if not want:
        return None
    with table.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row.get("Name") or ""
            if normalise_cpu_name(name) == want:
                try:
                    return name, float(row["TDP"])
                except (KeyError, ValueError):
                    return None
    return None


def rapl_readable(root: Path) -> bool:
    for path, _dev, _raw in rapl.discover(root):
        try:
            int(rapl.read_file(path / "energy_uj").strip())
            return True
        except (OSError, ValueError):
            return False
    return False


class CpuUtilisation:
    """Percent busy since the previous call, from psutil.cpu_times (its own baseline, unlike the
    module-global one of psutil.cpu_percent(interval=None), which any other caller would reset)."""

    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    @staticmethod
    def _split(t: object) -> tuple[float, float]:
        total = float(sum(t))  # type: ignore[call-overload]
        idle = float(getattr(t, "idle", 0.0)) + float(getattr(t, "iowait", 0.0))
        return total, idle

    def __call__(self) -> float:
        now = psutil.cpu_times()
        total0, idle0 = self._split(self._last)
        total1, idle1 = self._split(now)
        self._last = now
        d_total = total1 - total0
        if d_total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (1.0 - (idle1 - idle0) / d_total)))


class EstimateSource:
    """Device ``cpu``: the model's power and a monotone ``energy_j`` it integrates itself, so windows work.

    Utilisation is the busy share of CPU time since the previous read, i.e. the interval's mean; the model
    is linear in it, so power × interval is the model's exact energy for that interval.
    """

    name = "estimate"
    kind: SourceKind = "estimated"
    blocking = False  # reads /proc/stat: shares the sampling thread

    def __init__(
        self,
        cfg: EstimateConfig | None = None,
        *,
        rapl_root: str = "/sys/class/powercap",
        cpuinfo: str = "/proc/cpuinfo",
        cpu_percent: Callable[[], float] | None = None,
        table: Path | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else EstimateConfig()
        self.rapl_root = Path(rapl_root)
        self.cpuinfo = Path(cpuinfo)
        self._cpu_percent: Callable[[], float] = cpu_percent or CpuUtilisation()
        self._table = table
        self.tdp_w = DEFAULT_TDP_W
        self.sockets = 1
        self._energy_j = 0.0
        self._last_mono_ns: int | None = None
        self._lock = threading.Lock()

    def open(self) -> SourceInfo:
        if self.cfg.only_without_sensors and rapl_readable(self.rapl_root):
            raise SourceUnavailable(
                f"RAPL is readable under {self.rapl_root}, so the CPU estimate is off — "
                "set [sources.estimate] only_without_sensors = false to run it beside RAPL"
            )
        model, self.sockets = read_cpuinfo(self.cpuinfo)
        notes: list[str] = []
        if self.cfg.tdp_w > 0:
            self.tdp_w = self.cfg.tdp_w
            notes.append(f"TDP {self.tdp_w:g} W per socket from [sources.estimate] tdp_w")
        else:
            table = self._table if self._table is not None else codecarbon_table()
            found = lookup_tdp_w(model, table) if table is not None else None
            if found is not None:
                self.tdp_w = found[1]
                notes.append(f"TDP {self.tdp_w:g} W per socket: '{model}' matched '{found[0]}' in CodeCarbon's table")
            else:
                self.tdp_w = DEFAULT_TDP_W
                why = "codecarbon not installed" if table is None else f"'{model or 'unknown CPU'}' not in its table"
                notes.append(
                    f"TDP {DEFAULT_TDP_W:g} W per socket: CodeCarbon's default ({why}) — "
                    "set [sources.estimate] tdp_w for a better estimate"
                )
        notes.append(
            f"P = {self.sockets} × ({self.cfg.idle_fraction:g} × TDP + (1 − {self.cfg.idle_fraction:g}) × TDP × "
            "utilisation): a model, not a measurement"
        )
        self._cpu_percent()  # sets the utilisation baseline at open
        self._last_mono_ns = time.monotonic_ns()
        self._energy_j = 0.0
        return SourceInfo(
            name=self.name,
            kind=self.kind,
            available=True,
            devices=["cpu"],
            period_s=1.0 / self.cfg.rate_hz,
            notes=notes,
            counter=True,
            # a model of the whole host's CPU power: estimated, host-wide; its own integral is the counter
            series={"cpu": SeriesMeta(role="cpu-estimate", device="cpu", kind="estimated", host_wide=True,
                                      power_period_s=TICK, counter_period_s=TICK)},
        )

    def read(self) -> list[Reading]:
        with self._lock:  # read_counters() on a marker may come from another thread
            util = self._cpu_percent() / 100.0
            now = time.monotonic_ns()
            power_w = estimate_power_w(self.tdp_w, self.cfg.idle_fraction, util, self.sockets)
            if self._last_mono_ns is not None:
                self._energy_j += power_w * (now - self._last_mono_ns) / 1e9
            self._last_mono_ns = now
            energy_j = self._energy_j
        return [Reading(CLOCK.from_monotonic_ns(now), "cpu", power_w, energy_j, {"util_cpu_pct": util * 100.0})]

    def read_counters(self) -> list[Reading]:
        return self.read()  # integrating up to the marker is exactly the counter value there

    def close(self) -> None:
        self._last_mono_ns = None
