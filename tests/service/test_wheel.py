"""`jouled service install` from a built wheel (not the source tree): the unit, the drop-in and the README come from
the wheel's package data and metadata, and systemd accepts the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from jouled.service_cli import DOC, INFLUX_DROPIN, UNIT
from tests.cli.test_packaging import wheel  # noqa: F401  (the session's one wheel build, shared)


def test_service_install_from_the_wheel(wheel: tuple[Path, str], tmp_path: Path) -> None:  # noqa: F811
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel[0]) as z:
        z.extractall(site)  # a pure-Python wheel installed is its files on sys.path
    root = tmp_path / "root"
    # the wheel's jouled first on the path (ahead of this checkout's editable install); dependencies from this env
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import jouled, sys; assert jouled.__file__.startswith(sys.argv[1]), jouled.__file__; "
            "from jouled.cli import main; sys.argv[1:] = sys.argv[2:]; main()")
    res = subprocess.run([sys.executable, "-c", code, str(site), "service", "install", "--root", str(root),
                          "--no-enable", "--with-influxdb"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    unit = (root / UNIT).read_text()
    assert "ExecStart=" in unit and "@JOULED@" not in unit and "DevicePolicy=closed" in unit
    assert (root / INFLUX_DROPIN).read_text().count("influxdb.service") >= 2
    assert (root / DOC).read_text().startswith("# jouled")  # the README, from the wheel's METADATA
    analyze = shutil.which("systemd-analyze")
    if analyze:
        env2 = {**os.environ, "SYSTEMD_UNIT_PATH": f"{root / UNIT.rsplit('/', 1)[0]}:"}
        v = subprocess.run([analyze, "verify", "jouled.service"], env=env2, capture_output=True, text=True, timeout=60)
        assert v.returncode == 0 and not v.stderr.strip(), v.stderr
