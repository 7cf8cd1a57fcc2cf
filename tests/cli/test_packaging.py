"""Packaging: the wheel carries what commands need at run time, `service install` works from package data, and a
command whose extra is missing says which extra in one line (exit 2)."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.errors import MissingExtra, UserError
from jouled.extras import require
from jouled.service_cli import CONFIG, TMPFILES, UNIT

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _setuptools_recent() -> bool:
    try:
        return int(metadata.version("setuptools").split(".")[0]) >= 77
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One wheel built from the tracked and new files (a copy: no stale build/ leaks in); its path and build log."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    for rel in (f.decode() for f in files if f):
        p = REPO / rel
        if p.is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(p.read_bytes())
    # without build isolation when this env's setuptools is new enough: no network, a few seconds
    isolation = ["--no-build-isolation"] if _setuptools_recent() else []
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", *isolation, "-w", str(tmp / "dist"),
                          str(src)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("jouled-*.whl")
    return whl, res.stdout + res.stderr


def test_wheel_carries_runtime_assets_and_only_the_jouled_package(wheel: tuple[Path, str]) -> None:
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    for need in ("jouled/systemd/jouled.service", "jouled/systemd/jouled.toml", "jouled/systemd/jouled-rapl.conf",
                 "jouled/systemd/jouled-wt310-sim.toml", "jouled/sources/sim/meters.yaml",
                 "jouled/daemon/__init__.py", "jouled/trainer/__init__.py", "jouled/scheduler/lamoo/__init__.py"):
        assert need in names, need
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"jouled"}, top  # no generic top-level daemon/trainer/scheduler/systemd module
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_wheel_metadata_base_deps_are_light(wheel: tuple[Path, str]) -> None:
    with zipfile.ZipFile(wheel[0]) as z:
        (meta,) = (n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.message_from_bytes(z.read(meta))
    assert msg["License-Expression"] == "Apache-2.0"
    base = [r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in base}
    assert {"typer", "rich", "numpy", "psutil"} <= names
    assert not names & {"influxdb-client", "torch", "scikit-learn", "scipy", "matplotlib", "ray", "pyvisa", "click",
                        "pydantic"}, names  # pydantic: the config is plain dataclasses (its core was ~16 MB of RSS)


def test_wheel_build_prints_no_warning_about_our_config(wheel: tuple[Path, str]) -> None:
    log = wheel[1]
    for bad in ("SetuptoolsDeprecationWarning", "SetuptoolsWarning", "_Warning:", "is absent from the `packages`",
                "License classifiers are deprecated"):
        assert bad not in log, [line for line in log.splitlines() if bad in line][:5]


def test_service_install_dry_run_writes_nothing(tmp_path: Path) -> None:
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert list(tmp_path.iterdir()) == []
    for rel in (UNIT, CONFIG, TMPFILES):
        assert f"would write {tmp_path / rel}" in res.output
    assert f"ExecStart={Path(sys.executable).parent / 'jouled'} run --config /etc/jouled/jouled.toml" in res.output


def test_service_install_files_modes_and_kept_config(tmp_path: Path) -> None:
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable"])
    assert res.exit_code == 0, res.output
    unit, cfg, tmpf = tmp_path / UNIT, tmp_path / CONFIG, tmp_path / TMPFILES
    assert f"ExecStart={Path(sys.executable).parent / 'jouled'} run --config /etc/jouled/jouled.toml" in unit.read_text()
    assert (unit.stat().st_mode & 0o777, cfg.stat().st_mode & 0o777, tmpf.stat().st_mode & 0o777) == (0o644, 0o640, 0o644)
    assert cfg.read_text() == (REPO / "systemd" / "jouled.toml").read_text()
    assert tmpf.read_text() == (REPO / "systemd" / "jouled-rapl.conf").read_text()

    cfg.write_text("# mine\n")
    cfg.chmod(0o644)
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable", "--dry-run"])
    assert f"would keep {cfg}" in res.output and cfg.read_text() == "# mine\n"
    runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable"])
    assert cfg.read_text() == "# mine\n"
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable", "--force"])
    assert res.exit_code == 0 and cfg.read_text().startswith("# jouled configuration")
    assert cfg.stat().st_mode & 0o777 == 0o640  # an overwritten config loses its old, wider mode


def _one_line_missing_extra(res, extra: str, module: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: ") and f"'{module}'" in lines[0] and f"pip install 'jouled[{extra}]'" in lines[0]


def test_plot_out_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # "not installed", as the import system sees it
    res = runner.invoke(app, ["nas", "simulate", "--trace", str(tmp_path / "t.csv"), "--plot-out", str(tmp_path / "p.png")])
    _one_line_missing_extra(res, "scheduler", "matplotlib")
    assert "--plot-out" in res.output and not (tmp_path / "p.png").exists()


def test_simulate_without_scikit_learn_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    res = runner.invoke(app, ["nas", "simulate", "--trace", str(tmp_path / "t.csv")])
    _one_line_missing_extra(res, "scheduler", "scikit-learn")


def test_train_and_demo_without_torch_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    _one_line_missing_extra(runner.invoke(app, ["train", "--epochs", "1"]), "trainer", "torch")
    _one_line_missing_extra(runner.invoke(app, ["demo"]), "trainer", "torch")


def test_executor_ray_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    res = runner.invoke(app, ["nas", "search", "--executor", "ray", "--provider", "constant", "--hours", "0.01"])
    _one_line_missing_extra(res, "scheduler", "ray")
    assert "--executor ray" in res.output


def test_require_tells_missing_from_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jouled_broken_dep.py").write_text("import jouled_no_such_inner_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="installed but it fails to import") as e:
        require("x", "scheduler", "jouled_broken_dep")
    assert not isinstance(e.value, MissingExtra)
    with pytest.raises(MissingExtra, match=r"needs 'jouled_absent_mod'.*jouled\[visa\]"):
        require("x", "visa", "jouled_absent_mod")
