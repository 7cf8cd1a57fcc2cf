"""jouled/entry.py: a plain `jouled run` starts the daemon without typer, click, rich or pydantic in the process (the
process that stays, as a service, for months); help and anything the fast parser does not take go to the typer CLI,
which gives the same help and the same one-line errors as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jouled.entry import _fast_run_args

CLI_ONLY = ("typer", "click", "rich", "pydantic")


def jouled(args: list[str], tmp_path: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOULED_CONFIG": "", "XDG_DATA_HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path),
           "COLUMNS": "80"}
    env.pop("JOULED_STORE", None)
    return subprocess.run([sys.executable, "-m", "jouled", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def test_fast_parser_takes_what_typer_takes_and_leaves_the_rest() -> None:
    ns = _fast_run_args(["--duration=5", "--rate", "20", "--source", "rapl", "--source", "nvml", "-v",
                         "--config", "/etc/j.toml", "--store", "sqlite:///x.db"])
    assert ns is not None
    assert (ns.duration, ns.rate, ns.source, ns.verbose, ns.config, ns.store) == (
        5.0, 20.0, ["rapl", "nvml"], True, "/etc/j.toml", "sqlite:///x.db")
    for argv in (["--help"], ["-h"], ["--duration", "abc"], ["--bogus"], ["--source"], ["extra"], ["--dur", "5"]):
        assert _fast_run_args(argv) is None, argv


def test_plain_run_loads_no_cli_framework(tmp_path: Path) -> None:
    # the daemon body swapped for a probe of what the process has imported by the time the daemon would start
    probe = (
        "import sys\n"
        "import jouled.runcmd as r\n"
        "def probe(**kw):\n"
        f"    print(sorted(m for m in {CLI_ONLY!r} if m in sys.modules), kw['duration'], kw['source'])\n"
        "r.run_daemon_command = probe\n"
        "sys.argv = ['jouled', 'run', '--duration', '2', '--source', 'estimate']\n"
        "from jouled.entry import main\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[] 2.0 ['estimate']"


@pytest.mark.parametrize(("args", "needle", "code"), [
    (["run", "--duration", "0"], "Error: --duration 0: must be > 0 seconds", 2),  # the fast path's UserError
    (["run", "--duration", "abc"], "Invalid value for '--duration'", 2),  # typer's own error
    (["run", "--bogus"], "No such option: --bogus", 2),
])
def test_errors_are_the_clis(tmp_path: Path, args: list[str], needle: str, code: int) -> None:
    res = jouled(args, tmp_path)
    assert res.returncode == code, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_run_help_is_typers(tmp_path: Path) -> None:
    res = jouled(["run", "--help"], tmp_path)
    assert res.returncode == 0 and "Run the daemon in the foreground" in res.stdout and "--duration" in res.stdout


def test_fast_run_samples_and_prints_its_status_table(tmp_path: Path) -> None:
    res = jouled(["run", "--duration", "2", "--source", "estimate", "--store", f"sqlite:///{tmp_path}/x.db"],
                 tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "estimate" in res.stdout and "uptime" in res.stdout  # the table, printed once the daemon stopped
