"""Training data without any download: CIFAR-10 from disk, else scikit-learn's bundled digits, else a synthetic set.

CIFAR-10 is read from the standard python batches (`cifar-10-batches-py/`) with a restricted
unpickler, so it needs neither torchvision nor a network; nothing here ever downloads.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

DATASETS = ("auto", "cifar10", "digits", "synthetic")

# NB201's CIFAR normalisation.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

# Fixed so the synthetic set and the digits split are the same data whatever the training seed.
_DATA_SEED = 20240601


@dataclass
class DataBundle:
    """Loaders plus what a model factory needs to know about the inputs."""

    name: str
    train: DataLoader[Any]
    eval: DataLoader[Any]
    num_classes: int
    in_channels: int
    image_size: int
    train_size: int
    eval_size: int


class _AugmentedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random crop (padding 4) + horizontal flip on normalised CHW tensors, as NB201 trains CIFAR."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pad: int = 4) -> None:
        self.images = images
        self.labels = labels
        self.pad = pad

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        _, h, w = x.shape
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        padded = F.pad(x, (self.pad, self.pad, self.pad, self.pad))
        top = int(torch.randint(0, 2 * self.pad + 1, ()))
        left = int(torch.randint(0, 2 * self.pad + 1, ()))
        return padded[:, top : top + h, left : left + w], self.labels[i]


class _CifarUnpickler(pickle.Unpickler):
    """Only the numpy globals the CIFAR python batches need: a tampered file cannot run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which a CIFAR batch never needs")


def cifar10_dir(data_dir: Path | None) -> Path | None:
    """The `cifar-10-batches-py` folder under (or at) data_dir, when all six batches are there."""
    if data_dir is None:
        return None
    for cand in (data_dir / "cifar-10-batches-py", data_dir):
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if all((cand / n).is_file() for n in names):
            return cand
    return None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            d = _CifarUnpickler(f, encoding="latin1").load()
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({e}) — replace it with the original file") from None
    if data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels — replace it with the original")
    return data, labels


def _normalise(images_u8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = torch.from_numpy(images_u8).float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def _cap(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _resize(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    if image_size is None or image_size == x.shape[-1]:
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)


def cifar10_tensors(
    root: Path, max_train: int | None = None, max_eval: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised CIFAR-10 train (50k) and test (10k) tensors from the python batches at root."""
    parts = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(root / "test_batch")
    a, b = _cap(_normalise(xtr, CIFAR_MEAN, CIFAR_STD), torch.from_numpy(ytr), max_train)
    c, d = _cap(_normalise(xte, CIFAR_MEAN, CIFAR_STD), torch.from_numpy(yte), max_eval)
    return a, b, c, d


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), 1 channel, a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = d.images.astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, d.target.astype(np.int64), test_size=0.2, random_state=_DATA_SEED % (2**31), stratify=d.target
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    to_t = lambda a: torch.from_numpy((a - mean) / std).unsqueeze(1)  # noqa: E731
    return to_t(x_tr), torch.from_numpy(y_tr), to_t(x_te), torch.from_numpy(y_te)


def synthetic_tensors(
    n_train: int = 1024,
    n_eval: int = 256,
    num_classes: int = 10,
    channels: int = 3,
    image_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A deterministic, learnable image set: per-class smooth random prototypes plus noise."""
    g = torch.Generator().manual_seed(_DATA_SEED)
    protos = torch.randn(num_classes, channels, image_size, image_size, generator=g)
    # Smooth the prototypes so convolutions (not just the classifier) have spatial structure to find.
    protos = F.avg_pool2d(protos, 5, stride=1, padding=2, count_include_pad=False) * 2.0

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = protos[y] + torch.randn(n, channels, image_size, image_size, generator=g)
        return x, y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_eval)
    return xtr, ytr, xte, yte


def load_data(
    name: str = "auto",
    data_dir: Path | None = None,
    batch_size: int = 64,
    *,
    image_size: int | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_eval: int | None = None,
    augment: bool = True,
    num_workers: int = 0,
) -> DataBundle:
    """Loaders for `cifar10` (from data_dir, never downloaded), `digits`, `synthetic`, or `auto` (the first available).

    image_size resizes the images (bilinear) when given: digits are natively 8×8, the others 32×32.
    ValueError names a bad input and the fix.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} — use one of {', '.join(DATASETS)}")
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} must be ≥ 1")
    if image_size is not None and image_size < 4:
        raise ValueError(f"image size {image_size} must be ≥ 4")
    chosen = name
    if name == "auto":
        if cifar10_dir(data_dir) is not None:
            chosen = "cifar10"
        else:
            try:
                import sklearn.datasets  # noqa: F401

                chosen = "digits"
            except ImportError:
                chosen = "synthetic"

    train_ds: Dataset[Any]
    if chosen == "cifar10":
        root = cifar10_dir(data_dir)
        if root is None:
            where = str(data_dir) if data_dir else "(no --data-dir given)"
            raise ValueError(
                f"CIFAR-10 not found under {where} — put the python batches (cifar-10-batches-py/) there, "
                "or use --dataset digits|synthetic (nothing is downloaded at run time)"
            )
        xtr, ytr, xte, yte = cifar10_tensors(root, max_train, max_eval)
        xtr, xte = _resize(xtr, image_size), _resize(xte, image_size)
        train_ds = _AugmentedImages(xtr, ytr) if augment else TensorDataset(xtr, ytr)
        num_classes = 10
    elif chosen == "digits":
        xtr, ytr, xte, yte = digits_tensors()
        xtr, ytr = _cap(_resize(xtr, image_size), ytr, max_train)
        xte, yte = _cap(_resize(xte, image_size), yte, max_eval)
        train_ds = TensorDataset(xtr, ytr)
        num_classes = 10
    else:
        size = image_size or 32
        xtr, ytr, xte, yte = synthetic_tensors(
            n_train=max_train or 1024, n_eval=max_eval or 256, image_size=size
        )
        train_ds = TensorDataset(xtr, ytr)
        num_classes = 10

    g = torch.Generator().manual_seed(seed)
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=g, num_workers=num_workers)
    evl = DataLoader(TensorDataset(xte, yte), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return DataBundle(
        name=chosen,
        train=train,
        eval=evl,
        num_classes=num_classes,
        in_channels=int(xtr.shape[1]),
        image_size=int(xtr.shape[-1]),
        train_size=int(xtr.shape[0]),
        eval_size=int(xte.shape[0]),
    )
