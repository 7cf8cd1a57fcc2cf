"""The installed unit: systemd accepts it, rates its exposure <= 2.0, and its W^X setting holds for the daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.service_cli import DOC, INFLUX_DROPIN, UNIT

REPO = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze")
runner = CliRunner()
MAX_EXPOSURE = 2.0


def _install(root: Path, *extra: str) -> str:
    res = runner.invoke(app, ["service", "install", "--root", str(root), "--no-enable", *extra])
    assert res.exit_code == 0, res.output
    return res.output


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    # the root's unit folder first (its drop-ins too), then systemd's own (the trailing ':'): targets resolve
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{root / UNIT.rsplit('/', 1)[0]}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, env=env, timeout=60)


def exposure(output: str) -> float:
    m = re.search(r"Overall exposure level for jouled\.service:\s*([0-9.]+)", output)
    assert m, output[-2000:]
    return float(m.group(1))


@needs_analyze
def test_offline_security_exposure_at_most_2(tmp_path: Path) -> None:
    _install(tmp_path, "--with-influxdb")
    res = _analyze(tmp_path, "security", "--offline=yes", "jouled.service")
    assert exposure(res.stdout + res.stderr) <= MAX_EXPOSURE, res.stdout
    # the file as shipped (placeholders and all) rates the same
    shipped = _analyze(tmp_path, "security", "--offline=yes", str(REPO / "systemd" / "jouled.service"))
    assert exposure(shipped.stdout + shipped.stderr) <= MAX_EXPOSURE


@needs_analyze
def test_systemd_analyze_verify_accepts_unit_and_drop_in(tmp_path: Path) -> None:
    _install(tmp_path, "--with-influxdb")
    assert (tmp_path / INFLUX_DROPIN).is_file()
    res = _analyze(tmp_path, "verify", "jouled.service")
    # systemd prints unknown keys, bad values and a missing ExecStart binary as warnings with exit 0: none allowed
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stderr


def test_unit_keeps_the_devices_and_sockets_the_sources_need() -> None:
    text = (REPO / "systemd" / "jouled.service").read_text()
    lines = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    for need in ("DevicePolicy=closed", "DeviceAllow=char-nvidia-frontend rw", "DeviceAllow=char-nvidia-uvm rw",
                 "DeviceAllow=char-usb rw", "DeviceAllow=char-usb_device rw", "DeviceAllow=char-ttyUSB rw",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "AmbientCapabilities=CAP_DAC_READ_SEARCH",
                 "CapabilityBoundingSet=CAP_DAC_READ_SEARCH", "ProtectProc=invisible", "MemoryDenyWriteExecute=yes",
                 "SystemCallFilter=@system-service", "Type=notify", "ProtectHome=yes"):
        assert need in lines, need
    # PrivateDevices would hide the GPUs, PrivateUsers the capability's effect on RAPL, ProcSubset=pid NVML's /proc
    for never in ("PrivateDevices=yes", "PrivateUsers=yes", "ProcSubset=pid", "CPUSchedulingPolicy=idle"):
        assert never not in lines, never
    # every setting of [Service] sits under a comment that says why (a comment at most a few lines above it)
    body = text.split("[Service]", 1)[1].split("[Install]", 1)[0].splitlines()
    last_comment = -100
    for i, line in enumerate(body):
        if line.startswith("#"):
            last_comment = i
        elif line.strip() and line.split("=", 1)[0] not in ("ExecStart", "Restart", "RestartSec", "WatchdogSec",
                                                            "TimeoutStopSec", "NotifyAccess"):
            assert i - last_comment <= 8, f"no comment near: {line}"


def test_documentation_points_to_the_installed_readme(tmp_path: Path) -> None:
    _install(tmp_path)
    unit = (tmp_path / UNIT).read_text()
    assert f"Documentation=file:///{DOC}" in unit and "@DOC@" not in unit and "@JOULED@" not in unit
    assert (tmp_path / DOC).read_text().startswith("# jouled")


MDWE_CHILD = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("MDWE-UNSUPPORTED"); sys.exit(0)
# from here on no memory can become writable and executable: what MemoryDenyWriteExecute=yes enforces
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("MDWE-NOT-ENFORCED"); sys.exit(0)
except OSError:
    pass
from tests.faults.mdwe_daemon import main
main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def test_daemon_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """The daemon (sources, sampler, SQLite, embedded broker, a marker, /metrics) under the kernel's W^X
    (PR_SET_MDWE, Linux >= 6.3): the same rule MemoryDenyWriteExecute=yes sets, so the unit's line is safe."""
    from tests.brokers import free_port

    res = subprocess.run([sys.executable, "-c", MDWE_CHILD, str(tmp_path / "log.db"), str(free_port()), str(free_port())],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    if "MDWE-UNSUPPORTED" in res.stdout:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    if "MDWE-NOT-ENFORCED" in res.stdout:
        pytest.skip("PR_SET_MDWE accepted but not enforced here")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "MDWE-OK" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
