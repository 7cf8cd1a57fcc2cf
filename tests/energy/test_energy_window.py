"""Hand-computed cases for window_energy / window_energy_many (jouled/energy.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jouled.energy import SeriesArrays, window_energy, window_energy_many

S = 1_000_000_000  # ns per second


def secs(*values: float) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) * S).astype(np.int64)


T11 = np.arange(11, dtype=np.int64) * S  # 0..10 s at 1 Hz


def test_constant_power_full_window() -> None:
    r = window_energy(T11, np.full(11, 100.0), None, 0, 10 * S, period_s=1.0)
    assert r.method == "integral"
    assert r.energy_j == pytest.approx(1000.0)
    assert r.samples == 11
    assert r.max_gap_s == pytest.approx(1.0)
    assert r.flags == ()


def test_constant_power_edges_interpolated() -> None:
    r = window_energy(T11, np.full(11, 100.0), None, int(2.5 * S), int(7.5 * S), period_s=1.0)
    assert r.energy_j == pytest.approx(500.0)
    assert r.samples == 5  # 3, 4, 5, 6, 7
    assert r.flags == ("sparse",)


def test_ramp_power_is_exact_for_trapezoid() -> None:
    p = 10.0 * np.arange(11)  # P = 10 t W
    # ∫_0.5^2.5 10 t dt = 5 (2.5² − 0.5²) = 30 J
    r = window_energy(T11, p, None, int(0.5 * S), int(2.5 * S), period_s=1.0)
    assert r.energy_j == pytest.approx(30.0)
    r = window_energy(T11, p, None, 0, 10 * S, period_s=1.0)
    assert r.energy_j == pytest.approx(500.0)


def test_counter_interpolated_at_both_edges() -> None:
    e = 100.0 * np.arange(11) + 12345.0  # 100 W, arbitrary offset
    r = window_energy(T11, None, e, int(2.5 * S), int(7.25 * S), period_s=1.0)
    assert r.method == "counter"
    assert r.energy_j == pytest.approx(475.0)


def test_counter_preferred_over_power() -> None:
    e = 200.0 * np.arange(11)  # the counter says 200 W ...
    p = np.full(11, 100.0)  # ... the power readings 100 W: the counter wins
    r = window_energy(T11, p, e, S, 9 * S, period_s=1.0)
    assert r.method == "counter"
    assert r.energy_j == pytest.approx(1600.0)


def test_power_used_when_it_covers_more_than_the_counter() -> None:
    e = np.full(11, np.nan)
    e[4:7] = 100.0 * np.arange(4, 7)  # counter only from 4 s to 6 s
    r = window_energy(T11, np.full(11, 50.0), e, S, 9 * S, period_s=1.0)
    assert r.method == "integral"
    assert r.energy_j == pytest.approx(400.0)


def test_counter_reset_skips_the_negative_step() -> None:
    e = np.array([0, 100, 200, 300, 400, 500, 20, 120, 220, 320, 420], dtype=np.float64)
    r = window_energy(T11, None, e, 0, 10 * S, period_s=1.0)
    # 5 steps of 100 before the reset, the 5→6 step (−480) skipped, 4 steps of 100 after
    assert r.energy_j == pytest.approx(900.0)
    assert "reset" in r.flags
    before = window_energy(T11, None, e, 0, 5 * S, period_s=1.0)
    assert before.energy_j == pytest.approx(500.0)
    assert "reset" not in before.flags
    after = window_energy(T11, None, e, 6 * S, 10 * S, period_s=1.0)
    assert after.energy_j == pytest.approx(400.0)
    assert "reset" not in after.flags


def test_imported_wrapping_counter() -> None:
    wrap = 2.0**32 * 1e-6  # a RAPL µJ counter's range, in J
    e = np.mod(4290.0 + 10.0 * np.arange(11), wrap)  # 4290 J, then past 4294.97 J: wraps at the first step
    assert np.any(np.diff(e) < 0)
    r = window_energy(T11, None, e, 0, 10 * S, period_s=1.0)
    assert r.energy_j == pytest.approx(90.0)  # 10 steps of 10 J, the wrapping one skipped
    assert "reset" in r.flags


def test_nan_counter_entries_are_ignored() -> None:
    e = 100.0 * np.arange(11)
    e[[3, 4, 8]] = np.nan
    r = window_energy(T11, None, e, int(2.5 * S), int(7.5 * S), period_s=1.0)
    assert r.energy_j == pytest.approx(500.0)
    assert r.samples == 3  # 5, 6, 7 (3 and 4 are NaN)
    assert r.max_gap_s == pytest.approx(3.0)  # 2 → 5


def test_zero_length_window() -> None:
    r = window_energy(T11, np.full(11, 100.0), None, 3 * S, 3 * S, period_s=1.0)
    assert r.energy_j == 0.0
    assert r.samples == 1


def test_window_between_two_samples_has_no_sample_inside() -> None:
    r = window_energy(T11, 10.0 * np.arange(11), None, int(3.25 * S), int(3.75 * S), period_s=1.0)
    assert r.samples == 0
    assert r.energy_j == pytest.approx(5 * (3.75**2 - 3.25**2))
    assert "sparse" in r.flags and "edge" not in r.flags
    assert "no-samples" not in r.flags  # interpolated from the neighbours: an energy, only sparse
    assert r.max_gap_s == pytest.approx(1.0)


def test_no_samples_at_all() -> None:
    r = window_energy(np.array([], dtype=np.int64), np.array([]), np.array([]), 0, 5 * S, period_s=0.1)
    assert r.energy_j is None
    assert r.method == "none"
    assert r.samples == 0
    assert r.max_gap_s == pytest.approx(5.0)
    assert set(r.flags) == {"sparse", "edge", "gap", "no-samples"}


def test_one_sample_gives_no_energy() -> None:
    r = window_energy(secs(2.0), np.array([100.0]), None, 0, 5 * S, period_s=1.0)
    assert r.energy_j is None
    assert r.method == "none"
    assert r.samples == 1
    assert r.max_gap_s == pytest.approx(3.0)  # 2 s → end
    assert {"sparse", "edge"} <= set(r.flags)


def test_window_entirely_outside_the_data() -> None:
    r = window_energy(T11, np.full(11, 100.0), None, 20 * S, 25 * S, period_s=1.0)
    assert r.energy_j is None
    assert r.method == "none"
    assert r.samples == 0
    assert "edge" in r.flags
    # the last sample (10 s) is the nearest covering one: 15 s to the window's end
    assert r.max_gap_s == pytest.approx(15.0)


def test_partly_covered_window_integrates_what_is_covered() -> None:
    r = window_energy(T11, np.full(11, 100.0), None, -5 * S, 5 * S, period_s=1.0)
    assert r.energy_j == pytest.approx(500.0)  # 0..5 s, nothing extrapolated before 0
    assert "edge" in r.flags
    assert r.max_gap_s == pytest.approx(5.0)  # window start → first sample
    r = window_energy(T11, None, 100.0 * np.arange(11), 8 * S, 12 * S, period_s=1.0)
    assert r.energy_j == pytest.approx(200.0)
    assert "edge" in r.flags


def test_gap_flag_uses_the_period() -> None:
    t = secs(0, 1, 2, 5, 6, 7, 8, 9, 10)
    p = np.full(t.size, 10.0)
    loose = window_energy(t, p, None, 0, 10 * S, period_s=1.0)
    assert loose.max_gap_s == pytest.approx(3.0)
    assert "gap" not in loose.flags  # 3 s ≤ 5 × 1 s
    tight = window_energy(t, p, None, 0, 10 * S, period_s=0.5)
    assert "gap" in tight.flags  # 3 s > 5 × 0.5 s
    # a hole straddling the window start counts in full: the edge value was interpolated across it
    r = window_energy(t, p, None, 4 * S, 10 * S, period_s=0.5)
    assert r.max_gap_s == pytest.approx(3.0)


def test_period_inferred_when_not_given() -> None:
    t = secs(0, 0.1, 0.2, 0.3, 2.0, 2.1)
    r = window_energy(t, np.full(t.size, 10.0), None, 0, int(2.1 * S), period_s=float("nan"))
    assert "gap" in r.flags


def test_estimated_flag() -> None:
    r = window_energy(T11, np.full(11, 5.0), None, 0, 10 * S, period_s=1.0, estimated=True)
    assert r.flags == ("estimated",)


def test_duplicates_are_averaged() -> None:
    t = secs(0, 1, 1, 2)
    p = np.array([100.0, 100.0, 300.0, 100.0])
    r = window_energy(t, p, None, 0, 2 * S, period_s=1.0)
    assert r.energy_j == pytest.approx(0.5 * (100 + 200) + 0.5 * (200 + 100))
    assert r.samples == 3  # one per distinct time
    # NaN in one duplicate: the other value stands
    r = window_energy(t, np.array([100.0, np.nan, 300.0, 100.0]), None, 0, 2 * S, period_s=1.0)
    assert r.energy_j == pytest.approx(0.5 * (100 + 300) + 0.5 * (300 + 100))


def test_unsorted_input() -> None:
    rng = np.random.default_rng(1)
    order = rng.permutation(11)
    p = 10.0 * np.arange(11)
    r = window_energy(T11[order], p[order], None, int(0.5 * S), int(2.5 * S), period_s=1.0)
    assert r.energy_j == pytest.approx(30.0)


def test_absolute_timestamps_keep_nanosecond_precision() -> None:
    t0 = 1_700_000_000 * S + 123_456_789
    t = t0 + T11
    r = window_energy(t, np.full(11, 300.0), None, t0 + 1, t0 + 10 * S - 1, period_s=1.0)
    assert r.energy_j == pytest.approx(300.0 * (10 - 2e-9), rel=1e-12)


def test_bad_window_and_shapes_raise() -> None:
    with pytest.raises(ValueError):
        window_energy(T11, np.full(11, 1.0), None, 5 * S, 4 * S, period_s=1.0)
    with pytest.raises(ValueError):
        window_energy(T11, np.full(10, 1.0), None, 0, S, period_s=1.0)


def test_many_windows_match_single_calls() -> None:
    rng = np.random.default_rng(7)
    t = np.sort(rng.integers(0, 100 * S, 400))
    p = rng.uniform(50, 400, t.size)
    e = np.cumsum(rng.uniform(0, 5, t.size))
    e[rng.random(t.size) < 0.1] = np.nan
    p[rng.random(t.size) < 0.1] = np.nan
    starts = rng.integers(-10 * S, 110 * S, 50)
    ends = starts + rng.integers(0, 30 * S, 50)
    series = SeriesArrays(t, p, e, "nvml", "gpu0", 0.25)
    batch = window_energy_many(series, starts, ends)
    assert len(batch) == 50
    for i in range(50):
        one = window_energy(t, p, e, int(starts[i]), int(ends[i]), period_s=0.25)
        assert batch.item(i).method == one.method
        assert batch.item(i).flags == one.flags
        assert batch.item(i).samples == one.samples
        assert batch.item(i).max_gap_s == pytest.approx(one.max_gap_s)
        if one.energy_j is None:
            assert math.isnan(batch.energy_j[i])
        else:
            assert batch.energy_j[i] == pytest.approx(one.energy_j)


def test_averaged_duplicate_counter_is_not_a_reset() -> None:
    # (0.1 + 0.1 + 0.1) / 3 != 0.1 in floats: the averaged duplicate sits one ulp off its
    # neighbour, which must not read as a counter reset
    assert (0.1 + 0.1 + 0.1) / 3 != 0.1
    t = secs(0, 1, 1, 1, 2)
    e = np.array([0.0, 0.1, 0.1, 0.1, 0.1])
    r = window_energy(t, None, e, 0, 2 * S, period_s=1.0)
    assert "reset" not in r.flags
    assert r.energy_j == pytest.approx(0.1)


# -- a counter that does not count ----------------------------------------------------------------


def test_flat_counter_under_power_is_stuck_and_takes_the_integral() -> None:
    """A meter whose integrator stopped answers its last value forever (the simulated WT310 of `make run-sim` did):
    the window takes the power integral, flagged `counter-stuck`, not a silent 0 J."""
    r = window_energy(T11, np.full(11, 123.45), np.full(11, 90.0), 2 * S, 4 * S, period_s=1.0)
    assert r.method == "integral"
    assert r.energy_j == pytest.approx(246.9)
    assert "counter-stuck" in r.flags and "sparse" in r.flags  # judged as the integral it now is: 3 samples


def test_flat_counter_of_an_idle_device_stays_the_counter() -> None:
    r = window_energy(T11, np.full(11, 0.2), np.full(11, 90.0), 2 * S, 4 * S, period_s=1.0)  # 0.4 J < 1 J
    assert (r.method, r.energy_j, r.flags) == ("counter", 0.0, ())


def test_flat_counter_within_its_resolution_is_not_stuck() -> None:
    """A counter with coarse steps may stay on one step for a short window: 10 steps of 1 Wh (3600 J) is the floor."""
    from jouled.series import SeriesMeta

    meta = SeriesMeta(role="wall", device="wall", counter_resolution_j=3600.0)
    s = SeriesArrays(T11, np.full(11, 123.45), np.full(11, 90.0), "visa", "wall", 1.0, False, meta=meta)
    b = window_energy_many(s, [2 * S], [4 * S])
    assert (b.method_name(0), float(b.energy_j[0]), b.flag_names(0)) == ("counter", 0.0, ())


def test_moving_counter_is_never_second_guessed() -> None:
    e = np.cumsum(np.full(11, 50.0))  # 50 J a second, while power says 123 W: the counter wins, unflagged
    r = window_energy(T11, np.full(11, 123.45), e, 2 * S, 4 * S, period_s=1.0)
    assert (r.method, r.energy_j, r.flags) == ("counter", pytest.approx(100.0), ())


def test_stuck_only_where_the_counter_stopped() -> None:
    e = np.concatenate([np.arange(6) * 100.0, np.full(5, 500.0)])  # counts 100 J/s until 5 s, then stops
    s = SeriesArrays(T11, np.full(11, 100.0), e, "visa", "wall", 1.0, False)
    b = window_energy_many(s, secs(0, 6), secs(5, 10))
    assert [b.method_name(i) for i in range(2)] == ["counter", "integral"]
    assert b.energy_j.tolist() == pytest.approx([500.0, 400.0])
    assert [("counter-stuck" in b.flag_names(i)) for i in range(2)] == [False, True]


def test_stuck_counter_in_a_window_wider_than_the_samples() -> None:
    """A run window starts before the first sample (`edge`): a new user's calibrate run read 0 J at the wall for the
    run while each of its phases read the integral."""
    r = window_energy(T11, np.full(11, 123.45), np.full(11, 90.0), -2 * S, 12 * S, period_s=1.0)
    assert r.method == "integral" and r.energy_j == pytest.approx(1234.5)
    assert "counter-stuck" in r.flags and "edge" in r.flags
