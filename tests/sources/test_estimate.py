"""EstimateSource: the linear model, TDP choice (config, CodeCarbon table, default), integration, RAPL gate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jouled.config import EstimateConfig
from jouled.errors import SourceUnavailable
from jouled.sources.estimate import (
    DEFAULT_TDP_W,
    CpuUtilisation,
    EstimateSource,
    codecarbon_table,
    estimate_power_w,
    lookup_tdp_w,
    normalise_cpu_name,
)

XEON = "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"


def cpuinfo(tmp_path: Path, model: str, packages: int = 1) -> Path:
    lines = []
    for cpu in range(2 * packages):
        lines += [f"processor\t: {cpu}", f"model name\t: {model}", f"physical id\t: {cpu // 2}", ""]
    p = tmp_path / "cpuinfo"
    p.write_text("\n".join(lines))
    return p


def table(tmp_path: Path) -> Path:
    p = tmp_path / "cpu_power.csv"
    p.write_text("Name,TDP\nIntel Xeon Gold 6248,150\nAMD EPYC 7763,280\n")
    return p


def test_model_is_linear_between_idle_and_tdp() -> None:
    assert estimate_power_w(100.0, 0.1, 0.0) == pytest.approx(10.0)
    assert estimate_power_w(100.0, 0.1, 1.0) == pytest.approx(100.0)
    assert estimate_power_w(100.0, 0.1, 0.5) == pytest.approx(55.0)
    assert estimate_power_w(100.0, 0.1, 0.5, sockets=2) == pytest.approx(110.0)
    assert estimate_power_w(100.0, 0.1, 1.7) == pytest.approx(100.0)  # clipped


def test_cpu_names_normalise_like_the_table() -> None:
    assert normalise_cpu_name(XEON) == "intel xeon gold 6248"
    assert normalise_cpu_name("AMD EPYC 7763 64-Core Processor") == "amd epyc 7763"


def test_tdp_from_config_wins(tmp_path: Path) -> None:
    src = EstimateSource(
        EstimateConfig(tdp_w=120, only_without_sensors=False), cpuinfo=str(cpuinfo(tmp_path, XEON)), table=table(tmp_path)
    )
    info = src.open()
    assert src.tdp_w == 120 and any("from [sources.estimate] tdp_w" in n for n in info.notes)


def test_tdp_from_codecarbon_table_and_sockets(tmp_path: Path) -> None:
    src = EstimateSource(
        EstimateConfig(only_without_sensors=False),
        cpuinfo=str(cpuinfo(tmp_path, "AMD EPYC 7763 64-Core Processor", packages=2)),
        table=table(tmp_path),
    )
    info = src.open()
    assert src.tdp_w == 280 and src.sockets == 2
    assert any("matched 'AMD EPYC 7763'" in n for n in info.notes)


def test_unknown_cpu_uses_codecarbon_default(tmp_path: Path) -> None:
    src = EstimateSource(
        EstimateConfig(only_without_sensors=False), cpuinfo=str(cpuinfo(tmp_path, "Mystery CPU 9000")), table=table(tmp_path)
    )
    info = src.open()
    assert src.tdp_w == DEFAULT_TDP_W == 85.0
    assert any("CodeCarbon's default" in n and "tdp_w" in n for n in info.notes)


def test_real_codecarbon_table_knows_a_common_xeon() -> None:
    path = codecarbon_table()
    if path is None:
        pytest.skip("codecarbon is an optional extra and is not installed")
    found = lookup_tdp_w(XEON, path)
    assert found is not None and found[1] > 0


def test_energy_is_the_integral_of_the_model(tmp_path: Path) -> None:
    utils = iter([0.0, 50.0, 50.0, 100.0, 100.0])
    src = EstimateSource(
        EstimateConfig(tdp_w=100, idle_fraction=0.2, only_without_sensors=False),
        cpuinfo=str(cpuinfo(tmp_path, XEON)),
        cpu_percent=lambda: next(utils),
    )
    src.open()
    t0 = time.monotonic()
    time.sleep(0.1)
    r1 = src.read()[0]
    time.sleep(0.1)
    r2 = src.read()[0]
    elapsed = time.monotonic() - t0
    assert r1.device == "cpu" and r1.power_w == pytest.approx(60.0) and r2.power_w == pytest.approx(60.0)
    assert r2.energy_j == pytest.approx(60.0 * elapsed, rel=0.1)
    r3 = src.read_counters()[0]
    assert r3.power_w == pytest.approx(100.0) and r3.energy_j is not None and r3.energy_j >= r2.energy_j  # type: ignore[operator]


def test_real_utilisation_is_a_percentage() -> None:
    util = CpuUtilisation()
    time.sleep(0.05)
    assert 0.0 <= util() <= 100.0


def test_off_when_rapl_is_readable(tmp_path: Path) -> None:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("123\n")
    with pytest.raises(SourceUnavailable) as e:
        EstimateSource(EstimateConfig(), rapl_root=str(tmp_path / "powercap")).open()
    assert "only_without_sensors = false" in str(e.value)
    info = EstimateSource(EstimateConfig(), rapl_root=str(tmp_path / "nothing")).open()
    assert info.available and info.kind == "estimated" and info.devices == ["cpu"]
