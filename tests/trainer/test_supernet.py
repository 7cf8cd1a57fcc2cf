"""SPOS supernet: uniform single-path training lowers the loss; inherited-weight scores separate cells."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import torch

from jouled.trainer.nb201 import OPS, to_arch_str
from jouled.trainer.supernet import OneShot, Supernet

from .conftest import RecordingMarkers

UNIFORM = {op: to_arch_str((op,) * 6) for op in OPS}


def test_sampling_is_uniform_over_ops() -> None:
    net = Supernet(channels=4, cells_per_stage=1, in_channels=1)
    rng = random.Random(0)
    counts = Counter(op for _ in range(2000) for op in net.sample_path(rng))
    assert set(counts) == set(range(5))
    assert all(abs(c / 12000 - 0.2) < 0.02 for c in counts.values())


def test_path_selects_the_ops() -> None:
    net = Supernet(channels=4, cells_per_stage=1, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    net.set_arch(UNIFORM["none"])
    a = net(x)
    assert torch.allclose(a, net(torch.randn(2, 1, 8, 8)))  # all-none path ignores the input
    net.set_arch(UNIFORM["nor_conv_3x3"])
    assert not torch.allclose(a, net(x))
    with pytest.raises(ValueError):
        net.set_arch("|bad~0|")


@pytest.fixture(scope="module")
def trained(digits: Any) -> tuple[OneShot, list[Any], RecordingMarkers]:
    torch.set_num_threads(1)
    rec = RecordingMarkers()
    one = OneShot(digits, channels=8, cells_per_stage=1, seed=0, recalibrate_batches=4, markers=rec)
    hist = one.train(3, run_id="sn")
    return one, hist, rec


def test_supernet_training_lowers_the_loss(trained: tuple[OneShot, list[Any], RecordingMarkers]) -> None:
    _, hist, rec = trained
    assert hist[-1].train_loss < hist[0].train_loss
    assert rec.log[0] == ("run", "start", "sn")
    assert ("phase", "start", 0, "train") in rec.log


def test_scores_distinguish_cells_and_repeat(trained: tuple[OneShot, list[Any], RecordingMarkers]) -> None:
    one, _, _ = trained
    scores = {op: one.score(a) for op, a in UNIFORM.items()}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert len({round(s, 6) for s in scores.values()}) >= 3
    assert scores["none"] < 0.2  # a cell that passes nothing is at chance (10 classes)
    assert max(scores.values()) > 0.3  # trained paths beat chance with inherited weights
    assert one.score(UNIFORM["skip_connect"]) == scores["skip_connect"]  # BN recalibration is repeatable


def test_score_many_is_one_sample_window(trained: tuple[OneShot, list[Any], RecordingMarkers]) -> None:
    one, _, rec = trained
    before = len(rec.log)
    out = one.score_many([UNIFORM["none"], UNIFORM["nor_conv_3x3"]], run_id="s1")
    assert set(out) == {UNIFORM["none"], UNIFORM["nor_conv_3x3"]}
    assert rec.log[before:] == [
        ("run", "start", "s1"),
        ("epoch", "start", 0),
        ("phase", "start", 0, "sample"),
        ("phase", "end", 0, "sample"),
        ("epoch", "end", 0),
        ("run", "end", "s1"),
    ]
