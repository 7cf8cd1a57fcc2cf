"""Exact 2-D hypervolume, Pareto fronts and dominance numbers; every objective is maximised.

CE-NAS maximises accuracy and minimises energy; pass energy negated, e.g. (acc_pct, -energy_mj)
with the reference point (0, -50).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CENAS_REF_POINT: tuple[float, float] = (0.0, -50.0)


def _as_points(points: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"need an (n, 2) array of points, got shape {arr.shape}")
    return arr


def pareto_mask(points: npt.ArrayLike) -> BoolArray:
    """True for points no other point dominates (>= in both, > in one); duplicates all stay."""
    p = _as_points(points)
    n = len(p)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    # Sorted by x desc then y desc, every point before p has x >= p.x; p is dominated iff some
    # earlier point that is not an exact duplicate of p has y >= p.y.
    order = np.lexsort((-p[:, 1], -p[:, 0]))
    xs, ys = p[order, 0], p[order, 1]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    prefix_max = np.empty(n, dtype=np.float64)
    prefix_max[0] = -np.inf
    prefix_max[1:] = np.maximum.accumulate(ys)[:-1]
    mask[order] = prefix_max[group_start] < ys
    return mask


def pareto_front(points: npt.ArrayLike) -> FloatArray:
    """The non-dominated points, unique, sorted by the first objective descending."""
    p = _as_points(points)
    front = np.unique(p[pareto_mask(p)], axis=0)
    return front[np.argsort(-front[:, 0], kind="stable")]


def hypervolume_2d(points: npt.ArrayLike, ref: Sequence[float] = CENAS_REF_POINT) -> float:
    """Area dominated by the points and bounded below by ref (points not better than ref in both count 0)."""
    p = _as_points(points)
    rx, ry = float(ref[0]), float(ref[1])
    p = p[(p[:, 0] > rx) & (p[:, 1] > ry)]
    if len(p) == 0:
        return 0.0
    order = np.lexsort((-p[:, 1], -p[:, 0]))
    xs, ys = p[order, 0], p[order, 1]
    # Sweep from the largest x: each point adds a slab of width (x - rx) above the best y so far.
    best_y = np.maximum.accumulate(np.concatenate(([ry], ys)))
    gains = np.maximum(best_y[1:] - best_y[:-1], 0.0)
    return float(np.sum((xs - rx) * gains))


def dominance_numbers(points: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """For each point, how many points dominate it (0 = on the Pareto front). O(n^2): use on <= a few thousand."""
    p = _as_points(points)
    n = len(p)
    out = np.zeros(n, dtype=np.int64)
    chunk = max(1, 2_000_000 // max(n, 1))
    for s in range(0, n, chunk):
        q = p[s : s + chunk]  # dominated candidates
        ge = (p[None, :, 0] >= q[:, None, 0]) & (p[None, :, 1] >= q[:, None, 1])
        gt = (p[None, :, 0] > q[:, None, 0]) | (p[None, :, 1] > q[:, None, 1])
        out[s : s + chunk] = np.sum(ge & gt, axis=1)
    return out


class ParetoArchive:
    """Incremental Pareto front with its hypervolume, for the simulator's many single-point additions."""

    def __init__(self, ref: Sequence[float] = CENAS_REF_POINT) -> None:
        self.ref = (float(ref[0]), float(ref[1]))
        self.front: FloatArray = np.zeros((0, 2), dtype=np.float64)
        self.ids: list[int] = []
        self.hv = 0.0

    def add(self, point: Sequence[float], ident: int = -1) -> bool:
        """Add one point; True when it changed the front."""
        x, y = float(point[0]), float(point[1])
        f = self.front
        if len(f) and bool(np.any((f[:, 0] >= x) & (f[:, 1] >= y))):
            return False  # dominated by (or equal to) a front member: front and HV unchanged
        keep = ~((f[:, 0] <= x) & (f[:, 1] <= y)) if len(f) else np.zeros(0, dtype=bool)
        self.front = np.vstack([f[keep], [[x, y]]])
        self.ids = [i for i, k in zip(self.ids, keep, strict=True) if k] + [ident]
        self.hv = hypervolume_2d(self.front, self.ref)
        return True


def nondominated_ranks(points: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Non-dominated sorting layer of each point (0 = Pareto front, 1 = front after removing it, …). O(n log n).

    Sorted by x descending, a layer's points have increasing y, so its last point has its largest y;
    a point joins the first layer whose largest y is below its own (exact duplicates share a layer).
    """
    p = _as_points(points)
    n = len(p)
    ranks = np.zeros(n, dtype=np.int64)
    if n == 0:
        return ranks
    order = np.lexsort((-p[:, 1], -p[:, 0]))
    xs, ys = p[order, 0].tolist(), p[order, 1].tolist()
    neg_max_y: list[float] = []  # -(largest y) per layer: non-decreasing, so bisect works
    prev_rank = -1
    for j in range(n):
        if j > 0 and xs[j] == xs[j - 1] and ys[j] == ys[j - 1]:
            r = prev_rank
        else:
            r = bisect.bisect_right(neg_max_y, -ys[j])  # first layer with largest y < y
            if r == len(neg_max_y):
                neg_max_y.append(-ys[j])
            else:
                neg_max_y[r] = -ys[j]
        ranks[order[j]] = r
        prev_rank = r
    return ranks
