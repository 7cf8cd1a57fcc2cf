"""`jouled service install|uninstall` under --root: idempotent, credentials enabled when their files exist, the
InfluxDB drop-in, and a warning when the service user could not reach the jouled it would run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled import service_cli
from jouled.cli import app
from jouled.service_cli import CONFIG, DOC, INFLUX_DROPIN, TMPFILES, UNIT, unreachable_reasons

runner = CliRunner()


def _run(*args: str) -> str:
    res = runner.invoke(app, ["service", *args])
    assert res.exit_code == 0, res.output
    return res.output


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_mode, p.read_bytes())
            for p in root.rglob("*") if p.is_file()}


def test_second_install_changes_nothing_and_says_so(tmp_path: Path) -> None:
    first = _run("install", "--root", str(tmp_path), "--no-enable", "--with-influxdb")
    assert "nothing changed" not in first
    before = _snapshot(tmp_path)
    second = _run("install", "--root", str(tmp_path), "--no-enable", "--with-influxdb")
    assert "nothing changed: already installed" in second
    assert f"unchanged {tmp_path / UNIT}" in second and f"kept existing {tmp_path / CONFIG}" in second
    assert _snapshot(tmp_path) == before  # not even rewritten with the same bytes
    dry = _run("install", "--root", str(tmp_path), "--no-enable", "--with-influxdb", "--dry-run")
    assert "would write" not in dry and f"unchanged {tmp_path / TMPFILES}" in dry


def test_a_changed_file_is_rewritten_alone(tmp_path: Path) -> None:
    _run("install", "--root", str(tmp_path), "--no-enable")
    unit = tmp_path / UNIT
    unit.write_text(unit.read_text().replace("Nice=0", "Nice=5"))
    out = _run("install", "--root", str(tmp_path), "--no-enable")
    assert f"installed {unit}" in out and f"unchanged {tmp_path / TMPFILES}" in out and "Nice=0" in unit.read_text()


def test_credentials_enabled_only_when_their_file_exists(tmp_path: Path) -> None:
    _run("install", "--root", str(tmp_path), "--no-enable")
    unit = (tmp_path / UNIT).read_text()
    assert "\nLoadCredential=mqtt-password:/etc/jouled/mqtt-passwd\n" in unit
    assert "\n#LoadCredential=influx-token:/etc/jouled/influx-token\n" in unit
    (tmp_path / "etc/jouled/influx-token").write_text("t0ken\n")
    out = _run("install", "--root", str(tmp_path), "--no-enable")
    unit = (tmp_path / UNIT).read_text()
    assert f"installed {tmp_path / UNIT}" in out
    assert "\nLoadCredential=influx-token:/etc/jouled/influx-token\n" in unit
    assert "\n#LoadCredential=carbon-token:/etc/jouled/carbon-token\n" in unit and "t0ken" not in unit


def test_influxdb_drop_in_and_uninstall(tmp_path: Path) -> None:
    _run("install", "--root", str(tmp_path), "--no-enable", "--with-influxdb")
    drop = (tmp_path / INFLUX_DROPIN).read_text()
    assert "After=influxdb.service" in drop and "Wants=influxdb.service" in drop and "\nRequires=" not in drop
    dry = _run("uninstall", "--root", str(tmp_path), "--dry-run")
    assert str(tmp_path / INFLUX_DROPIN) in dry and (tmp_path / UNIT).exists()
    out = _run("uninstall", "--root", str(tmp_path))
    for rel in (UNIT, INFLUX_DROPIN, TMPFILES, DOC):
        assert not (tmp_path / rel).exists() and str(tmp_path / rel) in out
    assert not (tmp_path / INFLUX_DROPIN).parent.exists()
    assert (tmp_path / CONFIG).exists()  # kept without --purge
    assert "nothing (not installed)" in _run("uninstall", "--root", str(tmp_path))


def test_unreachable_paths() -> None:
    assert "ProtectHome=yes" in unreachable_reasons([Path("/home/alice/venv/bin/jouled")])[0]
    assert "ProtectHome=yes" in unreachable_reasons([Path("/root/.venv/bin/python")])[0]
    assert unreachable_reasons([Path("/usr/bin/env")]) == []


def test_closed_folder_is_reported(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    exe = private / "bin" / "jouled"
    exe.write_text("#!/usr/bin/env python3\n")
    exe.chmod(0o755)
    private.chmod(0o700)
    try:
        (reason,) = unreachable_reasons([exe])
    finally:
        private.chmod(0o755)
    assert str(private) in reason and "0700" in reason


def test_install_warns_when_the_interpreter_is_out_of_reach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "home-like"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("")
    python.chmod(0o700)  # the owner's only: what a venv copied from a private place looks like to others
    exe = venv / "bin" / "jouled"
    exe.write_text(f"#!{python}\n")
    exe.chmod(0o755)
    monkeypatch.setattr(service_cli, "jouled_binary", lambda: str(exe))
    root = tmp_path / "root"
    res = runner.invoke(app, ["service", "install", "--root", str(root), "--no-enable"])
    assert res.exit_code == 0, res.output
    assert f"warning: {python} is not readable by other users" in res.output
    assert f"ExecStart={exe} run" in (root / UNIT).read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_permission_denied_is_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable"])
    finally:
        tmp_path.chmod(0o700)
    assert res.exit_code == 2 and "permission denied" in res.output


def test_a_root_that_is_no_folder_is_one_line(tmp_path: Path) -> None:
    """A new user's `--root` pointing at a file, or somewhere no folder can be made, ended in a 50-line traceback."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in (["install", "--no-enable"], ["uninstall"], ["install", "--no-enable", "--dry-run"]):
        res = runner.invoke(app, ["service", *cmd, "--root", str(afile)])
        assert res.exit_code == 2 and "not a folder" in res.output and "Traceback" not in res.output, res.output
    res = runner.invoke(app, ["service", "install", "--no-enable", "--root", "/proc/jouled-no-such"])
    assert res.exit_code == 2 and "cannot write" in res.output and "pass a writable folder" in res.output, res.output


def test_a_staging_install_says_what_it_left_to_the_package(tmp_path: Path) -> None:
    out = _run("install", "--root", str(tmp_path), "--no-enable")
    assert f"staging root {tmp_path}: no `jouled` user made" in out and "systemctl not run" in out
