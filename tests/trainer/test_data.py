"""Data: digits and synthetic sets, CIFAR-10 python batches from disk only, errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jouled.trainer.data import cifar10_dir, load_data


def test_digits_shapes_and_split(digits: Any) -> None:
    assert digits.name == "digits"
    assert (digits.in_channels, digits.image_size, digits.num_classes) == (1, 8, 10)
    assert digits.train_size + digits.eval_size == 1797
    x, y = next(iter(digits.train))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.int64
    assert set(torch.cat([b[1] for b in digits.eval]).tolist()) == set(range(10))


def test_resize_and_caps() -> None:
    d = load_data("digits", batch_size=16, image_size=16, max_train=100, max_eval=40)
    assert d.image_size == 16 and d.train_size == 100 and d.eval_size == 40
    assert next(iter(d.train))[0].shape == (16, 1, 16, 16)


def test_synthetic_is_deterministic_and_seed_only_shuffles() -> None:
    a = load_data("synthetic", batch_size=32, image_size=8, max_train=64, max_eval=32, seed=1)
    b = load_data("synthetic", batch_size=32, image_size=8, max_train=64, max_eval=32, seed=1)
    c = load_data("synthetic", batch_size=32, image_size=8, max_train=64, max_eval=32, seed=2)
    xa, xb = next(iter(a.train))[0], next(iter(b.train))[0]
    assert torch.equal(xa, xb)
    assert torch.equal(next(iter(a.eval))[0], next(iter(c.eval))[0])  # same data, whatever the seed
    assert not torch.equal(xa, next(iter(c.train))[0])  # another order
    assert a.in_channels == 3 and a.image_size == 8


def _write_fake_cifar(root: Path, n: int = 20) -> Path:
    """Batches in the real CIFAR-10 python format (dict with uint8 `data` rows and a `labels` list)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}
        with (d / name).open("wb") as f:
            pickle.dump(batch, f)
    return d


def test_cifar10_from_disk_and_auto(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    assert cifar10_dir(tmp_path) == tmp_path / "cifar-10-batches-py"
    d = load_data("auto", tmp_path, batch_size=8)
    assert d.name == "cifar10" and d.train_size == 100 and d.eval_size == 20
    x, _ = next(iter(d.train))
    assert x.shape == (8, 3, 32, 32)
    no_aug = load_data("cifar10", tmp_path, batch_size=100, augment=False)
    assert abs(float(next(iter(no_aug.train))[0].mean())) < 1.0  # normalised


def test_cifar10_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CIFAR-10 not found") as e:
        load_data("cifar10", tmp_path)
    assert "download" in str(e.value)
    assert load_data("auto", tmp_path).name == "digits"


def test_tampered_cifar_batch_is_refused(tmp_path: Path) -> None:
    d = _write_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("should never run",))

    with (d / "test_batch").open("wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        load_data("cifar10", tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"name": "imagenet"}, "unknown dataset"), ({"batch_size": 0}, "batch size"), ({"image_size": 2}, "image size")],
)
def test_bad_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"name": "digits"} | kwargs
    with pytest.raises(ValueError, match=fragment):
        load_data(**args)
