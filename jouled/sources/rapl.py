"""CPU package/DRAM energy from RAPL through Linux powercap sysfs, wrap-corrected into monotone counters."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jouled.clock import CLOCK
from jouled.config import RaplConfig
from jouled.errors import SourceUnavailable
from jouled.model import Reading, SourceKind
from jouled.series import TICK, SeriesMeta, rapl_role

from .base import SourceInfo
from .common import MonotoneCounter

# intel-rapl:N (package or psys) and intel-rapl:N:M (core, uncore, dram). AMD Zen uses the same
# "intel-rapl" names (kernel ≥ 5.8); "amd-rapl" is accepted in case a kernel names it so. The
# "intel-rapl-mmio:N" zones are a second view of the same package domain: never read them, or the
# package would be counted twice.
ZONE_RE = re.compile(r"^(?:intel|amd)-rapl:(\d+)(?::(\d+))?$")
SUBDOMAINS = ("core", "uncore")  # inside the package: reported, but never add them to it

PERMISSION_FIX = (
    "is readable by root only since CVE-2020-8694 — run as root, give the service CAP_DAC_READ_SEARCH "
    "(AmbientCapabilities in systemd/jouled.service), or install systemd/jouled-rapl.conf in "
    "/etc/tmpfiles.d (makes it group-readable by 'jouled') and run systemd-tmpfiles --create"
)


def read_file(path: Path) -> str:
    """The one place the source touches sysfs (tests replace it to simulate root-only files)."""
    with open(path, encoding="ascii") as f:
        return f.read()


@dataclass
class _Zone:
    path: Path
    device: str
    raw_name: str
    max_range_uj: int
    counter: MonotoneCounter = field(default_factory=MonotoneCounter)
    last_energy_j: float | None = None
    last_mono_ns: int = 0
    fd: int = -1  # energy_uj, kept open: a pread at offset 0 re-reads the counter without an open/close per tick


def zone_device_name(raw_name: str, package_of_parent: str | None) -> str:
    """``package-0`` stays; ``psys`` stays; sub-zones get their package's number: ``dram-0``, ``core-1``."""
    if raw_name.startswith("package-") or package_of_parent is None:
        return raw_name
    return f"{raw_name}-{package_of_parent}"


def discover(root: Path) -> list[tuple[Path, str, str]]:
    """(zone folder, device name, raw name) for every RAPL zone under ``root``, packages first."""
    found: list[tuple[tuple[int, int], Path, str, str]] = []
    if not root.is_dir():
        return []
    tops: dict[int, str] = {}
    entries = sorted(p for p in root.iterdir() if ZONE_RE.match(p.name))
    for p in entries:
        m = ZONE_RE.match(p.name)
        assert m is not None
        if m.group(2) is None:
            tops[int(m.group(1))] = _name(p)
    for p in entries:
        m = ZONE_RE.match(p.name)
        assert m is not None
        top, sub = int(m.group(1)), m.group(2)
        raw = _name(p)
        if sub is None:
            found.append(((top, -1), p, zone_device_name(raw, None), raw))
        else:
            parent = tops.get(top, "")
            pkg = parent.removeprefix("package-") if parent.startswith("package-") else str(top)
            found.append(((top, int(sub)), p, zone_device_name(raw, pkg), raw))
    found.sort(key=lambda x: x[0])
    return [(p, dev, raw) for _, p, dev, raw in found]


def _name(zone: Path) -> str:
    try:
        return read_file(zone / "name").strip()
    except OSError:
        return zone.name


class RaplSource:
    """One reading per RAPL zone: ``energy_j`` (monotone, wrap-corrected) and ``power_w`` between reads.

    Devices: ``package-N``, ``dram-N``, ``core-N``, ``uncore-N``, ``psys``. ``core``/``uncore`` are
    sub-domains of their package (SourceInfo.notes says so): a host total is the packages (+ dram).
    The energy counter wraps at ``max_energy_range_uj`` (about every 17 min at 250 W for a 2^32 µJ
    range); reads closer together than one wrap period are corrected exactly.
    """

    name = "rapl"
    kind: SourceKind = "measured"
    # preads of kept-open sysfs files: never waits, so it shares the sampling thread (jouled/sampler.py)
    blocking = False

    def __init__(self, cfg: RaplConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else RaplConfig()
        self.root = Path(self.cfg.root)
        self._zones: list[_Zone] = []
        self._lock = threading.Lock()

    def open(self) -> SourceInfo:
        zones = discover(self.root)
        if not zones:
            raise SourceUnavailable(
                f"no RAPL zones under {self.root} — this CPU/kernel exposes no powercap RAPL (needs the "
                "intel_rapl_msr module; AMD Zen needs Linux ≥ 5.8; VMs and most containers have none), "
                "or disable with [sources.rapl] enabled = false"
            )
        opened: list[_Zone] = []
        for path, dev, raw in zones:
            energy = path / "energy_uj"
            try:
                int(read_file(energy).strip())
            except PermissionError:
                raise SourceUnavailable(f"{energy} {PERMISSION_FIX}") from None
            except (OSError, ValueError) as e:
                raise SourceUnavailable(
                    f"cannot read {energy} ({e}) — check the powercap driver (dmesg), "
                    "or disable with [sources.rapl] enabled = false"
                ) from None
            try:
                max_range = int(read_file(path / "max_energy_range_uj").strip())
            except (OSError, ValueError):
                max_range = 0  # unknown: a drop is then treated as a reset, never as negative energy
            zone = _Zone(path, dev, raw, max_range, MonotoneCounter(wrap=float(max_range)))
            try:
                zone.fd = os.open(energy, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                for z in opened:
                    os.close(z.fd)
                raise SourceUnavailable(f"{energy} {PERMISSION_FIX}" if isinstance(e, PermissionError) else
                                        f"cannot open {energy} ({e.strerror}) — check the powercap driver (dmesg), "
                                        "or disable with [sources.rapl] enabled = false") from None
            opened.append(zone)
        self._close_files()
        self._zones = opened
        notes = []
        subs = [z.device for z in opened if z.raw_name in SUBDOMAINS]
        if subs:
            notes.append(f"{', '.join(subs)}: sub-domains inside their package — do not add them to it")
        if any(z.raw_name == "psys" for z in opened):
            notes.append("psys: the whole SoC/platform domain — it contains the packages")
        if any(z.max_range_uj == 0 for z in opened):
            notes.append("max_energy_range_uj unreadable: counter drops are treated as resets")
        return SourceInfo(
            name=self.name,
            kind=self.kind,
            available=True,
            devices=[z.device for z in opened],
            period_s=1.0 / self.cfg.rate_hz,
            notes=notes,
            counter=True,
            # energy_uj is read on every tick (power is the difference between reads); the file counts µJ
            series={
                z.device: SeriesMeta(role=rapl_role(z.device), device=z.device, power_period_s=TICK, counter_period_s=TICK,
                                     counter_resolution_j=1e-6)
                for z in opened
            },
        )

    def read(self) -> list[Reading]:
        return self._read(with_power=True)

    def read_counters(self) -> list[Reading]:
        # Energy only: a marker read a millisecond after a periodic read would give a meaningless
        # power over that millisecond, so it leaves the power baseline to the periodic reads.
        return self._read(with_power=False)

    def _read(self, with_power: bool) -> list[Reading]:
        out: list[Reading] = []
        with self._lock:  # read() and read_counters() may come from different threads
            for z in self._zones:
                raw = os.pread(z.fd, 32, 0)  # sysfs regenerates the value on each read at offset 0
                mono_ns = time.monotonic_ns()
                energy_j = z.counter.update(float(int(raw))) / 1e6
                power_w = None
                if with_power:
                    if z.last_energy_j is not None and mono_ns > z.last_mono_ns:
                        power_w = (energy_j - z.last_energy_j) * 1e9 / (mono_ns - z.last_mono_ns)
                    z.last_energy_j, z.last_mono_ns = energy_j, mono_ns
                out.append(Reading(CLOCK.from_monotonic_ns(mono_ns), z.device, power_w, energy_j))
        return out

    def _close_files(self) -> None:
        for z in self._zones:
            if z.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(z.fd)
                z.fd = -1

    def close(self) -> None:
        with self._lock:
            self._close_files()
            self._zones = []
