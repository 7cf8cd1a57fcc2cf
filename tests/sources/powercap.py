"""A powercap RAPL tree in a folder, laid out as the kernel does (packages and their DRAM zones), for tests and benches."""

from __future__ import annotations

from pathlib import Path

ZONES = [("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "dram"), ("intel-rapl:1", "package-1"),
         ("intel-rapl:1:0", "dram"), ("intel-rapl:2", "package-2"), ("intel-rapl:3", "package-3")]


def powercap_tree(root: Path, domains: int) -> Path:
    """``domains`` zones under ``root`` (energy_uj counters at 1 J, the usual max range); returns ``root``."""
    for folder, name in ZONES[:domains]:
        z = root / folder
        z.mkdir(parents=True)
        (z / "name").write_text(name + "\n")
        (z / "energy_uj").write_text("1000000\n")
        (z / "max_energy_range_uj").write_text("262143328850\n")
    return root
