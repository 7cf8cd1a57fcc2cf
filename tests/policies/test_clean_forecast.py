"""Clean-hour policy and the seasonal-naive forecast (issue 13): by hand, and no value after `now` is used."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jouled.carbon.series import IntensitySeries
from jouled.errors import UserError
from jouled.scheduler.policies import (
    STALL_TRAININGS,
    CleanHourPolicy,
    clean_threshold,
    make_policy,
    paced_percentile,
    seasonal_naive,
    stall_percentile,
)

T0 = 1_700_000_000.0
H = 3600.0


def _series(values: list[float]) -> IntensitySeries:
    return IntensitySeries.from_seconds(T0 + H * np.arange(len(values)), np.asarray(values, dtype=np.float64))


def test_clean_threshold_by_hand() -> None:
    assert clean_threshold(np.array([100.0, 200.0, 300.0, 400.0]), 50.0) == pytest.approx(250.0)
    assert clean_threshold(np.zeros(0), 50.0) == math.inf  # nothing known yet: work


def test_clean_policy_works_below_the_trailing_percentile_and_releases_above() -> None:
    hist = _series([100, 500, 100, 500])  # trailing 24 h at T0 + 3 h: p50 = 300
    pol = make_policy("clean:50")
    assert isinstance(pol, CleanHourPolicy)
    work = pol.decide(T0 + 3 * H, 250.0, hist, None, 8)
    assert (work.gpus_sampling, work.gpus_evaluation) == (0, 8)
    rest = pol.decide(T0 + 3 * H, 350.0, hist, None, 8)
    assert (rest.gpus_sampling, rest.gpus_evaluation) == (0, 0) and "released" in rest.note
    # two zones pooled: the threshold comes from both histories
    assert pol.threshold(T0 + 3 * H, [_series([100, 100, 100, 100]), _series([500, 500, 500, 500])]) == 300.0


def test_stall_percentile_by_hand() -> None:
    """The front's HV after each training in, the percentile in force out: no judgement before `trainings` trainings,
    then linear from the late percentile (no gain) to the early one (gain >= gain_pct %)."""
    assert stall_percentile([100.0] * 3, 50.0, 40.0, trainings=4, gain_pct=0.2) == 50.0  # too few trainings yet
    flat = [100.0] * 4
    assert stall_percentile(flat, 50.0, 40.0, trainings=4, gain_pct=0.2) == 40.0  # no gain at all
    fast = [99.0, 99.5, 99.8, 100.0]  # +1 % over the last 4 trainings
    assert stall_percentile(fast, 50.0, 40.0, trainings=4, gain_pct=0.2) == 50.0
    half = [99.9, 99.9, 99.95, 100.0]  # +0.1 %: half the gain that keeps the pace
    assert stall_percentile(half, 50.0, 40.0, trainings=4, gain_pct=0.2) == pytest.approx(45.0)
    assert stall_percentile([0.0] * 5, 50.0, 40.0, trainings=4, gain_pct=0.2) == 40.0  # an empty front: no gain


def test_clean_policy_turns_thrifty_when_the_search_stalls() -> None:
    hist = _series([100, 500, 300, 400])  # trailing 24 h at T0 + 3 h: p50 = 350, p40 = 320
    pol = make_policy("clean:50:40")
    assert isinstance(pol, CleanHourPolicy) and pol.name == "clean:50:40"
    assert pol.decide(T0 + 3 * H, 340.0, hist, None, 8).gpus_evaluation == 8  # no trainings yet: p50
    for _ in range(STALL_TRAININGS):
        pol.observe_training(1000.0)  # the front stopped moving
    assert pol.percentile_now() == 40.0
    assert pol.threshold(T0 + 3 * H, [hist]) == pytest.approx(320.0)
    assert pol.decide(T0 + 3 * H, 340.0, hist, None, 8).gpus_evaluation == 0  # the same hour now waits
    plain = make_policy("clean:50")
    assert isinstance(plain, CleanHourPolicy) and plain.late_percentile is None
    for _ in range(STALL_TRAININGS):
        plain.observe_training(1000.0)
    assert plain.percentile_now() == 50.0  # no late percentile: no thrift


def test_paced_percentile_by_hand() -> None:
    """The share of the rest of the search to work so that the whole ends at the duty share worked."""
    day = 24 * H
    assert paced_percentile(50.0, 7 * day, 0.0, 0.0) == 50.0  # at the start: the duty itself
    assert paced_percentile(50.0, 7 * day, day, 12 * H) == pytest.approx(50.0)  # on pace
    assert paced_percentile(50.0, 7 * day, day, 0.0) == pytest.approx(100.0 * 84 / 144)  # a dirty day: behind
    assert paced_percentile(50.0, 7 * day, day, day) == pytest.approx(100.0 * 60 / 144)  # a clean day: ahead
    assert paced_percentile(50.0, 4 * H, 3 * H, 0.0) == 100.0  # more owed than is left: every hour
    assert paced_percentile(50.0, 4 * H, 2 * H, 2 * H) == 0.0  # the whole share done: none
    assert paced_percentile(50.0, 4 * H, 5 * H, 0.0) == 50.0  # past the end (a longer run): the duty


def test_paced_clean_policy_catches_up_after_a_dirty_spell() -> None:
    """Paced over 4 h at p50: two dirty hours not worked leave the remaining two to be worked whatever their rank."""
    hist = _series([100, 200, 300, 400])  # trailing window at T0 + 3 h: p50 = 250, p100 = 400
    pol = make_policy("clean:50")
    assert isinstance(pol, CleanHourPolicy)
    assert pol.decide(T0 + 3 * H, 350.0, hist, None, 8).gpus_evaluation == 0  # not paced: p50
    pol.pace_over(4 * H)
    assert pol.percentile_now() == 50.0
    pol.observe_period(0.0, H)
    pol.observe_period(0.0, H)
    assert pol.percentile_now() == 100.0
    assert pol.decide(T0 + 3 * H, 350.0, hist, None, 8).gpus_evaluation == 8  # behind: the same hour now works
    pol.observe_period(1.0, H)
    assert pol.percentile_now() == 100.0
    with pytest.raises(ValueError):
        pol.pace_over(0.0)


def test_cenas_policy_spec_is_clean_50_with_a_five_day_window() -> None:
    from jouled.scheduler.policies import CLEAN_WINDOW_H, clean_spec

    assert clean_spec() == "clean:50"
    pol = make_policy(clean_spec())
    assert isinstance(pol, CleanHourPolicy) and pol.window_s == CLEAN_WINDOW_H * H == 120 * H
    assert pol.late_percentile is None


@pytest.mark.parametrize("spec", ["clean:50:x", "clean:50:140", "clean:x:40"])
def test_clean_policy_spec_errors(spec: str) -> None:
    with pytest.raises(UserError, match="policy"):
        make_policy(spec)


def test_seasonal_naive_is_yesterday_shifted_and_uses_no_future() -> None:
    vals = [float(v) for v in range(100, 148)]  # 48 hourly values
    now = T0 + 30 * H
    fc = seasonal_naive(_series(vals).upto(now), now)
    # the value at now + 1 h is the one at now + 1 h − 24 h
    assert fc.at(now + H) == vals[7]
    assert fc.time_s[0] > now - 1e-6 and fc.time_s[-1] <= now + 24 * H
    changed = vals[:31] + [9999.0] * 17
    assert np.array_equal(seasonal_naive(_series(changed).upto(now), now).g_per_kwh, fc.g_per_kwh)
