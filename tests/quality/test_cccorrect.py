"""CodeCarbon's correction (jouled.quality.cccorrect) on hand-computed inputs: alignment with the epochs, both
corrections, errors against the meter."""

from __future__ import annotations

import math

import pytest

from jouled.quality.calibfit import Fit, UncapturedModel
from jouled.quality.cccorrect import align_offset_ns, correct_codecarbon, shift_intervals
from jouled.quality.compare import EpochWindow, Interval

S = 1_000_000_000


def test_alignment_finds_the_whole_second_truncation() -> None:
    # epochs [0, 2] [2, 5] [5, 9] s; CodeCarbon's interval ends stamped 0.7 s early (whole seconds, local clock)
    edges = [0, 2 * S, 5 * S, 9 * S]
    ivs = [Interval(-700_000_000 + a, -700_000_000 + b, 1.0) for a, b in ((0, 2 * S), (2 * S, 5 * S), (5 * S, 9 * S))]
    shift = align_offset_ns(ivs, edges)
    assert shift == 700_000_000
    moved = shift_intervals({"total": ivs}, shift)["total"]
    assert [(iv.start_ns, iv.end_ns) for iv in moved] == [(0, 2 * S), (2 * S, 5 * S), (5 * S, 9 * S)]
    assert align_offset_ns(ivs, []) == 0 and align_offset_ns([], edges) == 0
    far = [Interval(60 * S, 70 * S, 1.0)]  # nothing within 2 s: left where it is
    assert align_offset_ns(far, edges) == 0


def test_both_corrections_by_hand() -> None:
    fit = Fit(True, 54.0, 145.0, "cpu-prime", {"cpu-prime": 145.0}, {"cpu-prime": 0.0}, 24.0, 90.0,
              UncapturedModel(30.0, 25.0, 0.05, ("util_cpu", "gpu_w")))
    windows = [EpochWindow(0, None, 0, 10 * S), EpochWindow(1, None, 10 * S, 20 * S)]
    # epoch 0: CodeCarbon 1200 J total, 1000 J GPU, u = 0.5; epoch 1: no GPU figure (NaN: 0 J), u unknown (idle)
    corr = correct_codecarbon(windows, [2000.0, 600.0], [1200.0, 300.0], [1000.0, math.nan], [0.5, None], fit,
                              shift_s=0.7, calibration="calibration #1")
    # static: GPU + (54 + 91·0.5)·10 = 1000 + 995; epoch 1: 54·10 = 540
    assert corr.energy_j["codecarbon+static"] == pytest.approx([1995.0, 540.0])
    # time-varying: GPU 1000 + CPU line (24 + 66·0.5)·10 = 570 + uncaptured 300 + 125 + 50 = 2045; epoch 1: 240 + 300
    assert corr.energy_j["codecarbon+time-varying"] == pytest.approx([2045.0, 540.0])
    assert corr.error_pct("codecarbon") == pytest.approx([-40.0, -50.0])
    assert corr.max_abs_error_pct("codecarbon") == pytest.approx(50.0)
    assert corr.max_abs_error_pct("codecarbon+time-varying") == pytest.approx(10.0)  # 540 vs 600
    d = corr.to_dict()
    assert d["aligned_shift_s"] == 0.7 and d["max_abs_error_pct"]["codecarbon+static"] == pytest.approx(10.0)


def test_uncalibrated_fit_gives_no_correction() -> None:
    fit = Fit(False, None, None, None, {}, {}, 24.0, 90.0, None)
    corr = correct_codecarbon([EpochWindow(0, None, 0, S)], [100.0], [50.0], [0.0], [0.2], fit)
    assert math.isnan(corr.energy_j["codecarbon+static"][0]) and corr.max_abs_error_pct("codecarbon+static") is None
