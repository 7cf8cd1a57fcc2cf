"""The source registry: names, building from config, unknown names, probing every source."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.config import Config
from jouled.errors import UserError
from jouled.sources.base import Source
from jouled.sources.estimate import EstimateSource
from jouled.sources.nvml import NO_DRIVER
from jouled.sources.registry import SOURCES, build_sources, make_source, probe_all
from jouled.sources.visa import SIM_WT310, sim_backend


def config(tmp_path: Path, **sources: dict[str, object]) -> Config:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    base: dict[str, dict[str, object]] = {"rapl": {"root": str(tmp_path / "powercap")}}
    for k, v in sources.items():
        base[k] = {**base.get(k, {}), **v}
    return Config.from_dict({"sources": base})


def test_names() -> None:
    assert list(SOURCES) == ["nvml", "rapl", "visa", "smi", "estimate"]


def test_every_class_follows_the_protocol(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for name in SOURCES:
        src = make_source(cfg, name)
        assert isinstance(src, Source) and src.name == name
        assert src.kind in ("measured", "estimated", "comparison")


def test_build_defaults_to_enabled_sources(tmp_path: Path) -> None:
    names = [s.name for s in build_sources(config(tmp_path))]
    assert names == ["nvml", "rapl", "visa", "estimate"]  # smi is opt-in
    names = [s.name for s in build_sources(config(tmp_path, rapl={"enabled": False}, smi={"enabled": True}))]
    assert names == ["nvml", "visa", "smi", "estimate"]


def test_build_named_sources_even_if_disabled(tmp_path: Path) -> None:
    got = build_sources(config(tmp_path), ["smi", "rapl", "smi"])
    assert [s.name for s in got] == ["smi", "rapl"]


def test_estimate_learns_where_rapl_lives(tmp_path: Path) -> None:
    src = make_source(config(tmp_path), "estimate")
    assert isinstance(src, EstimateSource) and src.rapl_root == tmp_path / "powercap"


def test_unknown_source_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        build_sources(config(tmp_path), ["nvml", "x"])
    assert e.value.message == "unknown source 'x' — choose from nvml, rapl, visa, smi, estimate"
    assert e.value.exit_code == 2


def test_probe_all_reports_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    cfg = config(tmp_path, visa={"resource": SIM_WT310, "backend": sim_backend()})
    infos = {i.name: i for i in probe_all(cfg)}
    assert list(infos) == list(SOURCES)
    assert infos["rapl"].available and infos["rapl"].devices == ["package-0"] and infos["rapl"].counter
    assert infos["visa"].available and infos["visa"].devices == ["wall"]
    assert not infos["smi"].available and "enabled = true" in infos["smi"].reason
    # RAPL is readable here, so the estimate stands down and says how to turn it on anyway
    assert not infos["estimate"].available and "only_without_sensors" in infos["estimate"].reason
    nvml = infos["nvml"]
    assert nvml.available or nvml.reason == NO_DRIVER  # this machine: no NVIDIA driver
    for info in infos.values():
        assert "\n" not in info.reason


def test_probe_named_disabled_source_opens_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (info,) = probe_all(config(tmp_path), ["smi"])
    assert not info.available and info.reason.startswith("nvidia-smi not found on PATH")
