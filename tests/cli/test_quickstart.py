"""The README's quick start as a new user types it: the installed `jouled` as a subprocess, a fresh HOME and XDG
dirs, an 80-column terminal. Nothing may print a traceback; errors are one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _jouled() -> Path:
    for exe in (REPO / ".venv" / "bin" / "jouled", Path(sys.executable).parent / "jouled"):
        if exe.is_file():
            return exe
    pytest.skip("no installed jouled (run make test)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """The environment of a new user: nothing of ours set, HOME and XDG under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULED_")}
    h = tmp_path / "home"
    env.update(HOME=str(h), XDG_DATA_HOME=str(h / ".local/share"), XDG_STATE_HOME=str(h / ".local/state"),
               XDG_CONFIG_HOME=str(h / ".config"), XDG_CACHE_HOME=str(h / ".cache"), COLUMNS="80", TERM="dumb",
               # the embedded broker's default 1883 may be taken by another test or a system mosquitto
               JOULED_MQTT_EMBEDDED_PORT=str(_free_port()))
    h.mkdir()
    return env


def sh(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(_jouled()), *args], env=env, cwd=env["HOME"], capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    assert "Traceback" not in res.stdout + res.stderr, f"jouled {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


def test_version_help_sources(home: dict[str, str]) -> None:
    res = sh(home, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"jouled {metadata.version('jouled')}"
    for flag in ("-h", "--help"):
        res = sh(home, flag)
        assert res.returncode == 0 and "Usage: jouled" in res.stdout and "sources" in res.stdout
    res = sh(home, "sources")
    assert res.returncode == 0, res.stderr
    assert "estimate" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


def test_run_then_status_then_energy_runs(home: dict[str, str]) -> None:
    res = sh(home, "run", "--duration", "3", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    data = Path(home["XDG_DATA_HOME"]) / "jouled"
    db, status_file = data / "jouled.db", data / "jouled.status.json"
    assert db.is_file() and db.stat().st_size > 0
    assert json.loads(status_file.read_text())["store"]["written"] > 0  # it sampled (the estimate source at least)

    res = sh(home, "status")  # the daemon is gone: its last status, with or without exit 1 and a one-line note
    assert res.returncode in (0, 1), res.stdout + res.stderr
    assert "estimate" in res.stdout + res.stderr

    res = sh(home, "energy", "runs")  # no markers yet: one line that says so, not an empty table or a traceback
    assert res.returncode == 2, res.stdout + res.stderr
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("Error: ") and "marker" in err[0], res.stderr


def test_install_completion_bash(home: dict[str, str]) -> None:
    res = sh(home, "--install-completion", "bash")
    assert res.returncode == 0, res.stdout + res.stderr
    script = Path(home["HOME"]) / ".bash_completions" / "jouled.sh"
    assert script.is_file() and "complete" in script.read_text()
    assert str(script) in res.stdout
    # the installed script's protocol answers: completing `jouled ener` gives `energy`
    env = {**home, "_JOULED_COMPLETE": "complete_bash", "COMP_WORDS": "jouled ener", "COMP_CWORD": "1"}
    res = sh(env, timeout=30)
    assert res.returncode == 0 and res.stdout.split() == ["energy"], res.stdout + res.stderr
