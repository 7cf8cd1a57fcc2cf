"""Training loop: loss falls, marker hooks fire in order, checkpoints resume at the right epoch, device errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from jouled.trainer.nb201 import EXAMPLE_ARCH_STR, TinyNetwork
from jouled.trainer.train import (
    CheckpointError,
    NullMarkers,
    gpu_names,
    load_checkpoint,
    resolve_device,
    train,
)

from .conftest import RecordingMarkers


def _net(seed: int = 0) -> TinyNetwork:
    torch.manual_seed(seed)
    return TinyNetwork(EXAMPLE_ARCH_STR, channels=8, cells_per_stage=1, num_classes=10, in_channels=1)


def test_two_epochs_on_digits_loss_falls_and_markers_in_order(digits: Any) -> None:
    rec = RecordingMarkers()
    res = train(_net(), digits, 2, "cpu", rec, run_id="r1", arch=EXAMPLE_ARCH_STR, lr=0.05)
    assert [m.epoch for m in res.epochs] == [0, 1]
    e0, e1 = res.epochs
    assert e1.train_loss < e0.train_loss
    assert e1.eval_accuracy > 0.2  # chance is 0.1
    assert e0.train_samples == digits.train_size and e0.eval_samples == digits.eval_size
    assert e0.train_samples_per_s == pytest.approx(e0.train_samples / e0.train_duration_s)
    assert e0.duration_s >= e0.train_duration_s + e0.eval_duration_s - 1e-6
    assert e1.lr < e0.lr  # cosine schedule
    assert rec.runs == [{"run_id": "r1", "arch": EXAMPLE_ARCH_STR, "gpus": []}]
    expected: list[tuple[Any, ...]] = [("run", "start", "r1")]
    for ep in (0, 1):
        expected += [
            ("epoch", "start", ep),
            ("phase", "start", ep, "train"),
            ("phase", "end", ep, "train"),
            ("phase", "start", ep, "eval"),
            ("phase", "end", ep, "eval"),
            ("epoch", "end", ep),
        ]
    expected.append(("run", "end", "r1"))
    assert rec.log == expected


def test_resume_continues_after_the_last_finished_epoch(tmp_path: Path) -> None:
    """A worker killed after epoch 1 resumes at epoch 2 and ends with exactly the weights of an uninterrupted run."""
    from jouled.trainer.data import load_data

    def data() -> Any:
        return load_data("digits", batch_size=128, seed=3, max_train=384, max_eval=128)

    ref = _net()
    train(ref, data(), 3, "cpu", NullMarkers(), arch="a", seed=3)

    ckpt = tmp_path / "ck.pt"

    class Killed(Exception):
        pass

    def kill_after_epoch_1(m: Any) -> None:
        if m.epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train(_net(), data(), 3, "cpu", NullMarkers(), run_id="run-x", arch="a", seed=3, checkpoint=ckpt,
              on_epoch=kill_after_epoch_1)
    assert load_checkpoint(ckpt)["epoch_done"] == 2

    rec = RecordingMarkers()
    moved = _net(seed=99)  # a fresh process: different initial weights, overwritten by the checkpoint
    res = train(moved, data(), 3, "cpu", rec, arch="a", seed=3, checkpoint=ckpt)
    assert res.start_epoch == 2
    assert res.run_id == "run-x"  # taken from the checkpoint
    assert [m.epoch for m in res.epochs] == [0, 1, 2]
    assert [e for e in rec.log if e[0] == "epoch"] == [("epoch", "start", 2), ("epoch", "end", 2)]
    for (k, a), b in zip(ref.state_dict().items(), moved.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k

    # Finished: a further call trains nothing and publishes nothing.
    rec2 = RecordingMarkers()
    again = train(_net(), data(), 3, "cpu", rec2, arch="a", checkpoint=ckpt)
    assert again.start_epoch == 3 and rec2.log == []


def test_checkpoint_mismatches_are_refused(tmp_path: Path, digits: Any) -> None:
    ckpt = tmp_path / "ck.pt"
    train(_net(), digits, 1, "cpu", arch="a", checkpoint=ckpt, max_batches=1)
    with pytest.raises(CheckpointError, match="is for arch 'a'"):
        train(_net(), digits, 1, "cpu", arch="b", checkpoint=ckpt, max_batches=1)
    with pytest.raises(CheckpointError, match="pass --epochs 1"):
        train(_net(), digits, 4, "cpu", arch="a", checkpoint=ckpt, max_batches=1)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read it"):
        train(_net(), digits, 1, "cpu", arch="a", checkpoint=junk)
    # resume=False starts afresh and overwrites
    res = train(_net(), digits, 2, "cpu", arch="b", checkpoint=ckpt, resume=False, max_batches=1)
    assert res.start_epoch == 0 and load_checkpoint(ckpt)["arch"] == "b"


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA not available — use --device cpu"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="CUDA not available"):
            train(_net(), None, 1, "cuda:0")  # type: ignore[arg-type]


def test_gpu_names_follow_cuda_visible_devices() -> None:
    assert gpu_names(torch.device("cpu"), {}) == []
    assert gpu_names(torch.device("cuda:1"), {}) == ["gpu1"]
    assert gpu_names(torch.device("cuda:1"), {"CUDA_VISIBLE_DEVICES": "4,6"}) == ["gpu6"]
    assert gpu_names(torch.device("cuda"), {"CUDA_VISIBLE_DEVICES": "3"}) == ["gpu3"]
    # UUIDs cannot be mapped to an NVML index here: fall back to torch's numbering
    assert gpu_names(torch.device("cuda:0"), {"CUDA_VISIBLE_DEVICES": "GPU-1234"}) == ["gpu0"]


def test_epochs_must_be_positive(digits: Any) -> None:
    with pytest.raises(ValueError, match="epochs 0"):
        train(_net(), digits, 0)
