"""Allocation policies: hand-computed splits, boundaries, no future leakage, spec parsing, multi-zone placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.carbon.series import IntensitySeries
from jouled.errors import UserError
from jouled.scheduler.policies import (
    CenasPolicy,
    ForecastPolicy,
    OraclePolicy,
    RandomPolicy,
    Split,
    StaticPolicy,
    ThresholdPolicy,
    cenas_lambda,
    make_policy,
    place,
    split_from_lambda,
)

H = 3600.0


def hist(values: list[float], t0: float = 0.0, step: float = H) -> IntensitySeries:
    return IntensitySeries.from_seconds([t0 + i * step for i in range(len(values))], values)


def test_cenas_hand_computed() -> None:
    # past 100, 200, 300; now 150 → λ = (150 − 100) / (300 − 100) = 0.25 → 8 GPUs: round(2.0) = 2 sampling
    s = CenasPolicy().decide(2 * H + 60, 150.0, hist([100, 200, 300]), None, 8)
    assert s == Split(2, 6, 0.25, "")
    # λ = (250 − 100)/200 = 0.75 → 6 sampling, 2 evaluation
    s = CenasPolicy().decide(2 * H + 60, 250.0, hist([100, 200, 300]), None, 8)
    assert (s.gpus_sampling, s.gpus_evaluation, s.lambda_s) == (6, 2, 0.75)


def test_cenas_current_outside_the_window_range_clips() -> None:
    h = hist([100, 200, 300])
    low = CenasPolicy().decide(3 * H, 50.0, h, None, 8)
    high = CenasPolicy().decide(3 * H, 400.0, h, None, 8)
    assert (low.lambda_s, low.gpus_sampling, low.gpus_evaluation) == (0.0, 0, 8)
    assert (high.lambda_s, high.gpus_sampling, high.gpus_evaluation) == (1.0, 8, 0)
    assert cenas_lambda(-10, 0, 1) == 0.0 and cenas_lambda(10, 0, 1) == 1.0


def test_cenas_flat_and_empty_history_give_half() -> None:
    flat = CenasPolicy().decide(5 * H, 200.0, hist([200, 200, 200]), None, 8)
    assert (flat.lambda_s, flat.gpus_sampling, flat.gpus_evaluation) == (0.5, 4, 4)
    empty = CenasPolicy().decide(0.0, 321.0, IntensitySeries.empty(), None, 3)
    # round half up: 3 × 0.5 = 1.5 → 2 sampling (Python's round() would give 2 here but 0 for 0.5)
    assert (empty.lambda_s, empty.gpus_sampling, empty.gpus_evaluation) == (0.5, 2, 1)
    assert "no trailing history" in empty.note
    assert split_from_lambda(0.5, 1) == Split(1, 0, 0.5)


def test_cenas_window_is_trailing_24h_only() -> None:
    # a 1000 g value 25 h ago must not count; within 24 h the range is 100..300
    t = [0.0, 2 * H, 3 * H, 4 * H]
    h = IntensitySeries.from_seconds(t, [1000, 100, 200, 300])
    now = 25 * H + 1
    assert CenasPolicy().decide(now, 200.0, h, None, 10).lambda_s == pytest.approx(0.5)
    # with a 26 h window the 1000 is in: λ = (200 − 100)/(1000 − 100)
    assert CenasPolicy(window_s=26 * H).decide(now, 200.0, h, None, 10).lambda_s == pytest.approx(100 / 900)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 2000, allow_nan=False), min_size=1, max_size=48))
def test_cenas_has_no_future_leakage(future: list[float]) -> None:
    past = [300.0, 120.0, 450.0, 200.0, 380.0]
    now = 4 * H + 10
    base = CenasPolicy().decide(now, 250.0, hist(past), None, 8)
    with_future = hist(past + future)  # the simulator passes the whole trace
    assert CenasPolicy().decide(now, 250.0, with_future, None, 8) == base


def test_oracle_sees_the_future_and_says_so() -> None:
    past = [100.0, 300.0]
    now = 1 * H + 10
    a = OraclePolicy().decide(now, 200.0, hist(past), None, 8)
    b = OraclePolicy().decide(now, 200.0, hist([*past, 500.0]), None, 8)
    assert a.lambda_s == pytest.approx(0.5) and b.lambda_s == pytest.approx(0.25)
    assert "oracle" in b.note


def test_static_and_random() -> None:
    assert StaticPolicy(0.25).decide(0, 999.0, IntensitySeries.empty(), None, 8) == Split(2, 6, 0.25)
    assert StaticPolicy(1.0).decide(0, 1.0, IntensitySeries.empty(), None, 5) == Split(5, 0, 1.0)
    a = [RandomPolicy(7).decide(i, 100.0, IntensitySeries.empty(), None, 8) for i in range(1)]
    r1, r2, r3 = RandomPolicy(7), RandomPolicy(7), RandomPolicy(8)
    s1 = [r1.decide(i, 1.0, IntensitySeries.empty(), None, 8).lambda_s for i in range(20)]
    s2 = [r2.decide(i, 1.0, IntensitySeries.empty(), None, 8).lambda_s for i in range(20)]
    s3 = [r3.decide(i, 1.0, IntensitySeries.empty(), None, 8).lambda_s for i in range(20)]
    assert s1 == s2 and s1 != s3 and len(set(s1)) > 10
    assert all(0.0 <= x <= 1.0 for x in s1) and a[0].gpus_sampling + a[0].gpus_evaluation == 8


def test_threshold_percentile_of_trailing_window() -> None:
    h = hist([float(v) for v in range(1, 11)])  # 1..10, p30 = 3.7 (linear interpolation)
    now = 10 * H
    assert np.percentile(np.arange(1, 11), 30) == pytest.approx(3.7)
    p = ThresholdPolicy(30)
    below = p.decide(now, 3.6, h, None, 4)
    assert (below.gpus_sampling, below.gpus_evaluation, below.lambda_s) == (0, 4, 0.0)
    assert p.decide(now, 3.8, h, None, 4).gpus_evaluation == 0
    assert p.decide(now, 3.8, h, None, 4).gpus_sampling == 4
    # future values are ignored: past p30 of 1, 2, 10, 10, 10, 10 is 6 → evaluate; with the future zeros it would be 0.x
    assert p.decide(5 * H, 3.0, hist([1.0, 2.0, 10, 10, 10, 10, 0, 0, 0]), None, 4).gpus_evaluation == 4


def _fc(now: float, values: list[float], step: float = H) -> IntensitySeries:
    return IntensitySeries.from_seconds([now + (i + 1) * step for i in range(len(values))], values)


def test_forecast_policy_picks_cleanest_slots() -> None:
    now = 1000 * H
    # 23 future hours at 100..320 g, now at 150: with duty 0.25 → k = round(0.25·24) = 6 cleanest of 24 slots
    future = [100.0 + 10 * i for i in range(23)]  # 100..320
    p = ForecastPolicy(duty=0.25)
    s = p.decide(now, 150.0, IntensitySeries.empty(), _fc(now, future), 8)
    # cleanest six: 100,110,120,130,140,150(now) → evaluate
    assert (s.gpus_sampling, s.gpus_evaluation, s.lambda_s) == (0, 8, 0.0)
    s = p.decide(now, 151.0, IntensitySeries.empty(), _fc(now, future), 8)
    assert (s.gpus_sampling, s.gpus_evaluation) == (8, 0)
    # 4 evaluation hours a day → k = 4: now (125) is 4th cleanest after 100, 110, 120 → evaluate; 131 → sample
    q = ForecastPolicy(eval_hours_per_day=4)
    assert q.decide(now, 125.0, IntensitySeries.empty(), _fc(now, future), 8).gpus_evaluation == 8
    assert q.decide(now, 131.0, IntensitySeries.empty(), _fc(now, future), 8).gpus_evaluation == 0


def test_forecast_policy_half_hour_points_are_averaged_per_hour() -> None:
    now = 0.0
    p = ForecastPolicy(eval_hours_per_day=8, horizon_s=3 * H)  # 8 h per day over 3 h → 1 slot
    # slot 0: now 200 + 100 at +30 min → 150; slot 1: 160, 170 → 165; slot 2: 90, 300 → 195
    fc = IntensitySeries.from_seconds([1800, 3600, 5400, 7200, 9000], [100, 160, 170, 90, 300])
    np.testing.assert_allclose(p.slots(now, 200.0, fc), [150, 165, 195])
    assert p.decide(now, 200.0, IntensitySeries.empty(), fc, 2).gpus_evaluation == 2


def test_forecast_policy_without_forecast_falls_back_to_cenas() -> None:
    s = ForecastPolicy().decide(2 * H + 60, 150.0, hist([100, 200, 300]), None, 8)
    assert (s.gpus_sampling, s.lambda_s) == (2, 0.25) and "no forecast" in s.note


@given(st.floats(-5, 5, allow_nan=False), st.integers(0, 64))
def test_split_conserves_gpus(lam: float, g: int) -> None:
    s = split_from_lambda(lam, g)
    assert s.gpus_sampling + s.gpus_evaluation == g and s.gpus_sampling >= 0 and s.gpus_evaluation >= 0
    assert 0.0 <= s.lambda_s <= 1.0


def test_make_policy_parses_specs() -> None:
    assert isinstance(make_policy("cenas", 0), CenasPolicy)
    assert isinstance(make_policy("ORACLE", 0), OraclePolicy)
    st_ = make_policy("static:0.5", 0)
    assert isinstance(st_, StaticPolicy) and st_.fraction == 0.5
    th = make_policy("threshold:40", 0)
    assert isinstance(th, ThresholdPolicy) and th.percentile == 40
    assert isinstance(make_policy("threshold", 0), ThresholdPolicy)
    fc = make_policy("forecast:0.3", 0)
    assert isinstance(fc, ForecastPolicy) and fc.duty == 0.3
    r1, r2 = make_policy("random", 3), make_policy("random", 3)
    e = IntensitySeries.empty()
    assert r1.decide(0, 1, e, None, 8) == r2.decide(0, 1, e, None, 8)


@pytest.mark.parametrize(
    "spec", ["", "cenass", "static", "static:x", "static:1.5", "threshold:101", "forecast:-1", "cenas:3", "random:1"]
)
def test_make_policy_bad_specs_are_user_errors(spec: str) -> None:
    with pytest.raises(UserError) as e:
        make_policy(spec, 0)
    assert "\n" not in e.value.message and "policy" in e.value.message


def test_place_cleanest_zones_first() -> None:
    zones = {"A": (4, 300.0), "B": (2, 100.0), "C": (8, 200.0)}
    assert place(zones, 7) == {"A": 0, "B": 2, "C": 5}
    assert place(zones, 0) == {"A": 0, "B": 0, "C": 0}
    assert place(zones, 100) == {"A": 4, "B": 2, "C": 8}  # capped at what exists
    assert place({"Y": (3, 50.0), "X": (3, 50.0)}, 4) == {"Y": 1, "X": 3}  # tie → name order
    with pytest.raises(ValueError):
        place(zones, -1)


def test_history_from_readings_and_trailing_bounds() -> None:
    from jouled.carbon.base import CarbonReading

    rs = [CarbonReading(int(t * 1e9), "DE", "x", v) for t, v in [(7200, 3.0), (0, 1.0), (3600, 2.0)]]
    rs.append(CarbonReading(10, "DE", "x", None, percentile=50))  # index-only readings are skipped
    h = IntensitySeries.from_points(rs)
    assert list(h.time_s) == [0, 3600, 7200] and list(h.intensity_g_per_kwh) == [1, 2, 3]
    # trailing is (now − window, now]
    assert list(h.trailing(7200, 3600)) == [3.0]
    assert list(h.trailing(7199, 7200)) == [1.0, 2.0]
