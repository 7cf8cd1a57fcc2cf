"""The one intensity step-series type (jouled.carbon.series.IntensitySeries): hand-computed values, additivity and
the constant case as properties, agreement with the energy math's ∫ P·CI dt, trace loading exact to the ns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.carbon.base import CarbonReading
from jouled.carbon.series import J_PER_KWH, IntensitySeries
from jouled.carbon.trace import Trace, load_trace
from jouled.energy import SeriesArrays, window_carbon_many
from jouled.model import CarbonPoint

S = 1_000_000_000


def _steps(values: list[float], step_s: float = 1800.0, t0_s: float = 0.0) -> IntensitySeries:
    return IntensitySeries.from_seconds(t0_s + step_s * np.arange(len(values)), values)


def test_hand_computed_values_and_integrals() -> None:
    s = _steps([100.0, 300.0, 50.0])  # 100 on [0, 1800), 300 on [1800, 3600), 50 from 3600 (end 5400)
    assert s.at(0) == 100 and s.at(1799.9) == 100 and s.at(1800) == 300 and s.at(5000) == 50
    assert s.at(-10) == 100 and s.at(1e6) == 50  # extended both ways
    assert s.integral_s(900, 2700) == pytest.approx(100 * 900 + 300 * 900)
    assert s.integral_s(0, 5400) == pytest.approx(100 * 1800 + 300 * 1800 + 50 * 1800)
    assert s.integral_s(-600, 0) == pytest.approx(100 * 600) and s.integral_s(6000, 6600) == pytest.approx(50 * 600)
    assert s.integral_s(2700, 900) == 0.0
    # 200 W from 900 s to 2700 s: 200 W x (100 x 900 + 300 x 900) g/kWh.s / 3.6e6 J/kWh = 20 g
    assert s.carbon_g(900, 2700, 200.0) == pytest.approx(20.0)
    assert s.start_s == 0 and s.step_s == 1800 and s.end_s == 5400
    assert s.index_at(5399) == 2
    with pytest.raises(ValueError):
        s.index_at(5400)  # a trace does not cover its end
    with pytest.raises(ValueError):
        s.index_at(-1)


def test_windows_trailing_and_ahead() -> None:
    s = _steps([100.0, 300.0, 50.0, 400.0])
    assert list(s.window(1800, 5400).g_per_kwh) == [300, 50]  # [a, b)
    assert list(s.upto(3600).g_per_kwh) == [100, 300, 50]  # time ≤ now
    assert list(s.trailing(3600, 3600)) == [300, 50]  # (now − window, now]
    assert s.trailing_range(3600, 3600, 20.0) == (20.0, 300.0)  # the current value counts
    assert np.isnan(s.trailing_range(-1, 10)[0])
    t, v = s.ahead(1800, 3600)  # (now, now + horizon)
    assert list(t) == [3600] and list(v) == [50]


def test_constructors() -> None:
    c = IntensitySeries.constant(250.0)
    assert c.at(-1e9) == 250 and c.at(1e12) == 250 and c.carbon_g(0, 3600, 1000.0) == pytest.approx(250.0)
    pts = [CarbonPoint(2 * S, "DE", "x", 2.0), CarbonPoint(1 * S, "DE", "x", 1.0)]
    p = IntensitySeries.from_points(pts)
    assert list(p.time_ns) == [S, 2 * S] and list(p.g_per_kwh) == [1, 2]  # sorted
    rs = [CarbonReading(5 * S, "DE", "x", 3.0), CarbonReading(6 * S, "DE", "x", None, percentile=40)]
    assert list(IntensitySeries.from_points(rs).g_per_kwh) == [3.0]  # index-only readings carry no g/kWh
    assert len(IntensitySeries.empty()) == 0
    with pytest.raises(ValueError):
        IntensitySeries(np.zeros(2, dtype=np.int64), np.zeros(3))
    with pytest.raises(ValueError):
        IntensitySeries.empty().at(0)


_values = st.lists(st.floats(0.0, 2000.0, allow_nan=False), min_size=1, max_size=30)
_times = st.floats(-20_000.0, 80_000.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(_values, st.floats(60.0, 7200.0), _times, _times, _times)
def test_integral_is_additive(values: list[float], step_s: float, a: float, b: float, c: float) -> None:
    """∫[a,c] = ∫[a,b] + ∫[b,c] for a ≤ b ≤ c, wherever they fall (inside, before, after the points)."""
    a, b, c = sorted((a, b, c))
    s = _steps(values, step_s)
    scale = max(values) * (c - a) + 1.0
    assert s.integral_s(a, c) == pytest.approx(s.integral_s(a, b) + s.integral_s(b, c), abs=1e-9 * scale)
    assert s.integral_s(a, c) >= -1e-9 * scale  # intensities are ≥ 0


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 2000.0), st.floats(0.0, 5000.0), _times, st.floats(0.0, 50_000.0), st.integers(1, 20))
def test_constant_series_is_power_times_intensity_times_time(ci: float, power_w: float, a: float, dt: float,
                                                              n: int) -> None:
    """A series whose every step has the same value gives P x CI x dt, however many steps it has."""
    s = _steps([ci] * n, 900.0)
    want = power_w * ci * dt / J_PER_KWH
    assert s.carbon_g(a, a + dt, power_w) == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(_values, st.floats(0.0, 1000.0), st.integers(0, 40_000), st.integers(1, 40_000))
def test_agrees_with_the_energy_math(values: list[float], power_w: float, a_s: int, dt_s: int) -> None:
    """The energy math's ∫ P·CI dt over measured power (here constant, sampled each second) equals
    P x ∫ CI dt from the series: two integrators of the same step function."""
    s = _steps(values, 1800.0)
    t = np.arange(a_s - 1, a_s + dt_s + 2, dtype=np.int64) * S
    series = SeriesArrays(t, np.full(t.shape, power_w), np.full(t.shape, np.nan), "x", "0", 1.0)
    got = float(window_carbon_many(series, s, [a_s * S], [(a_s + dt_s) * S])[0])
    assert got == pytest.approx(s.carbon_g(a_s, a_s + dt_s, power_w), rel=1e-9, abs=1e-9)


def test_trace_is_a_series_exact_to_the_ns(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("time,intensity_g_per_kwh\n1640995200123456789,100\n1640997000000000001,200\n")
    tr = load_trace(f)
    assert isinstance(tr, IntensitySeries) and isinstance(tr, Trace)
    assert list(tr.time_ns) == [1640995200123456789, 1640997000000000001]  # integer ns kept, not via float seconds
    assert list(tr.g_per_kwh) == [100, 200] and tr.at(1640996000.0) == 100
