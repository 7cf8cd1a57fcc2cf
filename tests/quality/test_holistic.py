"""Holistic energy from the series' roles on a real SQLite log with known truth (tests/quality/trace.py): each GPU once
(NVML, not nvidia-smi beside it), RAPL packages but not their cores, DRAM declared by an unfamiliar source, the wall
meter beside; the uncaptured term by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.config import Config
from jouled.holistic import holistic_rows
from jouled.model import Sample
from jouled.quality import calibstore
from jouled.quality.calibfit import Fit, UncapturedModel
from jouled.series import SeriesMeta
from jouled.store.sqlite import SeriesKey, SqliteStore

from .trace import make_store, ns


def _log(tmp_path: Path) -> Path:
    db = tmp_path / "j.db"
    make_store(db)
    st = SqliteStore(db)
    # a DRAM reading from a source whose name says nothing (its declaration does), and a RAPL core domain (inside the
    # package: never added)
    st.write_samples([Sample(ns(float(i)), "h", "bmc", "mem0", 10.0, None) for i in range(21)]
                     + [Sample(ns(float(i)), "h", "rapl", "core-0", None, 30.0 * i) for i in range(21)])
    st.declare_series({SeriesKey("h", "bmc", "mem0"): SeriesMeta(role="dram", device="mem0", power_period_s=1.0)},
                      ns(-10.0))
    st.close()
    return db


def _calibration(db: Path, host: str = "h") -> calibstore.Calibration:
    fit = Fit(True, 54.0, 145.0, "cpu-prime", {"cpu-prime": 145.0}, {"cpu-prime": 0.0}, 24.0, 90.0,
              UncapturedModel(30.0, 25.0, 0.05, ("util_cpu", "gpu_w")))
    return calibstore.append(calibstore.calibration_path(db), lambda n: calibstore.Calibration(
        n, calibstore.now_stamp(0), 0, {}, host, ["calibrate-x"], "jouled", [], fit))


def test_components_by_role_and_uncaptured_by_hand(tmp_path: Path) -> None:
    db = _log(tmp_path)
    cal = _calibration(db)
    st = SqliteStore(db, readonly=True)
    try:
        rows, _problems = holistic_rows(st, Config(), "r1", ("epoch",), cal)
    finally:
        st.close()
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    e2 = rows[2]  # [2.5, 10] s: NVML 100 W, RAPL package 50 W, DRAM 10 W, wall 300 W
    assert e2["devices"] == ["nvml:gpu0", "rapl:package-0", "bmc:mem0"]
    assert e2["gpu_j"] == pytest.approx(750.0) and e2["cpu_j"] == pytest.approx(375.0)
    assert e2["dram_j"] == pytest.approx(75.0) and e2["wall_j"] == pytest.approx(2250.0)
    # no utilisation logged: read off the RAPL line, (450 J / 7.5 s − 24 W) / 66 W = 0.5454…
    u = (60.0 - 24.0) / 66.0
    assert e2["util_cpu"] == pytest.approx(u) and e2["util_from"] == "rapl-line"
    assert e2["uncaptured_j"] == pytest.approx(30 * 7.5 + 25 * u * 7.5 + 0.05 * 750)
    assert e2["holistic_j"] == pytest.approx(750 + 375 + 75 + e2["uncaptured_j"])
    assert e2["error_vs_wall_pct"] == pytest.approx((e2["holistic_j"] - 2250) / 2250 * 100)
    assert e2["calibration"] == cal.label and e2["correction"] == "time-varying"
    # the flags of the rows counted: the 1 Hz DRAM integral has 8 samples (`sparse`); nvidia-smi's beside NVML (also
    # sparse) is not counted, so its flags are not the window's
    assert e2["flags"] == ["sparse"]


def test_pue_and_a_calibration_of_another_host(tmp_path: Path) -> None:
    db = _log(tmp_path)
    cal = _calibration(db, host="elsewhere")
    cfg = Config()
    cfg.holistic.pue = 1.25
    st = SqliteStore(db, readonly=True)
    try:
        rows, _ = holistic_rows(st, cfg, "r1", ("run",), cal)
    finally:
        st.close()
    (r,) = rows
    assert r["pue_overhead_j"] == pytest.approx(0.25 * r["it_j"]) and r["holistic_j"] == pytest.approx(1.25 * r["it_j"])
    assert r["error_vs_wall_pct"] == pytest.approx((r["it_j"] - r["wall_j"]) / r["wall_j"] * 100)  # IT vs the meter
    assert "calibrated-on:elsewhere" in r["flags"]


def test_without_calibration_the_static_fallback_is_labelled(tmp_path: Path) -> None:
    db = _log(tmp_path)
    st = SqliteStore(db, readonly=True)
    try:
        rows, _ = holistic_rows(st, Config(), "r1", ("epoch",), None)
    finally:
        st.close()
    r = rows[2]
    assert r["correction"] == "static fallback" and "static fallback" in r["calibration"]
    assert r["uncaptured_j"] == pytest.approx((750 + 375 + 75) * (1 / 0.9 - 1))


def test_the_table_keeps_the_phase_at_80_columns_and_drops_a_gpu_column_of_zeros(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from jouled.holistic import print_holistic

    monkeypatch.setenv("COLUMNS", "80")
    row = {"run": "cal", "scope": "phase", "epoch": 1, "phase": "calibrate:cpu-prime", "duration_s": 2.0,
           "gpu_j": 0.0, "cpu_j": 160.0, "dram_j": 20.0, "uncaptured_j": 110.0, "pue": 1.0, "pue_overhead_j": 0.0,
           "holistic_j": 290.0, "wall_j": 292.0, "error_vs_wall_pct": -0.7, "flags": [], "calibration": "calibration #1",
           "correction": "time-varying", "util_from": "logged"}
    print_holistic([row, {**row, "epoch": 2, "phase": "calibrate:memory"}], "holistic energy")
    out = capsys.readouterr().out
    assert "phase" in out and "calibrate:cpu-prime" in out and "calibrate:memory" in out
    assert "hidden at 80 columns" in out and "GPU" in out.split("hidden at 80 columns")[1]
