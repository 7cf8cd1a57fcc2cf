"""Calibration math (jouled.quality.calibfit) and its file (calibstore) on hand-computed inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jouled.errors import UserError
from jouled.quality import calibstore
from jouled.quality.calibfit import (
    FALLBACK_UNCAPTURED_FRACTION,
    Fit,
    PhasePoint,
    UncapturedModel,
    busy_candidate_w,
    fit_calibration,
    fit_uncaptured,
    holistic_window,
    line_fit,
    proxy_util,
)


def point(load: str, u: float, gpu_w: float = 0.0, *, extra_w: float = 0.0, duty: float = 1.0,
          wall: bool = True) -> PhasePoint:
    """A machine with package 20 + 60u W, DRAM 4 + 6u W, uncaptured 30 + 25u + 0.05·P_gpu W (+ extra_w)."""
    cpu, dram = 20 + 60 * u, 4 + 6 * u
    unc = 30 + 25 * u + 0.05 * gpu_w + extra_w
    return PhasePoint(f"calibrate:{load}", load, duty, 10.0, u, gpu_w, cpu, dram,
                      cpu + dram + gpu_w + unc if wall else None)


def test_line_fit_and_flat_x() -> None:
    assert line_fit([0, 1, 2], [1, 3, 5]) == pytest.approx((1.0, 2.0))
    assert line_fit([0.5, 0.52], [10, 20], min_spread=0.05) == (15.0, 0.0)  # too close to extrapolate


def test_uncaptured_model_recovers_known_coefficients() -> None:
    pts = [point("idle", 0.1), point("cpu-prime", 0.9), point("gpu-stress", 0.2, 300.0), point("gpu-stress", 0.3, 150.0)]
    m = fit_uncaptured(pts)
    assert m.features == ("util_cpu", "gpu_w")
    assert (m.intercept_w, m.per_util_w, m.per_gpu_w) == pytest.approx((30.0, 25.0, 0.05))
    assert m.power_w(0.5, 100.0) == pytest.approx(30 + 12.5 + 5)


def test_cpu_and_gpu_at_once_identify_their_interaction() -> None:
    def pt(load: str, u: float, g: float) -> PhasePoint:  # uncaptured 30 + 25u + 0.05·P_gpu − 0.02·u·P_gpu
        return PhasePoint(load, load, 1.0, 10.0, u, g, 50.0, 5.0, g + 55.0 + 30 + 25 * u + 0.05 * g - 0.02 * u * g)

    apart = [pt("idle", 0.0, 60.0), pt("cpu-prime", 1.0, 60.0), pt("gpu-stress", 0.05, 400.0),
             pt("gpu-stress", 0.05, 700.0)]
    assert fit_uncaptured(apart).features == ("util_cpu", "gpu_w")  # no phase loads both: no interaction term
    m = fit_uncaptured([*apart, pt("gpu+cpu", 0.5, 700.0), pt("gpu+cpu", 1.0, 700.0)])
    assert m.features == ("util_cpu", "gpu_w", "util_x_gpu_w")
    assert (m.intercept_w, m.per_util_w, m.per_gpu_w, m.per_util_gpu_w) == pytest.approx((30.0, 25.0, 0.05, -0.02))
    # a window: 10 s at u = 0.5 with 4000 J on the GPU → 300 + 125 + 200 − 0.02·0.5·4000 = 585 J
    fit = Fit(True, 54.0, 145.0, None, {}, {}, 24.0, 90.0, m)
    assert holistic_window(fit, 10.0, 4000.0, 0.0, 0.0, 0.5).uncaptured_j == pytest.approx(585.0)


def test_a_feature_that_did_not_vary_is_left_out() -> None:
    m = fit_uncaptured([point("idle", 0.0), point("cpu-prime", 1.0)])  # no GPU: its power never moved
    assert m.features == ("util_cpu",) and m.per_gpu_w == 0.0
    assert (m.intercept_w, m.per_util_w) == pytest.approx((30.0, 25.0))


def test_busy_candidate_extrapolates_to_full_utilisation() -> None:
    # the line through (0, 54 W) and (0.9, 135.9 W) reaches 54 + 81.9 / 0.9 = 145 W at u = 1
    assert busy_candidate_w(54.0, 0.0, 135.9, 0.9) == pytest.approx(145.0)
    assert busy_candidate_w(54.0, 0.5, 80.0, 0.5) == 80.0  # nothing to extrapolate from


def test_fit_calibration_on_a_linear_machine() -> None:
    pts = [point("idle", 0.1), point("cpu-prime", 0.9), point("cpu-prime", 0.5, duty=0.5), point("cpu-fma", 0.8),
           point("memory", 0.7)]
    fit = fit_calibration(pts)
    assert fit.calibrated
    # P_idle = package 20 + DRAM 4 + uncaptured 30 at u = 0; P_busy = 80 + 10 + 55 at u = 1
    assert fit.p_idle_w == pytest.approx(54.0) and fit.p_busy_w == pytest.approx(145.0)
    assert (fit.cpu_idle_w, fit.cpu_busy_w) == pytest.approx((24.0, 90.0))
    assert set(fit.busy_by_load_w) == {"cpu-prime", "cpu-fma", "memory"}  # the half-core phase only checks
    assert fit.model is not None and fit.model.per_util_w == pytest.approx(25.0)
    assert all(abs(r.time_varying_err_w) < 1e-9 and abs(r.static_err_w) < 1e-9 for r in fit.residuals)


def test_a_wall_meter_that_does_not_see_the_load_is_named() -> None:
    """The simulated WT310 answers 123.5 W whatever the load: a new user's calibration stored P_idle = P_busy and an
    uncaptured power falling with load as `(calibrated)`, without a word. Now the fit says why not to trust it."""
    pts = [dataclasses.replace(p, wall_w=123.5) for p in (point("idle", 0.1), point("cpu-prime", 0.9))]
    notes = fit_calibration(pts).notes
    assert any("the wall power did not follow the load (123.5-123.5 W" in n for n in notes)
    assert any("the uncaptured power falls as the CPU works" in n for n in notes)
    good = fit_calibration([point("idle", 0.1), point("cpu-prime", 0.9)]).notes
    assert not any("did not follow" in n or "falls" in n for n in good)


def test_best_load_is_the_one_whose_bound_errs_least() -> None:
    # idle 54 W at u = 0; prime 145 W and fma 136 W at u = 1 (fma 9 W below the line)
    pts = [point("idle", 0.0), point("cpu-prime", 1.0), point("cpu-fma", 1.0, extra_w=-9.0)]
    fit = fit_calibration(pts)
    assert fit.p_idle_w == pytest.approx(54.0)
    assert fit.busy_by_load_w == pytest.approx({"cpu-prime": 145.0, "cpu-fma": 136.0})
    # P_busy 145: worst phase fma, |145 − 136| / 136 = 6.618 %; P_busy 136: worst phase prime, 9 / 145 = 6.207 %
    assert fit.static_max_err_by_load_pct["cpu-prime"] == pytest.approx(900 / 136)
    assert fit.static_max_err_by_load_pct["cpu-fma"] == pytest.approx(900 / 145)
    assert fit.best_load == "cpu-fma" and fit.p_busy_w == pytest.approx(136.0)


def test_no_wall_meter_fits_the_cpu_only() -> None:
    fit = fit_calibration([point("idle", 0.0, wall=False), point("cpu-prime", 1.0, wall=False)])
    assert not fit.calibrated and fit.model is None and fit.p_idle_w is None
    assert (fit.cpu_idle_w, fit.cpu_busy_w) == pytest.approx((24.0, 90.0))
    assert "static fallback" in fit.notes[0]


def test_busy_machine_is_not_extrapolated() -> None:
    fit = fit_calibration([point("idle", 0.97), point("cpu-prime", 1.0)])
    assert fit.model is not None and fit.model.features == ()  # utilisation spread 3 %: no slope fitted
    assert any("hardly changed" in n for n in fit.notes)


def test_fit_needs_an_idle_phase() -> None:
    with pytest.raises(ValueError, match="idle"):
        fit_calibration([point("cpu-prime", 1.0)])


def _fit() -> Fit:
    return Fit(True, 54.0, 145.0, "cpu-prime", {"cpu-prime": 145.0}, {"cpu-prime": 0.0}, 24.0, 90.0,
               UncapturedModel(30.0, 25.0, 0.05, ("util_cpu", "gpu_w")))


def test_holistic_window_time_varying_static_and_pue() -> None:
    fit = _fit()
    # 10 s, GPU 2000 J, CPU 500 J, DRAM 80 J, u = 0.4: uncaptured 30·10 + 25·0.4·10 + 0.05·2000 = 500 J
    h = holistic_window(fit, 10.0, 2000.0, 500.0, 80.0, 0.4, pue=1.5)
    assert h.uncaptured_j == pytest.approx(500.0) and h.it_j == pytest.approx(3080.0)
    assert h.pue_overhead_j == pytest.approx(1540.0) and h.total_j == pytest.approx(4620.0)
    # static: (54 + 91·0.4) W · 10 s = 904 J for the machine without GPUs, minus CPU + DRAM 580 J
    s = holistic_window(fit, 10.0, 2000.0, 500.0, 80.0, 0.4, correction="static")
    assert s.uncaptured_j == pytest.approx(324.0) and s.pue_overhead_j == 0.0
    with pytest.raises(ValueError, match="pue"):
        holistic_window(fit, 10.0, 0, 0, 0, 0.0, pue=0.9)


def test_holistic_window_utilisation_from_the_rapl_line_and_fallback() -> None:
    fit = _fit()
    # CPU + DRAM 58 W on the line 24 → 90 W: u = 34 / 66
    h = holistic_window(fit, 10.0, 0.0, 500.0, 80.0, None)
    assert h.util_cpu == pytest.approx(34 / 66) and proxy_util(100.0, 24.0, 90.0) == 1.0
    f = holistic_window(None, 10.0, 900.0, 90.0, 10.0, None)
    assert f.uncaptured_j == pytest.approx(1000.0 * FALLBACK_UNCAPTURED_FRACTION)


def test_calibration_file_is_versioned_and_numbered(tmp_path: Path) -> None:
    path = calibstore.calibration_path(tmp_path / "log.db")
    assert path.name == "log.db.calibration.json" and calibstore.pick(path) is None

    def make(n: int) -> calibstore.Calibration:
        return calibstore.Calibration(n, calibstore.now_stamp(0), 0, calibstore.machine_identity(), "h", ["r"],
                                      "jouled", [], _fit())

    a, b = calibstore.append(path, make), calibstore.append(path, make)
    assert (a.id, b.id) == (1, 2)
    doc = json.loads(path.read_text())
    assert doc["format"] == "jouled-calibration" and doc["version"] == calibstore.VERSION
    assert doc["calibrations"][0]["machine"]["host"]
    got = calibstore.pick(path)
    assert got is not None and got.id == 2 and got.fit == b.fit
    assert calibstore.pick(path, 1) is not None
    with pytest.raises(UserError, match="#7"):
        calibstore.pick(path, 7)
    path.write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not a jouled calibration"):
        calibstore.read_all(path)


def test_calibration_math_does_no_io() -> None:
    """calibfit and cccorrect take numbers and give numbers: no store, file or network module, directly or through
    another jouled module (calibstore, holistic and the command are the readers and writers)."""
    from tests.test_import_rules import io_reached

    assert io_reached({"jouled.quality.calibfit", "jouled.quality.cccorrect"}) == []


def test_calibrate_plan() -> None:
    from jouled.calibrate_cli import plan

    cpu_only = plan(8, gpu=False)
    assert [p.name for p in cpu_only] == ["calibrate:idle", "calibrate:cpu-prime", "calibrate:cpu-prime@50",
                                          "calibrate:cpu-fma", "calibrate:memory"]
    assert [p.workers for p in cpu_only] == [0, 8, 4, 8, 8]
    assert [p.name for p in plan(1, gpu=False)][1:3] == ["calibrate:cpu-prime", "calibrate:cpu-fma"]  # no half of 1
    gpu = plan(8, gpu=True)[5:]
    assert [(p.name, p.load, p.duty, p.workers) for p in gpu] == [
        ("calibrate:gpu-stress@25", "gpu-stress", 0.25, 1), ("calibrate:gpu-stress@50", "gpu-stress", 0.5, 1),
        ("calibrate:gpu-stress@75", "gpu-stress", 0.75, 1), ("calibrate:gpu-stress@100", "gpu-stress", 1.0, 1),
        ("calibrate:gpu+cpu@50", "gpu+cpu", 1.0, 3), ("calibrate:gpu+cpu", "gpu+cpu", 1.0, 7)]
