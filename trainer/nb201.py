"""NAS-Bench-201 cell network (the benchmark's `infer.tiny` macro net) in PyTorch, plus its shared building blocks.

Follows the NB201 reference implementation: ReLU-Conv-BN ops, a zero op that still yields a
tensor (so an all-`none` cell trains to chance instead of failing), residual reduction blocks
between the three stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jouled.trainer.nb201_arch import (
    EDGES,
    EXAMPLE_ARCH_STR,
    NUM_EDGES,
    NUM_NODES,
    OPS,
    all_arch_strs,
    indices_to_ops,
    ops_to_indices,
    parse_arch_str,
    to_arch_str,
)

__all__ = [
    "EDGES",
    "EXAMPLE_ARCH_STR",
    "NUM_EDGES",
    "OPS",
    "InferCell",
    "ReLUConvBN",
    "ResNetBasicBlock",
    "TinyNetwork",
    "Zero",
    "all_arch_strs",
    "build_op",
    "indices_to_ops",
    "ops_to_indices",
    "parse_arch_str",
    "to_arch_str",
]


class ReLUConvBN(nn.Module):
    """ReLU → Conv → BN, NB201's `nor_conv_*` op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """NB201's `none`: multiplies by zero rather than dropping the edge, so shapes and autograd stay intact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class AvgPool(nn.Module):
    """3×3 average pool, stride 1, padding not counted (as NB201)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def build_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """One cell op at stride 1 and constant width (NB201 cells never change shape inside a stage)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, affine)
    if name == "avg_pool_3x3":
        return AvgPool()
    raise ValueError(f"unknown op {name!r} — use one of {', '.join(OPS)}")


class InferCell(nn.Module):
    """A fixed NB201 cell: node j = Σ_{i<j} op_{i→j}(node i); the output is node 3."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != NUM_EDGES:
            raise ValueError(f"a cell needs {NUM_EDGES} ops, got {len(ops)}")
        self.ops_names = tuple(ops)
        self.edges = nn.ModuleList(build_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for target in range(1, NUM_NODES):
            acc = self.edges[k](nodes[0])
            for src in range(1, target):
                acc = acc + self.edges[k + src](nodes[src])
            k += target
            nodes.append(acc)
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """NB201's reduction block: two ReLU-Conv-BN (the first strided) plus an avg-pool + 1×1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample: nn.Module
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
            )
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def macro_layout(channels: int, cells_per_stage: int) -> list[tuple[int, bool]]:
    """(width, is_reduction) per layer of `infer.tiny`: N cells, reduce, N cells, reduce, N cells."""
    c, n = channels, cells_per_stage
    widths = [c] * n + [2 * c] + [2 * c] * n + [4 * c] + [4 * c] * n
    reductions = [False] * n + [True] + [False] * n + [True] + [False] * n
    return list(zip(widths, reductions, strict=True))


class TinyNetwork(nn.Module):
    """NB201 `infer.tiny`: stem 3×3 conv + BN, 3 stages of N cells (C, 2C, 4C) with residual reductions, GAP, linear."""

    def __init__(
        self,
        arch: str | Sequence[str],
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if channels < 1 or cells_per_stage < 1 or num_classes < 1 or in_channels < 1:
            raise ValueError("channels, cells_per_stage, num_classes and in_channels must all be ≥ 1")
        ops = parse_arch_str(arch) if isinstance(arch, str) else tuple(arch)
        self.arch_str = to_arch_str(ops)  # also validates a sequence of names
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers: list[nn.Module] = []
        c_prev = channels
        for width, reduction in macro_layout(channels, cells_per_stage):
            layers.append(ResNetBasicBlock(c_prev, width, 2) if reduction else InferCell(ops, width))
            c_prev = width
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(out), 1))
