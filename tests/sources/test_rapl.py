"""RaplSource against a powercap tree in a temp dir: discovery, names, wrap correction, permissions."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jouled.config import RaplConfig
from jouled.errors import SourceUnavailable
from jouled.sources import rapl
from jouled.sources.rapl import RaplSource

MAX_UJ = 262_143_328_850  # a real max_energy_range_uj value


def make_zone(root: Path, folder: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    z = root / folder
    z.mkdir(parents=True)
    (z / "name").write_text(name + "\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control-type folder, not a zone
    make_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    make_zone(root, "intel-rapl:0:0", "core", 500_000)
    make_zone(root, "intel-rapl:0:1", "dram", 200_000)
    make_zone(root, "intel-rapl:1", "package-1", 3_000_000)
    make_zone(root, "intel-rapl:1:0", "dram", 100_000)
    make_zone(root, "intel-rapl-mmio:0", "package-0", 9_999_999)  # same domain again: must be ignored
    return root


def set_uj(root: Path, folder: str, value: int) -> None:
    (root / folder / "energy_uj").write_text(f"{value}\n")


def test_discovers_zones_with_stable_device_names(powercap: Path) -> None:
    info = RaplSource(RaplConfig(root=str(powercap))).open()
    assert info.available and info.counter
    assert info.devices == ["package-0", "core-0", "dram-0", "package-1", "dram-1"]
    assert any("core-0" in n and "sub-domain" in n for n in info.notes)


def test_psys_keeps_its_name(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    make_zone(tmp_path, "intel-rapl:1", "psys", 1)
    info = RaplSource(RaplConfig(root=str(tmp_path))).open()
    assert info.devices == ["package-0", "psys"]
    assert any(n.startswith("psys:") for n in info.notes)


def test_amd_zone_names_are_accepted(tmp_path: Path) -> None:
    make_zone(tmp_path, "amd-rapl:0", "package-0", 1)
    assert RaplSource(RaplConfig(root=str(tmp_path))).open().devices == ["package-0"]


def test_energy_in_joules_and_power_from_consecutive_reads(powercap: Path) -> None:
    src = RaplSource(RaplConfig(root=str(powercap)))
    src.open()
    first = {r.device: r for r in src.read()}
    assert first["package-0"].energy_j == pytest.approx(1.0)
    assert first["package-0"].power_w is None  # no previous read yet
    set_uj(powercap, "intel-rapl:0", 1_000_000 + 5_000_000)  # +5 J
    time.sleep(0.05)
    second = {r.device: r for r in src.read()}
    assert second["package-0"].energy_j == pytest.approx(6.0)
    dt_s = (second["package-0"].time_ns - first["package-0"].time_ns) / 1e9
    assert second["package-0"].power_w == pytest.approx(5.0 / dt_s, rel=0.05)
    assert second["dram-1"].power_w == pytest.approx(0.0)


def test_wrap_is_corrected_into_a_monotone_counter(tmp_path: Path) -> None:
    max_uj = 1_000_000_000
    make_zone(tmp_path, "intel-rapl:0", "package-0", max_uj - 2_000_000, max_uj=max_uj)
    src = RaplSource(RaplConfig(root=str(tmp_path)))
    src.open()
    energies = [src.read()[0].energy_j]
    set_uj(tmp_path, "intel-rapl:0", 3_000_000)  # wrapped: 2 J to the top, then 3 J
    energies.append(src.read()[0].energy_j)
    set_uj(tmp_path, "intel-rapl:0", 4_000_000)
    energies.append(src.read()[0].energy_j)
    assert energies[1] - energies[0] == pytest.approx(5.0)  # type: ignore[operator]
    assert energies[2] - energies[1] == pytest.approx(1.0)  # type: ignore[operator]
    assert energies == sorted(energies)
    power = src.read()[0].power_w
    assert power is not None and power >= 0


def test_read_counters_gives_energy_without_disturbing_power(powercap: Path) -> None:
    src = RaplSource(RaplConfig(root=str(powercap)))
    src.open()
    src.read()
    set_uj(powercap, "intel-rapl:0", 2_000_000)
    counters = {r.device: r for r in src.read_counters()}
    assert counters["package-0"].energy_j == pytest.approx(2.0) and counters["package-0"].power_w is None
    time.sleep(0.02)
    p = {r.device: r for r in src.read()}["package-0"].power_w
    assert p is not None and p > 0  # the 1 J since the last periodic read is still in this power


def test_no_powercap_is_unavailable_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as e:
        RaplSource(RaplConfig(root=str(tmp_path / "missing"))).open()
    msg = str(e.value)
    assert "no RAPL zones under" in msg and "enabled = false" in msg and "\n" not in msg


def test_root_only_energy_file_says_how_to_fix(powercap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = powercap / "intel-rapl:0" / "energy_uj"
    os.chmod(target, 0)
    if os.geteuid() == 0:
        # root reads through mode 000, so simulate the kernel's refusal at the one sysfs read.
        real = rapl.read_file

        def refuse(path: Path) -> str:
            if path == target:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(rapl, "read_file", refuse)
    with pytest.raises(SourceUnavailable) as e:
        RaplSource(RaplConfig(root=str(powercap))).open()
    msg = str(e.value)
    assert str(target) in msg
    for fix in ("CVE-2020-8694", "CAP_DAC_READ_SEARCH", "jouled-rapl.conf", "run as root"):
        assert fix in msg
    assert "\n" not in msg


def test_tmpfiles_rule_covers_packages_and_subzones() -> None:
    conf = Path(__file__).resolve().parents[2] / "systemd" / "jouled-rapl.conf"
    rules = [line.split() for line in conf.read_text().splitlines() if line and not line.startswith("#")]
    assert all(r[0] == "z" and r[2] == "0440" and r[3] == "root" and r[4] == "jouled" for r in rules)
    assert any(r[1] == "/sys/class/powercap/intel-rapl:*/energy_uj" for r in rules)
