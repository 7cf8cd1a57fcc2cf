"""Carbon of a window: ∫ P(t)·CI(t) dt with a step-function intensity (jouled/energy.py)."""

from __future__ import annotations

import numpy as np
import pytest

from jouled.carbon.series import IntensitySeries
from jouled.energy import J_PER_KWH, SeriesArrays, window_carbon_g, window_carbon_many
from jouled.model import CarbonPoint

S = 1_000_000_000
T11 = np.arange(11, dtype=np.int64) * S


def test_constant_intensity_is_energy_times_intensity() -> None:
    g = window_carbon_g(T11, np.full(11, 360.0), None, [0], [250.0], S, 9 * S)
    # 360 W × 8 s = 2880 J = 0.0008 kWh, × 250 g/kWh
    assert g == pytest.approx(2880.0 / J_PER_KWH * 250.0)


def test_one_point_series_holds_before_its_own_time() -> None:
    g = window_carbon_g(T11, np.full(11, 360.0), None, [10**18], [100.0], 0, 10 * S)
    assert g == pytest.approx(3600.0 / J_PER_KWH * 100.0)


def test_intensity_step_inside_the_window() -> None:
    p = 10.0 * np.arange(11)  # ramp P = 10 t
    ci_t = np.array([0, 4 * S], dtype=np.int64)
    ci = np.array([100.0, 400.0])
    g = window_carbon_g(T11, p, None, ci_t, ci, 2 * S, 6 * S)
    # ∫_2^4 10t dt = 60 J at 100 g/kWh, ∫_4^6 10t dt = 100 J at 400 g/kWh
    assert g == pytest.approx((60.0 * 100.0 + 100.0 * 400.0) / J_PER_KWH)


def test_counter_only_derives_power_from_differences() -> None:
    e = np.array([0, 100, 300, 600, 1000, 1500, 2100, 2800, 3600, 4500, 5500], dtype=np.float64)
    ci_t = np.array([0, int(2.5 * S)], dtype=np.int64)
    g = window_carbon_g(T11, None, e, ci_t, np.array([200.0, 50.0]), S, 4 * S)
    # 1 → 2 s: 200 J; 2 → 2.5 s: half of 300 J; at 200 g/kWh. 2.5 → 3: 150 J; 3 → 4: 400 J at 50.
    assert g == pytest.approx(((200 + 150) * 200.0 + (150 + 400) * 50.0) / J_PER_KWH)


def test_unsorted_intensity_and_many_steps() -> None:
    rng = np.random.default_rng(3)
    ci_t = np.arange(0, 10, 0.5)  # 0 … 9.5 s: 20 half-second steps
    ci = rng.uniform(20, 800, ci_t.size)
    order = rng.permutation(ci_t.size)
    p = np.full(11, 720.0)
    g = window_carbon_g(T11, p, None, (ci_t[order] * S).astype(np.int64), ci[order], 0, 10 * S)
    expected = sum(720.0 * 0.5 * c for c in ci) / J_PER_KWH  # each half-second at its own intensity
    assert g == pytest.approx(expected)


def test_no_data_or_no_intensity_gives_none() -> None:
    assert window_carbon_g(T11, np.full(11, 1.0), None, [], [], 0, S) is None
    assert window_carbon_g(T11, np.full(11, 1.0), None, [0], [np.nan], 0, S) is None
    assert window_carbon_g(T11, np.full(11, 1.0), None, [0], [100.0], 20 * S, 30 * S) is None


def test_carbon_many_and_series_constructors() -> None:
    series = SeriesArrays(T11, np.full(11, 36.0), np.full(11, np.nan), "rapl", "package-0", 1.0)
    pts = [CarbonPoint(0, "DE", "trace", 100.0), CarbonPoint(5 * S, "DE", "trace", 300.0)]
    grams = window_carbon_many(series, IntensitySeries.from_points(pts), [0, 4 * S], [10 * S, 6 * S])
    assert grams[0] == pytest.approx((180.0 * 100 + 180.0 * 300) / J_PER_KWH)
    assert grams[1] == pytest.approx((36.0 * 100 + 36.0 * 300) / J_PER_KWH)
    const = window_carbon_many(series, IntensitySeries.constant(300.0), [0], [10 * S])
    assert const[0] == pytest.approx(360.0 * 300 / J_PER_KWH)
