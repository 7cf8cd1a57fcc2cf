"""`jouled calibrate` and `jouled energy --holistic` end to end: a real daemon (`jouled run`) sampling a fake RAPL tree
and a SCPI wall meter on a real TCP socket whose power follows a known model of the machine's real CPU utilisation
(tests/quality/calib_rig.py), real load processes, markers over the daemon's broker; the calibration must recover
the known uncaptured power and P_idle/P_busy, survive an interruption, and make holistic energy match the meter; the
real CodeCarbon offline tracker runs beside the training, and its corrected figures are checked against the meter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jouled.config import load_config
from tests.faults.procs import env_for, wait_until
from tests.quality import calib_rig
from tests.quality.calib_rig import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path).start()
    yield r
    r.stop()


def jouled(args: list[str], env: dict[str, str], timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jouled", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def codecarbon_tracker(out: Path) -> Any:
    """CodeCarbon's offline tracker (the codecarbon extra), measuring every second, writing emissions.csv to `out`."""
    codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra: pip install 'jouled[codecarbon]'")
    out.mkdir()
    return codecarbon.OfflineEmissionsTracker(country_iso_code="DEU", measure_power_secs=1, save_to_file=True,
                                              output_dir=str(out), log_level="error", tracking_mode="machine")


def truth_nongpu_w(u: float) -> float:
    """The rig's machine without GPUs at utilisation u: package + DRAM + uncaptured."""
    return calib_rig.P_IDLE_W + (calib_rig.P_BUSY_W - calib_rig.P_IDLE_W) * u


def test_calibrate_resumes_recovers_the_machine_and_holistic_matches_the_meter(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(rig.config_text())
    env = env_for(tmp_path, COLUMNS="200")
    db = tmp_path / "log.db"
    args = ["calibrate", "--config", str(cfg), "--store", f"sqlite:///{db}", "--phase-s", "2", "--settle-s", "0.5",
            "--no-stress-ng"]
    state = db.with_name("log.db.calibrate-state.json")

    # interrupted after two phases (Ctrl-C): the done phases are kept, the second call goes on from there
    p = subprocess.Popen([sys.executable, "-m", "jouled", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: state.exists() and len(json.loads(state.read_text())["phases"]) >= 2, 120, "two phases")
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted: 2 of 5 phases done" in err
    second = jouled([*args, "--format", "json"], env)
    assert second.returncode == 0, second.stderr
    assert "resuming the calibration" in second.stderr and "2 of 5 phases done" in second.stderr
    assert not state.exists()
    cal = json.loads(second.stdout)
    assert cal["id"] == 1 and cal["host"] == "rig" and len(cal["runs"]) == 2  # two sessions, one calibration
    assert [pt["phase"] for pt in cal["points"]] == ["calibrate:idle", "calibrate:cpu-prime", "calibrate:cpu-prime@50",
                                                      "calibrate:cpu-fma", "calibrate:memory"]
    assert cal["tool"] == "jouled" and cal["machine"]["cpu_count"] == os.cpu_count()
    fit = cal["fit"]
    assert fit["calibrated"] and fit["best_load"] in ("cpu-prime", "cpu-fma", "memory")
    model = fit["model"]
    for pt in cal["points"]:
        u = pt["util_cpu"]
        # the RAPL tree and the meter as the rig drove them, read back through the daemon's log
        assert pt["cpu_w"] == pytest.approx(calib_rig.PKG_IDLE_W + calib_rig.PKG_SPAN_W * u, abs=5.0), (
            f"{pt}: the rig's longest gap between counter updates was {rig.max_tick_gap_s:.3f} s")
        assert pt["wall_w"] == pytest.approx(truth_nongpu_w(u), rel=0.04)
        # the uncaptured model and the static P_idle/P_busy line give the known truth at the utilisation each phase had
        unc = model["intercept_w"] + model["per_util_w"] * u
        assert unc == pytest.approx(calib_rig.UNC_W + calib_rig.UNC_UTIL_W * u, abs=3.0)
        static = fit["p_idle_w"] + (fit["p_busy_w"] - fit["p_idle_w"]) * u
        assert static == pytest.approx(truth_nongpu_w(u), rel=0.03)
    utils = [pt["util_cpu"] for pt in cal["points"]]
    if max(utils) - min(utils) >= 0.3:  # the loads moved the machine's utilisation: the slopes are identified too
        assert fit["p_idle_w"] == pytest.approx(calib_rig.P_IDLE_W, rel=0.08)
        assert fit["p_busy_w"] == pytest.approx(calib_rig.P_BUSY_W, rel=0.05)
        assert model["per_util_w"] == pytest.approx(calib_rig.UNC_UTIL_W, abs=6.0)
    table = jouled(["calibrate", "--help"], env)
    assert table.returncode == 0

    # a training-like run measured by a fresh daemon: idle, one core, every core
    from jouled.daemonproc import start_child
    from jouled.quality.loads import start_load
    from jouled.trainer.markers import MarkerClient

    for k, v in env.items():
        if k.startswith("XDG"):
            monkeypatch.setenv(k, v)
    conf = load_config(cfg)
    link = start_child(conf, f"sqlite:///{db}", tmp_path / "work", config_file=cfg)
    tracker = codecarbon_tracker(tmp_path / "cc")  # the real CodeCarbon, on the CPU, beside the daemon
    tracker.start()
    try:
        client = MarkerClient(link.broker_url, host="rig", spool_path=tmp_path / "spool")
        run = client.run("train-1").start()
        time.sleep(0.5)
        for epoch, workers in enumerate((0, 1, os.cpu_count() or 1)):
            load = start_load("cpu-prime" if workers else "idle", workers, use_stress_ng=False)
            try:
                time.sleep(0.5)
                tracker.flush()  # a CodeCarbon row at each epoch edge: its intervals are the epochs and the gaps
                run.start_epoch(epoch)
                time.sleep(2.0)
                run.end_epoch(epoch)
                tracker.flush()
            finally:
                load.stop()
        run.end()
        assert client.close(timeout_s=10)
        time.sleep(1.0)
    finally:
        tracker.stop()
        link.close()
    out = jouled(["energy", "epochs", "--run", "train-1", "--holistic", "--format", "json", "--config", str(cfg),
                  "--store", f"sqlite:///{db}"], env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["calibration"].startswith("calibration #1 of rig") and r["correction"] == "time-varying"
        assert r["util_from"] == "logged"  # the CPU estimate source logs utilisation beside RAPL
        assert r["gpu_j"] == 0.0 and r["cpu_j"] > 0 and r["dram_j"] > 0 and r["wall_j"] > 0
        assert r["holistic_j"] == pytest.approx(r["gpu_j"] + r["cpu_j"] + r["dram_j"] + r["uncaptured_j"])
        assert abs(r["error_vs_wall_pct"]) <= 3.0, r  # the goal per epoch
    # CodeCarbon as it is, and corrected with the calibration, against the meter
    emissions = tmp_path / "cc" / "emissions.csv"
    out = jouled(["compare", "--run", "train-1", "--codecarbon", str(emissions), "--format", "json", "--config", str(cfg),
                  "--store", f"sqlite:///{db}"], env)
    assert out.returncode == 0, out.stderr
    corr = json.loads(out.stdout)["codecarbon_corrected"]
    assert corr["calibration"].startswith("calibration #1 of rig") and corr["epochs"] == [0, 1, 2]
    assert abs(corr["aligned_shift_s"]) <= 2.0
    worst = corr["max_abs_error_pct"]
    # CodeCarbon's own CPU and RAM figures know nothing of this machine; the calibrated machine does
    assert worst["codecarbon+time-varying"] <= 3.0 and worst["codecarbon+static"] <= 5.0, worst
    assert worst["codecarbon"] > worst["codecarbon+time-varying"], worst
    table = jouled(["compare", "--run", "train-1", "--codecarbon", str(emissions), "--config", str(cfg),
                    "--store", f"sqlite:///{db}"], env)
    assert table.returncode == 0 and "CodeCarbon corrected with calibration #1" in table.stdout
    assert "codecarbon+time-varying" in table.stdout and "max |err|" in table.stdout

    page = tmp_path / "report.html"
    rep = jouled(["report", "--run", "train-1", "--codecarbon", str(emissions), "-o", str(page), "--config", str(cfg),
                  "--store", f"sqlite:///{db}"], env)
    assert rep.returncode == 0, rep.stderr
    html = page.read_text()
    assert "<h2>Calibration</h2>" in html and "Calibration phases: wall power and the models" in html
    assert "calibration #1 of rig" in html and "calibrate:cpu-fma" in html and "P_idle" in html

    table = jouled(["energy", "runs", "--holistic", "--config", str(cfg), "--store", f"sqlite:///{db}"],
                   dict(env, JOULED_HOLISTIC_PUE="1.5"))
    assert table.returncode == 0, table.stderr
    assert "PUE overhead" in table.stdout and "uncaptured" in table.stdout and "calibration #1 of rig" in table.stdout
    assert "train-1" in table.stdout and "PUE 1.5" in table.stdout


def test_calibrate_without_a_wall_meter_says_what_it_cannot_do(rig: Rig, tmp_path: Path) -> None:
    cfg = tmp_path / "rapl.toml"
    cfg.write_text(rig.config_text().replace("[sources.visa]\nenabled = true", "[sources.visa]\nenabled = false"))
    env = env_for(tmp_path, COLUMNS="200")
    db = tmp_path / "log.db"
    out = jouled(["calibrate", "--config", str(cfg), "--store", f"sqlite:///{db}", "--phase-s", "1", "--settle-s",
                  "0.2", "--no-stress-ng"], env)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("no wall meter")]
    assert len(lines) == 1 and "cannot be calibrated" in lines[0] and "static fallback" in lines[0]
    assert "static fallback (no wall meter)" in out.stdout  # the stored calibration is labelled
    cal = json.loads(db.with_name("log.db.calibration.json").read_text())["calibrations"][0]
    assert not cal["fit"]["calibrated"] and cal["fit"]["model"] is None


def test_holistic_user_errors(tmp_path: Path) -> None:
    from tests.quality.trace import make_store

    url = make_store(tmp_path / "t.db")
    env = env_for(tmp_path)
    out = jouled(["energy", "epochs", "--run", "r1", "--holistic", "--store", url, "--calibration",
                  str(tmp_path / "none.json")], env)
    assert out.returncode != 0 and "--calibration" in out.stderr and "jouled calibrate" in out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    out = jouled(["energy", "epochs", "--run", "r1", "--holistic", "--store", url, "--calibration", str(bad)], env)
    assert out.returncode != 0 and "calibration file" in out.stderr
    out = jouled(["calibrate", "--store", "influx://localhost:8086/db"], env)
    assert out.returncode != 0 and "SQLite log" in out.stderr


def test_state_is_written_where_the_log_does_not_exist_yet(tmp_path: Path) -> None:
    """A first `jouled calibrate` on a new machine: the log's folder is created (it crashed with FileNotFoundError),
    and a folder that cannot be created is one line naming the file and the fix."""
    from jouled.calibrate_cli import _read_state, _write_state, state_path
    from jouled.errors import UserError

    spath = state_path(tmp_path / "new" / "jouled" / "jouled.db")
    _write_state(spath, {"version": 1, "phases": []})
    assert json.loads(spath.read_text())["phases"] == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"calibration state .*: cannot write .* choose a writable --store"):
        _write_state(state_path(blocker / "jouled.db"), {"version": 1})
    assert _read_state(tmp_path / "absent.json") is None
