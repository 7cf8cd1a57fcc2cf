"""The real `jouled` console script as a subprocess: run with the simulated WT310, status while it runs, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url
from tests.brokers import free_port

REPO = Path(__file__).resolve().parents[2]
JOULED = [shutil.which("jouled") or "", ] if shutil.which("jouled") else [sys.executable, "-m", "jouled.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"XDG_DATA_HOME": str(tmp_path / "data"), "JOULED_MQTT_EMBEDDED_PORT": str(free_port())})
    env.pop("JOULED_CONFIG", None)
    env.pop("JOULED_STORE", None)
    return env


def test_run_sim_meter_and_status(tmp_path: Path) -> None:
    pytest.importorskip("pyvisa_sim")
    env = _env(tmp_path)
    cfg = str(REPO / "systemd" / "jouled-wt310-sim.toml")
    p = subprocess.Popen([*JOULED, "run", "--config", cfg, "--duration", "6"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status_file = tmp_path / "data" / "jouled" / "jouled.status.json"
        deadline = time.monotonic() + 20
        while not status_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        st = subprocess.run([*JOULED, "status", "--config", cfg, "--format", "json"], env=env, capture_output=True,
                            text=True, timeout=30)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["running"] is True
        by = {s["name"]: s for s in status["sources"]}
        assert by["visa"]["state"] == "sampling" and by["visa"]["devices"] == ["wall"]
        assert by["estimate"]["state"] == "sampling"
        assert by["nvml"]["state"] == "unavailable" and "NVIDIA driver" in by["nvml"]["reason"]
        table = subprocess.run([*JOULED, "status", "--config", cfg], env=env, capture_output=True, text=True, timeout=30)
        assert "visa" in table.stdout and "estimate" in table.stdout
    finally:
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    db = tmp_path / "data" / "jouled" / "jouled.db"
    st2 = SqliteStore(db)
    wall = st2.read_series(SeriesKey(status["host"], "visa", "wall"))
    assert len(wall) > 30  # 10 Hz for ~6 s
    assert (wall.power_w > 0).all()
    assert wall.energy_j[-1] >= wall.energy_j[0]


def test_sigterm_flushes_and_exits_clean(tmp_path: Path) -> None:
    env = _env(tmp_path)
    db = tmp_path / "t.db"
    p = subprocess.Popen([*JOULED, "run", "--source", "estimate", "--rate", "20", "--store", sqlite_url(db)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    p.terminate()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err[-2000:]
    st = SqliteStore(db)
    n = sum(len(st.read_series(k)) for k in st.series())
    status = json.loads((tmp_path / "t.status.json").read_text())
    assert n == status["store"]["written"] and n > 20  # every reading taken was flushed before exit


def test_unknown_source_and_unwritable_store(tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = subprocess.run([*JOULED, "run", "--source", "gpu-magic", "--duration", "1"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown source 'gpu-magic'" in r.stderr and "Traceback" not in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([*JOULED, "run", "--duration", "1", "--store", sqlite_url(blocker / "sub" / "x.db")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "writable" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
