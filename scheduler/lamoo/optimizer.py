"""LaMOO over a finite space: ask(n) proposes unseen cells from the UCB-selected leaf, tell() records objectives.

The space is small enough (NB201: 15,625 cells) to route every cell through the tree at each
refit, so "sample inside the selected region" is exact: a uniformly random unseen cell of the
leaf. (LaMOO's optional Bayesian-optimisation sampler inside the region is not implemented.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import numpy.typing as npt
import sklearn
from threadpoolctl import ThreadpoolController

from jouled.scheduler.hypervolume import CENAS_REF_POINT, hypervolume_2d, pareto_mask
from jouled.scheduler.lamoo.tree import Kernel, Tree, build_tree

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@cache
def _threadpools() -> ThreadpoolController:
    """One controller per process: `threadpool_limits()` looks for the BLAS libraries anew at every call (4 ms,
    5 % of a simulated week), a controller once."""
    return ThreadpoolController()


# The LaMOO told TRUE results in the truth-fed search (simulator and live search): a deeper tree with smaller
# leaves than CE-NAS's (3, 10). With the true objectives its regions are worth refining: on DE 2022, 20 seeds
# with every hour worked, it reached 0.1 % of hv_max in 421 trainings on average (p90 554, max 607) against 480
# (666, 669), and on 20 other seeds 415 (582, 635) against 531 (674, 769) (docs/architecture.md, "Truth-fed search").
TRUTH_MAX_HEIGHT = 5
TRUTH_MIN_LEAF = 5
TRUTH_CP_FRACTION = 0.005  # exploration: 0.5 % of the max HV (CE-NAS's 10 % is for the noisy one-shot estimates)


@dataclass(frozen=True)
class LaMOOConfig:
    """Knobs of the search; defaults follow CE-NAS (height 3, leaf >= 10, Cp = 10 % of the max HV)."""

    max_height: int = 3
    min_leaf: int = 10
    cp_fraction: float = 0.1
    kernel: Kernel = "poly"
    svm_c: float = 1.0  # SVC regularisation (scikit-learn default)
    # Refit the tree only after the sample count grew by refit_growth (or refit_min samples):
    # a bounded number of refits keeps long simulations fast; between refits new samples are
    # routed through the existing tree, so node counts and values stay current.
    refit_growth: float = 0.25
    refit_min: int = 10
    # k-means and the SVMs see at most this many samples (the Pareto front first, then a seeded
    # random subset); node values and counts always use every sample.
    max_train: int = 256


def truth_config(base: LaMOOConfig | None = None, *, cp_fraction: float = TRUTH_CP_FRACTION,
                 max_height: int = TRUTH_MAX_HEIGHT, min_leaf: int = TRUTH_MIN_LEAF) -> LaMOOConfig:
    """The config of the LaMOO told true results (simulator and live search alike): `base`'s knobs, its tree."""
    return replace(base if base is not None else LaMOOConfig(), cp_fraction=cp_fraction, max_height=max_height,
                   min_leaf=min_leaf)


class LaMOO:
    """Latent-action multi-objective optimiser over cells 0..n-1 described by ``features``; objectives maximised."""

    def __init__(
        self,
        features: npt.ArrayLike,
        ref_point: Sequence[float] = CENAS_REF_POINT,
        seed: int = 0,
        config: LaMOOConfig | None = None,
    ) -> None:
        self.features = np.ascontiguousarray(features, dtype=np.float64)
        if self.features.ndim != 2 or len(self.features) == 0:
            raise ValueError("features must be a non-empty (n_cells, d) array")
        self.ref = (float(ref_point[0]), float(ref_point[1]))
        self.config = config or LaMOOConfig()
        self.rng = np.random.default_rng(seed)
        n = len(self.features)
        self.available = np.ones(n, dtype=bool)  # neither told nor pending
        self._cells: list[int] = []
        self._told: set[int] = set()
        self._obj_buf = np.zeros((64, 2), dtype=np.float64)  # grows by doubling; rows = told order
        self._n_at_fit = -1
        self.refits = 0
        self.tree: Tree | None = None
        self._cell_leaf = np.zeros(n, dtype=np.int64)
        self._pending_leaf: dict[int, int] = {}
        self._priority: FloatArray | None = None  # higher first inside a leaf (a prior); None: random order
        self._reset_tree_state()

    # --- public API -------------------------------------------------------------------------
    @property
    def n_told(self) -> int:
        return len(self._cells)

    @property
    def told_cells(self) -> IntArray:
        return np.asarray(self._cells, dtype=np.int64)

    @property
    def told_objectives(self) -> FloatArray:
        return self._obj_buf[: len(self._cells)].copy()

    def pareto_cells(self) -> IntArray:
        """Cells on the Pareto front of everything told."""
        if not self._cells:
            return np.zeros(0, dtype=np.int64)
        return self.told_cells[pareto_mask(self.told_objectives)]

    def hypervolume(self) -> float:
        return hypervolume_2d(self.told_objectives, self.ref)

    def ask(self, n: int = 1) -> list[int]:
        """Up to n distinct unseen cells (fewer only when the space is exhausted); they become pending."""
        if n <= 0:
            return []
        self._maybe_refit()
        out: list[int] = []
        # Large batches take a few cells per UCB walk (up to 1/32 of the batch) instead of one:
        # the counts still update between walks, and a 2,500-cell sampling hour stays cheap.
        per_walk = max(1, math.ceil(n / 32))
        while len(out) < n:
            leaf = self._select_leaf()
            if leaf < 0:
                break
            for _ in range(min(per_walk, n - len(out))):
                cell = self._pop(leaf)
                if cell < 0:
                    break  # that leaf just ran dry; _pop marked it, walk again
                out.append(cell)
        return out

    def tell(self, cells: Sequence[int] | npt.ArrayLike, objectives: npt.ArrayLike) -> None:
        """Record objectives (maximised) of cells; cells told before are ignored."""
        idx = np.atleast_1d(np.asarray(cells, dtype=np.int64))
        obj = np.asarray(objectives, dtype=np.float64).reshape(-1, 2)
        if len(idx) != len(obj):
            raise ValueError(f"{len(idx)} cells but {len(obj)} objective rows")
        fresh: list[int] = []
        for c, row in zip(idx.tolist(), obj, strict=True):
            if c in self._told:
                continue
            pos = len(self._cells)
            if pos == len(self._obj_buf):
                self._obj_buf = np.vstack([self._obj_buf, np.zeros_like(self._obj_buf)])
            self._obj_buf[pos] = row
            self._cells.append(c)
            self._told.add(c)
            fresh.append(pos)
            self.available[c] = False
            leaf = self._pending_leaf.pop(c, None)
            if leaf is not None:
                self._add_pending(leaf, -1)
        self._add_members(np.asarray(fresh, dtype=np.int64))

    def set_priority(self, priority: npt.ArrayLike | None) -> None:
        """Order cells inside each leaf by ``priority`` (higher first; ties keep the seeded random order).

        The tree still decides WHICH region to sample (UCB on what was told); the priority only decides
        which unseen cell of that region comes first — e.g. a one-shot estimate as the prior for cells
        whose true objectives nobody knows yet. None restores the uniform random order."""
        if priority is None:
            self._priority = None
        else:
            pr = np.asarray(priority, dtype=np.float64)
            if pr.shape != (len(self.features),):
                raise ValueError(f"priority needs one value per cell ({len(self.features)}), got shape {pr.shape}")
            self._priority = pr.copy()
        for leaf, pool in list(self._pool.items()):
            rest = pool[self._ptr.get(leaf, 0) :]
            self._pool[leaf] = self._ordered(rest[self.available[rest]])
            self._ptr[leaf] = 0

    def _ordered(self, pool: IntArray) -> IntArray:
        """A leaf's pool (already in seeded random order) sorted by the priority, stably."""
        if self._priority is None or len(pool) == 0:
            return pool
        return pool[np.argsort(-self._priority[pool], kind="stable")]

    def exclude(self, cells: Sequence[int]) -> None:
        """Never propose these cells (e.g. evaluated elsewhere) without telling objectives."""
        for c in cells:
            self.available[int(c)] = False

    # --- tree state ---------------------------------------------------------------------------
    def _reset_tree_state(self) -> None:
        n_nodes = 1 if self.tree is None else len(self.tree.nodes)
        self._count: list[int] = [0] * n_nodes  # told samples in the node
        # Pareto front of the node's samples: its HV is the node's value, and keeping only the
        # front makes a tell cost O(front), not O(samples in the node).
        self._front: list[FloatArray] = [np.zeros((0, 2)) for _ in range(n_nodes)]
        self._pending: list[int] = [0] * n_nodes
        self._value: list[float] = [0.0] * n_nodes
        self._dirty: list[bool] = [True] * n_nodes
        self._exhausted: list[bool] = [False] * n_nodes
        self._pool: dict[int, IntArray] = {}
        self._ptr: dict[int, int] = {}

    def _maybe_refit(self) -> None:
        cfg = self.config
        n = self.n_told
        grown = n - self._n_at_fit
        if self._n_at_fit >= 0 and grown < max(cfg.refit_min, cfg.refit_growth * self._n_at_fit):
            return
        self._fit()

    def _fit(self) -> None:
        cfg = self.config
        cells, objs = self.told_cells, self.told_objectives
        pos = self._train_positions(objs)
        if len(pos) >= 2 * cfg.min_leaf:
            # The matrices are small: one BLAS thread is faster than several fighting for 2 cores. The inputs are
            # ours (finite, valid parameters): sklearn's checks of them were a sixth of a simulated week.
            with _threadpools().limit(limits=1, user_api="blas"), \
                    sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                self.tree = build_tree(
                    self.features, cells[pos], objs[pos],
                    max_height=cfg.max_height, min_leaf=cfg.min_leaf, kernel=cfg.kernel, svm_c=cfg.svm_c,
                )
        else:
            self.tree = None
        self.refits += 1
        self._n_at_fit = self.n_told
        self._reset_tree_state()
        leaf_of = self._cell_leaf = self._leaf_of_cells()
        self._add_members(np.arange(len(self._cells), dtype=np.int64))
        for c, _ in list(self._pending_leaf.items()):
            leaf = int(leaf_of[c])
            self._pending_leaf[c] = leaf
            self._add_pending(leaf, +1)
        avail = np.nonzero(self.available)[0]
        for leaf in self._leaf_ids():
            pool = avail[leaf_of[avail] == leaf]
            self._pool[leaf] = self._ordered(self.rng.permutation(pool))
            self._ptr[leaf] = 0
            if len(pool) == 0:
                self._mark_exhausted(leaf)

    def _train_positions(self, objs: FloatArray) -> IntArray:
        n = len(objs)
        cap = self.config.max_train
        if n <= cap:
            return np.arange(n, dtype=np.int64)
        front = np.nonzero(pareto_mask(objs))[0]
        if len(front) > cap // 2:
            front = self.rng.choice(front, cap // 2, replace=False)
        rest = np.setdiff1d(np.arange(n, dtype=np.int64), front)
        extra = self.rng.choice(rest, cap - len(front), replace=False)
        return np.sort(np.concatenate([front, extra])).astype(np.int64)

    def _leaf_of_cells(self) -> IntArray:
        if self.tree is None:
            return np.zeros(len(self.features), dtype=np.int64)
        return self.tree.cell_leaf

    def _leaf_ids(self) -> list[int]:
        return [0] if self.tree is None else self.tree.leaves

    def _parent(self, node: int) -> int:
        return -1 if self.tree is None else self.tree.nodes[node].parent

    def _children(self, node: int) -> list[int]:
        return [] if self.tree is None else self.tree.nodes[node].children

    def _add_members(self, positions: IntArray) -> None:
        """Add told positions to their leaves and every ancestor (grouped by leaf: one walk per leaf)."""
        if len(positions) == 0:
            return
        # only the positions' cells: converting the whole told list at every tell made a week's tells quadratic
        cells = np.fromiter((self._cells[p] for p in positions.tolist()), dtype=np.int64, count=len(positions))
        leaves = self._cell_leaf[cells]
        for leaf in np.unique(leaves).tolist():
            in_leaf = leaves == leaf
            n_new = int(np.sum(in_leaf))
            objs = self._obj_buf[positions[in_leaf]]
            objs = objs[pareto_mask(objs)]
            node = int(leaf)
            while node >= 0:
                self._count[node] += n_new
                if len(objs):
                    # points the node's front already (weakly) dominates change neither its front's HV nor,
                    # since every ancestor's front dominates this one, any ancestor's: drop them on the way up
                    f = self._front[node]
                    if len(f):
                        dom = ((f[None, :, 0] >= objs[:, None, 0]) & (f[None, :, 1] >= objs[:, None, 1])).any(axis=1)
                        objs = objs[~dom]
                    if len(objs):
                        merged = np.vstack([f, objs])
                        self._front[node] = merged[pareto_mask(merged)]
                        self._dirty[node] = True
                node = self._parent(node)

    def _add_pending(self, leaf: int, delta: int) -> None:
        node = leaf
        while node >= 0:
            self._pending[node] += delta
            node = self._parent(node)

    def _node_value(self, node: int) -> float:
        if self._dirty[node]:
            self._value[node] = hypervolume_2d(self._front[node], self.ref)
            self._dirty[node] = False
        return self._value[node]

    def _select_leaf(self) -> int:
        """Walk from the root by UCB over non-exhausted children; -1 when the whole space is used up."""
        node = 0
        if self._exhausted[0]:
            return -1
        cp = self.config.cp_fraction * self._node_value(0)
        while True:
            kids = [k for k in self._children(node) if not self._exhausted[k]]
            if not kids:
                return node
            n_parent = max(1, self._count[node] + self._pending[node])
            best, best_score = kids[0], -math.inf
            for k in kids:  # child 0 (good) first, so ties go to the good side
                n_k = self._count[k] + self._pending[k]
                explore = math.inf if n_k == 0 else 2.0 * cp * math.sqrt(2.0 * math.log(n_parent) / n_k)
                score = self._node_value(k) + explore
                if score > best_score:
                    best, best_score = k, score
            node = best

    def _pop(self, leaf: int) -> int:
        pool, i = self._pool.get(leaf), self._ptr.get(leaf, 0)
        if pool is None:
            self._mark_exhausted(leaf)
            return -1
        while i < len(pool) and not self.available[pool[i]]:
            i += 1  # told or excluded since the pool was drawn
        if i >= len(pool):
            self._ptr[leaf] = i
            self._mark_exhausted(leaf)
            return -1
        cell = int(pool[i])
        self._ptr[leaf] = i + 1
        self.available[cell] = False
        self._pending_leaf[cell] = leaf
        self._add_pending(leaf, +1)
        return cell

    def _mark_exhausted(self, leaf: int) -> None:
        self._exhausted[leaf] = True
        node = self._parent(leaf)
        while node >= 0 and all(self._exhausted[k] for k in self._children(node)):
            self._exhausted[node] = True
            node = self._parent(node)
