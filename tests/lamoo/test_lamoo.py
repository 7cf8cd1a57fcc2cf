"""LaMOO on the real NB201 table: tree structure, determinism, region sampling, and search quality vs random."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon
from sklearn.svm import SVC

from jouled.scheduler.hypervolume import hypervolume_2d
from jouled.scheduler.lamoo import LaMOO, LaMOOConfig, build_tree, kmeans2, svm_decision
from jouled.scheduler.space import Benchmark


@pytest.mark.parametrize("kernel", ["poly", "rbf"])
def test_numpy_svm_decision_matches_sklearn(kernel: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (200, 30)).astype(float)
    y = (x[:, :5].sum(axis=1) > 2).astype(int)
    svm = SVC(kernel=kernel, gamma="scale").fit(x, y)
    q = rng.integers(0, 2, (500, 30)).astype(float)
    assert np.allclose(svm_decision(svm, q), svm.decision_function(q), atol=1e-3)


def test_kmeans2_separates_two_blobs() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, (20, 3)), rng.normal(5, 0.1, (30, 3))
    labels = kmeans2(np.vstack([a, b]), np.r_[np.zeros(20, int), np.ones(30, int) * 3])
    assert (labels[:20] == 0).all() and (labels[20:] == 1).all()


def test_tree_respects_height_and_leaf_size(bench: Benchmark) -> None:
    rng = np.random.default_rng(0)
    cells = rng.choice(bench.n, 400, replace=False)
    tree = build_tree(bench.features(), cells, bench.true_objectives(cells), max_height=3, min_leaf=10)
    assert len(tree.leaves) > 1
    assert max(n.depth for n in tree.nodes) <= 3
    train_leaf = tree.cell_leaf[cells]
    for leaf in tree.leaves:
        assert (train_leaf == leaf).sum() >= 10
        assert tree.path(leaf)[0] == 0
    assert set(np.unique(tree.cell_leaf).tolist()) <= set(tree.leaves)
    # the good child of the root holds better samples (lower mean dominance) than the bad one
    root = tree.nodes[0]
    good, bad = root.children
    in_good = np.isin(train_leaf, [lf for lf in tree.leaves if good in tree.path(lf)])
    objs = bench.true_objectives(cells)
    assert hypervolume_2d(objs[in_good]) >= hypervolume_2d(objs[~in_good])
    assert bad != good


def _run(bench: Benchmark, seed: int, budget: int, batch: int = 10) -> LaMOO:
    y = bench.true_objectives()
    m = LaMOO(bench.features(), seed=seed)
    while m.n_told < budget:
        c = m.ask(min(batch, budget - m.n_told))
        m.tell(c, y[c])
    return m


def test_deterministic_given_a_seed(bench: Benchmark) -> None:
    a, b, c = _run(bench, 7, 120), _run(bench, 7, 120), _run(bench, 8, 120)
    assert a.told_cells.tolist() == b.told_cells.tolist()
    assert a.told_cells.tolist() != c.told_cells.tolist()


def test_ask_proposes_unseen_distinct_cells_from_the_selected_leaf(bench: Benchmark) -> None:
    m = _run(bench, 1, 100)
    seen = set(m.told_cells.tolist())
    m._maybe_refit()
    leaf = m._select_leaf()
    got = m.ask(5)
    assert len(set(got)) == 5 and not seen & set(got)
    assert m.tree is not None and m.tree.cell_leaf[got[0]] == leaf
    assert not set(got) & set(m.ask(50))  # pending cells are not proposed twice


def test_tell_ignores_repeats_and_checks_shapes(bench: Benchmark) -> None:
    m = LaMOO(bench.features(), seed=0)
    m.tell([1, 2], [[90.0, -20.0], [80.0, -10.0]])
    m.tell([1], [[10.0, -10.0]])
    assert m.n_told == 2 and m.told_objectives[0].tolist() == [90.0, -20.0]
    with pytest.raises(ValueError):
        m.tell([3, 4], [[1.0, 1.0]])


def test_refits_are_bounded(bench: Benchmark) -> None:
    m = _run(bench, 0, 600, batch=1)
    # growth-based refits: about log(600/10)/log(1.25) + 10, far fewer than 600 asks
    assert m.refits <= 40


def test_lamoo_finds_better_fronts_than_random(bench: Benchmark) -> None:
    """12 paired seeds, 200 true evaluations each: LaMOO's HV regret is smaller (one-sided Wilcoxon)."""
    y = bench.true_objectives()
    best = hypervolume_2d(y)
    lamoo_regret, random_regret = [], []
    for seed in range(12):
        m = _run(bench, seed, 200)
        pick = np.random.default_rng(10_000 + seed).choice(bench.n, 200, replace=False)
        lamoo_regret.append(best - m.hypervolume())
        random_regret.append(best - hypervolume_2d(y[pick]))
    assert np.mean(lamoo_regret) < np.mean(random_regret)
    assert wilcoxon(lamoo_regret, random_regret, alternative="less").pvalue < 0.01


def test_config_kernel_rbf_runs(bench: Benchmark) -> None:
    y = bench.true_objectives()
    m = LaMOO(bench.features(), seed=0, config=LaMOOConfig(kernel="rbf"))
    for _ in range(5):
        c = m.ask(20)
        m.tell(c, y[c])
    assert m.n_told == 100 and m.tree is not None and m.tree.nodes[0].svm is not None
