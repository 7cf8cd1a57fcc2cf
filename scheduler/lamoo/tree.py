"""LaMOO's learned partition tree: k-means on (features, dominance number) then an SVM boundary, recursively."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata
from sklearn.svm import SVC

from jouled.scheduler.hypervolume import dominance_numbers

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Kernel = Literal["poly", "rbf"]


class LabelSVC(SVC):  # type: ignore[misc]
    """scikit-learn's SVC for LaMOO's own 0/1 k-means labels: the target checks are skipped.

    `BaseSVC._validate_targets` runs `check_classification_targets` and `compute_class_weight` on every fit: half
    of a fit's time on LaMOO's ~200-sample splits (0.48 of 0.94 s in a profiled simulator run). Our labels are
    integers from k-means with both classes present, so this does what that method does with no class weight —
    the same classes_, class_weight_ and targets — and defers to it otherwise (tests compare the two)."""

    def _validate_targets(self, y: Any) -> npt.NDArray[np.float64]:
        y_arr = np.asarray(y)
        if self.class_weight is not None or y_arr.ndim != 1 or y_arr.dtype.kind not in "iu":
            return np.asarray(super()._validate_targets(y), dtype=np.float64)
        cls, inv = np.unique(y_arr, return_inverse=True)
        if len(cls) < 2:
            return np.asarray(super()._validate_targets(y), dtype=np.float64)  # its own error
        self.class_weight_ = np.ones(len(cls), dtype=np.float64)
        self.classes_ = cls
        return np.asarray(inv, dtype=np.float64, order="C")


@dataclass
class Node:
    """A region of the space. Internal nodes hold the SVM that sends a cell to child 0 (good) or 1 (bad)."""

    id: int
    depth: int
    parent: int  # -1 for the root
    children: list[int] = field(default_factory=list)
    svm: SVC | None = None
    good_label: int = 0  # SVM class meaning "good" (child 0)


def kmeans2(data: FloatArray, dominance: IntArray, iters: int = 20) -> IntArray:
    """Two-cluster Lloyd k-means, seeded at the least and most dominated samples (deterministic, no RNG)."""
    c = np.stack([data[int(np.argmin(dominance))], data[int(np.argmax(dominance))]])
    labels = np.zeros(len(data), dtype=np.int64)
    for _ in range(iters):
        d = ((data[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        new = np.asarray(np.argmin(d, axis=1), dtype=np.int64)
        if _ > 0 and np.array_equal(new, labels):
            break
        labels = new
        for k in (0, 1):
            if np.any(labels == k):
                c[k] = data[labels == k].mean(axis=0)
    return labels


def svm_decision(svm: SVC, x: npt.NDArray[np.floating[Any]]) -> FloatArray:
    """SVC decision function in numpy (a BLAS product, float32: far faster than libsvm's per-row loop).

    Used for every split and routing decision, so the partition is consistent with itself; it
    matches SVC.decision_function to float32 rounding.
    """
    sv = svm.support_vectors_.astype(np.float32)
    xf = np.asarray(x, dtype=np.float32)
    dual = svm.dual_coef_[0].astype(np.float32)
    out = np.empty(len(xf), dtype=np.float64)
    # in blocks of rows: the (rows x support vectors) kernel block stays in cache — ~4x faster than one pass
    for s in range(0, len(xf), _BLOCK_ROWS):
        out[s : s + _BLOCK_ROWS] = _kernel(svm, xf[s : s + _BLOCK_ROWS], sv) @ dual
    return out + float(svm.intercept_[0])


_BLOCK_ROWS = 2048


def _kernel(svm: SVC, xf: npt.NDArray[np.float32], sv: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    gamma = np.float32(svm._gamma)
    if svm.kernel == "poly":
        base = gamma * (xf @ sv.T) + np.float32(svm.coef0)
        k = base.copy()
        for _ in range(int(svm.degree) - 1):  # repeated product: far faster than a float power
            k *= base
        return k
    if svm.kernel == "rbf":
        d2 = (xf * xf).sum(axis=1)[:, None] + (sv * sv).sum(axis=1)[None, :] - np.float32(2.0) * (xf @ sv.T)
        return np.exp(-gamma * np.maximum(d2, np.float32(0.0)))
    raise ValueError(f"unsupported kernel {svm.kernel}")  # pragma: no cover - only poly/rbf are offered


def svm_predict(svm: SVC, x: npt.NDArray[np.floating[Any]]) -> IntArray:
    """Class labels as SVC.predict gives them (decision > 0 → classes_[1])."""
    dec = svm_decision(svm, x)
    return np.where(dec > 0, svm.classes_[1], svm.classes_[0]).astype(np.int64)


@dataclass
class Tree:
    """A fitted partition: the nodes and, for every cell of the space, the leaf it falls in."""

    nodes: list[Node]
    cell_leaf: IntArray  # leaf node id per cell
    leaves: list[int]

    def path(self, leaf: int) -> list[int]:
        out = [leaf]
        while self.nodes[out[-1]].parent >= 0:
            out.append(self.nodes[out[-1]].parent)
        return out[::-1]


def build_tree(
    features: FloatArray,
    train_cells: IntArray,
    train_objectives: FloatArray,
    *,
    max_height: int = 3,
    min_leaf: int = 10,
    kernel: Kernel = "poly",
    svm_c: float = 1.0,
) -> Tree:
    """Fit the tree on (train_cells, objectives) and route every cell of ``features`` to a leaf.

    A node splits when it is shallower than max_height, holds >= 2·min_leaf training samples, and
    the SVM puts >= min_leaf of them on each side; otherwise it is a leaf.
    """
    nodes: list[Node] = [Node(id=0, depth=0, parent=-1)]
    f32 = np.asarray(features, dtype=np.float32)  # routing runs in float32 (svm_decision): convert once
    cell_leaf = np.zeros(len(features), dtype=np.int64)
    leaves: list[int] = []
    # stack of (node id, training positions, cells routed here)
    stack: list[tuple[int, IntArray, IntArray]] = [
        (0, np.arange(len(train_cells), dtype=np.int64), np.arange(len(features), dtype=np.int64))
    ]
    while stack:
        nid, pos, cells = stack.pop()
        node = nodes[nid]
        split = _try_split(
            features, train_cells, train_objectives, pos, node.depth, max_height, min_leaf, kernel, svm_c
        )
        if split is None:
            leaves.append(nid)
            cell_leaf[cells] = nid
            continue
        svm, good_label, pos_good, pos_bad = split
        node.svm, node.good_label = svm, good_label
        goes_good = svm_predict(svm, f32[cells]) == good_label
        for child_pos, child_cells in ((pos_good, cells[goes_good]), (pos_bad, cells[~goes_good])):
            cid = len(nodes)
            nodes.append(Node(id=cid, depth=node.depth + 1, parent=nid))
            node.children.append(cid)
            stack.append((cid, child_pos, child_cells))
    leaves.sort()
    return Tree(nodes=nodes, cell_leaf=cell_leaf, leaves=leaves)


def _try_split(
    features: FloatArray,
    train_cells: IntArray,
    objectives: FloatArray,
    pos: IntArray,
    depth: int,
    max_height: int,
    min_leaf: int,
    kernel: Kernel,
    svm_c: float,
) -> tuple[SVC, int, IntArray, IntArray] | None:
    if depth >= max_height or len(pos) < 2 * min_leaf:
        return None
    x = features[train_cells[pos]]
    dom = dominance_numbers(objectives[pos])
    if dom.max() == dom.min():
        return None  # every sample equally good: nothing to learn
    # k-means sees the features and the dominance number, as in LaMOO. The dominance number enters
    # as its rank scaled to the features' norm: raw counts are heavy-tailed (a few very bad cells),
    # which makes k-means cut off a tiny "bad" cluster instead of separating good from bad.
    dom_rank = (rankdata(dom) - 1.0) / max(len(dom) - 1, 1)
    data = np.hstack([x, (dom_rank * math.sqrt(x.shape[1]))[:, None]])
    labels = kmeans2(data, dom)
    if labels.min() == labels.max():
        return None
    good = 0 if dom[labels == 0].mean() <= dom[labels == 1].mean() else 1
    svm = LabelSVC(kernel=kernel, gamma="scale", C=svm_c)
    try:
        svm.fit(x, labels)
    except ValueError:
        return None
    pred = svm_predict(svm, x) == good
    if pred.sum() < min_leaf or (~pred).sum() < min_leaf:
        return None
    return svm, good, pos[pred], pos[~pred]
