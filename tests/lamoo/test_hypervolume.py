"""Exact 2-D hypervolume, Pareto fronts, dominance numbers and non-dominated layers, checked by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jouled.scheduler.hypervolume import (
    CENAS_REF_POINT,
    ParetoArchive,
    dominance_numbers,
    hypervolume_2d,
    nondominated_ranks,
    pareto_front,
    pareto_mask,
)


def test_hypervolume_by_hand() -> None:
    # staircase of (3,1), (2,2), (1,3) over (0,0): slabs 3x1 + 2x1 + 1x1 = 6
    assert hypervolume_2d([(3, 1), (1, 3), (2, 2)], (0, 0)) == pytest.approx(6.0)
    # a dominated point and a duplicate change nothing
    assert hypervolume_2d([(3, 1), (1, 3), (2, 2), (1, 1), (2, 2)], (0, 0)) == pytest.approx(6.0)
    # shifted reference point: (3-1)x(1-0.5) + (2-1)x(2-1) + 0 for (1,3) (not better than ref in x)
    assert hypervolume_2d([(3, 1), (1, 3), (2, 2)], (1, 0.5)) == pytest.approx(2 * 0.5 + 1 * 1.0)
    assert hypervolume_2d([], (0, 0)) == 0.0
    assert hypervolume_2d([(1, 1)], (2, 2)) == 0.0


def test_cenas_reference_point_with_energy_negated() -> None:
    assert CENAS_REF_POINT == (0.0, -50.0)
    # 90 % at 20 mJ: 90 x (50 - 20) = 2700; a 60 mJ cell is beyond the reference and adds nothing
    assert hypervolume_2d([(90.0, -20.0)]) == pytest.approx(2700.0)
    assert hypervolume_2d([(90.0, -20.0), (94.0, -60.0)]) == pytest.approx(2700.0)
    # add 94 % at 40 mJ: 94 x 10 + 90 x 20 = 940 + 1800
    assert hypervolume_2d([(90.0, -20.0), (94.0, -40.0)]) == pytest.approx(2740.0)


def test_pareto_mask_and_front_by_hand() -> None:
    pts = np.array([(3, 1), (1, 3), (2, 2), (1, 1), (2, 2), (3, 0), (0, 3)], dtype=float)
    assert pareto_mask(pts).tolist() == [True, True, True, False, True, False, False]
    assert pareto_front(pts).tolist() == [[3, 1], [2, 2], [1, 3]]
    assert pareto_mask(np.zeros((0, 2))).tolist() == []


def test_dominance_numbers_by_hand() -> None:
    pts = [(3, 1), (1, 3), (2, 2), (1, 1), (0, 0), (2, 2)]
    # (1,1) is dominated by (3,1), (1,3) and both (2,2): 4; (0,0) by all five others
    assert dominance_numbers(pts).tolist() == [0, 0, 0, 4, 5, 0]


def _brute_ranks(p: np.ndarray) -> np.ndarray:
    rem, out, k = np.arange(len(p)), np.zeros(len(p), dtype=int), 0
    while len(rem):
        m = pareto_mask(p[rem])
        out[rem[m]] = k
        rem, k = rem[~m], k + 1
    return out


def test_nondominated_ranks_equal_peeling() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        p = rng.integers(0, 5, (int(rng.integers(1, 50)), 2)).astype(float)  # many ties on purpose
        assert np.array_equal(nondominated_ranks(p), _brute_ranks(p))
    p = rng.normal(size=(500, 2))
    assert np.array_equal(nondominated_ranks(p), _brute_ranks(p))


def test_mask_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.integers(0, 4, (30, 2)).astype(float)
        brute = [
            not any((q >= x).all() and (q > x).any() for j, q in enumerate(p) if j != i) for i, x in enumerate(p)
        ]
        assert pareto_mask(p).tolist() == brute
        assert np.array_equal(dominance_numbers(p) == 0, np.array(brute))


def test_archive_tracks_the_hypervolume_of_everything_added() -> None:
    rng = np.random.default_rng(2)
    pts = np.column_stack([rng.uniform(0, 95, 300), -rng.uniform(8, 61, 300)])
    arc = ParetoArchive()
    for i, pt in enumerate(pts):
        arc.add(pt, i)
        assert arc.hv == pytest.approx(hypervolume_2d(pts[: i + 1]))
    assert sorted(arc.ids) == sorted(np.nonzero(pareto_mask(pts))[0].tolist())


def test_hypervolume_is_monotone_under_adding_points() -> None:
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 10, (40, 2))
    hvs = [hypervolume_2d(pts[:k], (0, 0)) for k in range(1, 41)]
    assert all(b >= a for a, b in itertools.pairwise(hvs))
