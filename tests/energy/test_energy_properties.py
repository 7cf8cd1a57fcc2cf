"""Property tests of the window energy math (hypothesis): additivity, agreement, order, flags."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.energy import WindowEnergy, window_energy

S = 1_000_000_000
MS = 1_000_000

FAST = settings(max_examples=120, deadline=None)


@dataclass
class Trace:
    t: np.ndarray
    p: np.ndarray | None
    e: np.ndarray | None


@st.composite
def traces(draw: st.DrawFn, kind: str) -> Trace:
    n = draw(st.integers(2, 40))
    gaps_ms = draw(st.lists(st.integers(1, 2000), min_size=n - 1, max_size=n - 1))
    t0 = draw(st.integers(0, 10**12))
    t = t0 + np.concatenate(([0], np.cumsum(gaps_ms))).astype(np.int64) * MS
    vals = np.array(draw(st.lists(st.floats(0, 1000), min_size=n, max_size=n)))
    if kind == "power":
        return Trace(t, vals, None)
    return Trace(t, None, np.cumsum(vals))


@st.composite
def window_in(draw: st.DrawFn, tr: Trace, margin_ns: int = 3 * S) -> tuple[int, int]:
    lo, hi = int(tr.t[0]) - margin_ns, int(tr.t[-1]) + margin_ns
    a = draw(st.integers(lo, hi))
    b = draw(st.integers(a, hi))
    return a, b


def energy(tr: Trace, a: int, b: int, period_s: float = 0.5) -> WindowEnergy:
    return window_energy(tr.t, tr.p, tr.e, a, b, period_s=period_s)


def e0(r: WindowEnergy) -> float:
    return 0.0 if r.energy_j is None else r.energy_j


@FAST
@given(data=st.data(), kind=st.sampled_from(["power", "counter"]))
def test_splitting_a_window_adds_up(data: st.DataObject, kind: str) -> None:
    tr = data.draw(traces(kind))
    a, b = data.draw(window_in(tr))
    c = data.draw(st.integers(a, b))
    whole, left, right = energy(tr, a, b), energy(tr, a, c), energy(tr, c, b)
    expected_method = "integral" if kind == "power" else "counter"
    for r in (whole, left, right):
        assert r.method in (expected_method, "none")
    if whole.energy_j is None:
        assert left.energy_j is None and right.energy_j is None
    scale = 1.0 + abs(e0(left)) + abs(e0(right))
    assert math.isclose(e0(whole), e0(left) + e0(right), rel_tol=1e-9, abs_tol=1e-9 * scale)


@FAST
@given(
    mean_w=st.floats(50, 400),
    amp_rel=st.floats(0, 1),
    omega=st.floats(0.05, 3.0),
    phase=st.floats(0, 2 * math.pi),
    dt_ms=st.integers(10, 500),
    n=st.integers(20, 200),
    frac=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_counter_and_integral_agree_on_smooth_power(
    mean_w: float, amp_rel: float, omega: float, phase: float, dt_ms: int, n: int, frac: tuple[float, float]
) -> None:
    amp_w = amp_rel * mean_w  # power never negative, so the counter never decreases
    dt = dt_ms / 1000
    t_s = np.arange(n) * dt
    t = np.arange(n, dtype=np.int64) * dt_ms * MS
    power = mean_w + amp_w * np.sin(omega * t_s + phase)

    def exact(x: float) -> float:
        return mean_w * x + amp_w / omega * (math.cos(phase) - math.cos(omega * x + phase))

    counter = np.array([exact(x) for x in t_s])
    span = (n - 1) * dt
    a_s, b_s = sorted(f * span for f in frac)
    a, b = int(a_s * S), int(b_s * S)
    by_counter = window_energy(t, None, counter, a, b, period_s=dt)
    by_power = window_energy(t, power, None, a, b, period_s=dt)
    truth = exact(b / S) - exact(a / S)
    # trapezoid of a linear interpolant: ≤ T·max|P''|·dt²/8; counter interpolated at two edges: 2·max|P'|·dt²/8
    tol_integral = (b_s - a_s) * amp_w * omega**2 * dt**2 / 8
    tol_counter = 2 * amp_w * omega * dt**2 / 8
    slack = 1e-9 * (1 + abs(truth))
    assert by_counter.energy_j is not None and by_power.energy_j is not None
    assert abs(by_power.energy_j - truth) <= tol_integral + slack
    assert abs(by_counter.energy_j - truth) <= tol_counter + slack
    assert abs(by_counter.energy_j - by_power.energy_j) <= tol_integral + tol_counter + 2 * slack


@FAST
@given(data=st.data(), kind=st.sampled_from(["power", "counter", "both"]))
def test_unsorted_and_duplicated_samples_change_nothing(data: st.DataObject, kind: str) -> None:
    tr = data.draw(traces("power" if kind != "counter" else "counter"))
    if kind == "both":
        tr = Trace(tr.t, tr.p, np.cumsum(tr.p if tr.p is not None else []))
    a, b = data.draw(window_in(tr))
    n = tr.t.size
    dup = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=10)), dtype=np.int64)
    idx = np.concatenate((np.arange(n), dup))
    perm = np.array(data.draw(st.permutations(list(range(idx.size)))), dtype=np.int64)
    idx = idx[perm]
    messy = Trace(tr.t[idx], None if tr.p is None else tr.p[idx], None if tr.e is None else tr.e[idx])
    ref, got = energy(tr, a, b), energy(messy, a, b)
    assert got.method == ref.method
    assert got.samples == ref.samples
    assert got.flags == ref.flags
    assert math.isclose(got.max_gap_s, ref.max_gap_s, rel_tol=1e-12, abs_tol=1e-12)
    if ref.energy_j is None:
        assert got.energy_j is None
    else:
        assert got.energy_j is not None
        assert math.isclose(got.energy_j, ref.energy_j, rel_tol=1e-9, abs_tol=1e-9)


@FAST
@given(data=st.data(), kind=st.sampled_from(["power", "counter"]))
def test_flags_follow_their_definitions(data: st.DataObject, kind: str) -> None:
    tr = data.draw(traces(kind))
    a, b = data.draw(window_in(tr))
    period_s = data.draw(st.sampled_from([0.05, 0.3, 1.0]))
    r = energy(tr, a, b, period_s)
    inside = int(np.sum((tr.t >= a) & (tr.t <= b)))
    assert r.samples == inside
    if r.method == "counter":
        # a counter is judged against its own period: sparse below half the reads that period promises (max 10)
        need = min(10, math.floor(0.5 * (b - a) * 1e-9 / period_s))
        assert ("sparse" in r.flags) == (inside < need)
    else:
        assert ("sparse" in r.flags) == (inside < 10)
    assert ("edge" in r.flags) == bool(tr.t[0] > a or tr.t[-1] < b)
    assert ("gap" in r.flags) == (r.max_gap_s > 5 * period_s)
    assert "estimated" not in r.flags
    # the largest gap is at least the plain spacing of the samples inside
    if inside >= 2:
        t_in = tr.t[(tr.t >= a) & (tr.t <= b)]
        assert r.max_gap_s >= float(np.max(np.diff(t_in))) * 1e-9 - 1e-12
    assert r.max_gap_s <= max(b, int(tr.t[-1])) * 1e-9 - min(a, int(tr.t[0])) * 1e-9 + 1e-9


@FAST
@given(st.data())
def test_counter_edges_from_known_indices_equal_numpys_interp_to_the_bit(data: st.DataObject) -> None:
    # window_energy_many interpolates the counter at each window edge from the index its sample count already found
    # (energy._interp_at); it must give np.interp's numbers exactly, or a window's joules would depend on the path
    from jouled.energy import _interp_at

    n = data.draw(st.integers(2, 60))
    gaps = data.draw(st.lists(st.floats(1e-6, 1e3), min_size=n - 1, max_size=n - 1))
    t = np.concatenate(([0.0], np.cumsum(gaps)))
    if not bool(np.all(np.diff(t) > 0)):
        return  # rounding made two times equal: not a track (tracks are distinct)
    y = np.cumsum(np.array(data.draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n))))
    inside = data.draw(st.lists(st.floats(float(t[0]) - 10, float(t[-1]) + 10), min_size=1, max_size=30))
    on_samples = [float(t[i]) for i in data.draw(st.lists(st.integers(0, n - 1), max_size=10))]
    x = np.array(inside + on_samples)
    last_le = np.searchsorted(t, x, side="right") - 1
    xc = np.clip(x, t[0], t[-1])
    assert np.array_equal(_interp_at(t, y, xc, last_le), np.interp(xc, t, y))
