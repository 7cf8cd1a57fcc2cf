"""One-shot SPOS supernet over the NB201 cell: uniform single-path training, scoring cells with inherited weights.

Each edge of each cell holds all 5 ops; a training step samples one op per edge uniformly
(Guo et al., SPOS) and all cells of the network share that genotype, as NB201 cells do.
Scoring a cell fixes its path, re-estimates BatchNorm statistics for that path on a few
training batches (the weights are shared, the statistics are not), and measures accuracy.
This is CE-NAS's cheap "sampling" estimate.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from jouled.trainer.data import DataBundle
from jouled.trainer.nb201 import (
    NUM_EDGES,
    NUM_NODES,
    OPS,
    ResNetBasicBlock,
    build_op,
    macro_layout,
    ops_to_indices,
    parse_arch_str,
    to_arch_str,
)
from jouled.trainer.train import (
    EpochMetrics,
    Markers,
    NullMarkers,
    evaluate,
    gpu_names,
    resolve_device,
    train_one_epoch,
)


class SearchCell(nn.Module):
    """An NB201 cell whose every edge holds all candidate ops; `path` picks one per edge."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # affine=False as in NB201's search models: a shared affine BN would be pulled between ops.
        self.edges = nn.ModuleList(
            nn.ModuleList(build_op(op, channels, affine=False) for op in OPS) for _ in range(NUM_EDGES)
        )

    def forward(self, x: torch.Tensor, path: Sequence[int]) -> torch.Tensor:
        nodes = [x]
        k = 0
        for target in range(1, NUM_NODES):
            acc = self.edges[k][path[k]](nodes[0])  # type: ignore[index]
            for src in range(1, target):
                acc = acc + self.edges[k + src][path[k + src]](nodes[src])  # type: ignore[index]
            k += target
            nodes.append(acc)
        return nodes[-1]


class Supernet(nn.Module):
    """The `infer.tiny` macro net with SearchCells; `forward` runs the current `path` (6 op indices)."""

    def __init__(
        self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c_prev = channels
        for width, reduction in macro_layout(channels, cells_per_stage):
            layers.append(ResNetBasicBlock(c_prev, width, 2) if reduction else SearchCell(width))
            c_prev = width
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.path: tuple[int, ...] = ops_to_indices(("nor_conv_3x3",) * NUM_EDGES)

    def set_arch(self, arch: str | Sequence[str]) -> None:
        ops = parse_arch_str(arch) if isinstance(arch, str) else tuple(arch)
        to_arch_str(ops)  # validates
        self.path = ops_to_indices(ops)

    def sample_path(self, rng: random.Random) -> tuple[int, ...]:
        """Uniform single path: each edge's op drawn independently and uniformly (SPOS)."""
        self.path = tuple(rng.randrange(len(OPS)) for _ in range(NUM_EDGES))
        return self.path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        for layer in self.cells:
            out = layer(out, self.path) if isinstance(layer, SearchCell) else layer(out)
        out = self.lastact(out)
        return self.classifier(torch.flatten(self.global_pooling(out), 1))


def train_supernet(
    net: Supernet,
    data: DataBundle,
    epochs: int,
    device: str | torch.device = "cpu",
    markers: Markers | None = None,
    *,
    run_id: str | None = None,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    max_batches: int | None = None,
) -> list[EpochMetrics]:
    """SPOS training: a fresh uniform path every step, SGD with cosine LR; each epoch is one `train` phase.

    Returns per-epoch metrics (the eval fields are NaN: a supernet has no single accuracy of its own).
    """
    if epochs < 1:
        raise ValueError(f"epochs {epochs} must be ≥ 1")
    dev = resolve_device(device) if isinstance(device, str) else device
    markers = markers or NullMarkers()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    out: list[EpochMetrics] = []
    rid = run_id or f"supernet-{uuid.uuid4().hex[:12]}"
    with markers.run(rid, arch="supernet", gpus=gpu_names(dev)) as r:
        for ep in range(epochs):
            lr_now = float(opt.param_groups[0]["lr"])
            with r.epoch(ep):
                t0 = time.perf_counter()
                with r.phase("train"):
                    loss, acc, n = train_one_epoch(
                        net, data.train, opt, dev, max_batches, before_step=lambda: net.sample_path(rng)
                    )
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                dt = time.perf_counter() - t0
            sched.step()
            out.append(
                EpochMetrics(
                    epoch=ep,
                    lr=lr_now,
                    train_loss=loss,
                    train_accuracy=acc,
                    train_samples=n,
                    train_duration_s=dt,
                    train_samples_per_s=n / dt if dt > 0 else math.nan,
                    eval_loss=math.nan,
                    eval_accuracy=math.nan,
                    eval_samples=0,
                    eval_duration_s=0.0,
                    eval_samples_per_s=math.nan,
                    duration_s=dt,
                )
            )
    return out


@torch.no_grad()
def recalibrate_bn(net: nn.Module, loader: DataLoader[Any], device: torch.device, batches: int) -> None:
    """Replace every BN's running statistics by their plain average over `batches` batches of the current path."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    net.train()
    for i, (x, _y) in enumerate(loader):
        if i >= batches:
            break
        net(x.to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


def score(
    net: Supernet,
    arch: str,
    data: DataBundle,
    device: str | torch.device = "cpu",
    *,
    recalibrate_batches: int = 8,
    max_batches: int | None = None,
) -> float:
    """Accuracy (0…1) of `arch` on the eval set with inherited weights; BN re-estimated first unless 0 batches."""
    dev = resolve_device(device) if isinstance(device, str) else device
    net.to(dev)
    net.set_arch(arch)
    if recalibrate_batches > 0:
        # A fixed, unshuffled pass: the same arch gets the same statistics, so scores are repeatable.
        calib = DataLoader(data.train.dataset, batch_size=data.train.batch_size or 64, shuffle=False)
        recalibrate_bn(net, calib, dev, recalibrate_batches)
    _loss, acc, _n = evaluate(net, data.eval, dev, max_batches)
    return acc


class OneShot:
    """A supernet with its data and device: `train(epochs)` once, then `score(arch_str)` many cells cheaply."""

    def __init__(
        self,
        data: DataBundle,
        device: str = "cpu",
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
        seed: int = 0,
        recalibrate_batches: int = 8,
        max_batches: int | None = None,
        markers: Markers | None = None,
    ) -> None:
        self.data = data
        self.device = resolve_device(device)
        self.seed = seed
        self.recalibrate_batches = recalibrate_batches
        self.max_batches = max_batches
        self.markers = markers or NullMarkers()
        torch.manual_seed(seed)
        self.net = Supernet(channels, cells_per_stage, data.num_classes, data.in_channels)
        self.history: list[EpochMetrics] = []

    def train(self, epochs: int, *, run_id: str | None = None, lr: float = 0.05) -> list[EpochMetrics]:
        self.history = train_supernet(
            self.net,
            self.data,
            epochs,
            self.device,
            self.markers,
            run_id=run_id,
            lr=lr,
            seed=self.seed,
            max_batches=self.max_batches,
        )
        return self.history

    def score(self, arch: str) -> float:
        return score(
            self.net,
            arch,
            self.data,
            self.device,
            recalibrate_batches=self.recalibrate_batches,
            max_batches=self.max_batches,
        )

    def score_many(self, archs: Sequence[str], run_id: str | None = None) -> dict[str, float]:
        """Score several cells inside one `sample` phase window, so the daemon can price the sampling work."""
        with self._sample_window(run_id) as _:
            return {a: self.score(a) for a in archs}

    def _sample_window(self, run_id: str | None) -> AbstractContextManager[Any]:
        @contextlib.contextmanager
        def window() -> Any:
            rid = run_id or f"sample-{uuid.uuid4().hex[:12]}"
            # A phase belongs to an epoch in the marker model: sampling is epoch 0 of its own run.
            with self.markers.run(rid, arch="supernet", gpus=gpu_names(self.device)) as r, r.epoch(0):
                with r.phase("sample"):
                    yield r

        return window()
