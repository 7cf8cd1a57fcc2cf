"""Model factory: `nb201:<arch_str>` cells, RegNet-X (as in EA-HAS-Bench) adapted to small inputs, torchvision models.

RegNet is built here from its design-space parameters (Radosavovic et al. 2020; same width
quantisation as torchvision), so it works without torchvision and accepts any EA-HAS-Bench-style
setting: `regnet:depth=22,w0=24,wa=24.48,wm=2.54,gw=16`. Other names go to torchvision, imported
only then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from jouled.trainer.nb201 import TinyNetwork

# torchvision's RegNet-X presets (depth, w_0, w_a, w_m, group width), bottleneck ratio 1, no SE.
REGNET_X_PRESETS: dict[str, tuple[int, int, float, float, int]] = {
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16),
    "regnet_x_800mf": (16, 56, 35.73, 2.28, 16),
    "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24),
    "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48),
}

# Inputs up to this size get a stride-1 stem (the CIFAR stem of pycls), so 32×32 images are not
# reduced to nothing by the ImageNet stem's extra stride.
SMALL_INPUT_MAX = 64


@dataclass(frozen=True)
class RegNetParams:
    """RegNet design-space point: block widths grow linearly (w_0 + w_a·j), quantised in log steps of w_m."""

    depth: int
    w_0: int
    w_a: float
    w_m: float
    group_width: int

    def stages(self) -> list[tuple[int, int, int]]:
        """(width, depth, group width) per stage, as torchvision's BlockParams.from_init_params computes them."""
        bad_width = self.w_0 <= 0 or self.w_0 % 8 != 0 or self.w_a < 0 or self.w_m <= 1
        if self.depth < 1 or bad_width or self.group_width < 1:
            raise ValueError(
                f"invalid RegNet parameters {self} — need depth ≥ 1, w0 > 0 and a multiple of 8, wa ≥ 0, wm > 1, gw ≥ 1"
            )
        widths: list[int] = []
        for j in range(self.depth):
            cont = j * self.w_a + self.w_0
            cap = round(math.log(cont / self.w_0) / math.log(self.w_m))
            widths.append(int(round(self.w_0 * self.w_m**cap / 8) * 8))
        stages: list[tuple[int, int, int]] = []
        for w in widths:
            if stages and stages[-1][0] == w:
                stages[-1] = (w, stages[-1][1] + 1, stages[-1][2])
            else:
                stages.append((w, 1, self.group_width))
        out = []
        for w, d, g in stages:
            g = min(g, w)
            w = _make_divisible(w, g)  # group convs need the width to be a multiple of the group width
            out.append((w, d, g))
        return out


def _make_divisible(v: float, divisor: int) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class XBlock(nn.Module):
    """RegNet-X block: 1×1 → 3×3 group conv (strided) → 1×1, plus a projected shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.f = nn.Sequential(
            _conv_bn(c_in, c_out, 1),
            _conv_bn(c_out, c_out, 3, stride, groups=c_out // group_width),
            _conv_bn(c_out, c_out, 1, act=False),
        )
        self.proj = _conv_bn(c_in, c_out, 1, stride, act=False) if (c_in != c_out or stride != 1) else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.act(shortcut + self.f(x))


class RegNetX(nn.Module):
    """Stem (3×3, 32 wide) → stages of X blocks (each starting at stride 2) → GAP → linear."""

    def __init__(
        self, params: RegNetParams, num_classes: int = 10, in_channels: int = 3, small_input: bool = True
    ) -> None:
        super().__init__()
        stem_w = 32
        self.stem = _conv_bn(in_channels, stem_w, 3, stride=1 if small_input else 2)
        blocks: list[nn.Module] = []
        c_prev = stem_w
        for width, depth, gw in params.stages():
            for i in range(depth):
                blocks.append(XBlock(c_prev, width, 2 if i == 0 else 1, gw))
                c_prev = width
        self.trunk = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.trunk(self.stem(x))), 1))


def parse_regnet_spec(spec: str) -> RegNetParams:
    """`regnet_x_400mf` or `regnet:depth=22,w0=24,wa=24.48,wm=2.54,gw=16` → RegNetParams."""
    if spec in REGNET_X_PRESETS:
        d, w0, wa, wm, gw = REGNET_X_PRESETS[spec]
        return RegNetParams(d, w0, wa, wm, gw)
    body = spec.removeprefix("regnet:")
    keys = {"depth": int, "w0": int, "wa": float, "wm": float, "gw": int}
    vals: dict[str, float] = {}
    for item in filter(None, body.split(",")):
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or k not in keys:
            raise ValueError(f"RegNet spec {spec!r}: bad item {item!r} — use regnet:depth=D,w0=W,wa=A,wm=M,gw=G")
        try:
            vals[k] = keys[k](v)
        except ValueError:
            raise ValueError(f"RegNet spec {spec!r}: {k}={v!r} is not a number") from None
    missing = [k for k in keys if k not in vals]
    if missing:
        raise ValueError(f"RegNet spec {spec!r}: missing {', '.join(missing)} — use regnet:depth=D,w0=W,wa=A,wm=M,gw=G")
    p = RegNetParams(int(vals["depth"]), int(vals["w0"]), vals["wa"], vals["wm"], int(vals["gw"]))
    p.stages()  # validate now, with the one-line message
    return p


def _torchvision_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    try:
        import torchvision.models as tvm
    except Exception as e:  # a torchvision built for another torch fails at import with RuntimeError
        raise ValueError(
            f"model {name!r} needs torchvision, which does not import here ({type(e).__name__}: {e}) — "
            f"install the torchvision build matching torch {torch.__version__}, or use nb201:<arch_str> or regnet_x_*"
        ) from None
    try:
        model = tvm.get_model(name, weights=None, num_classes=num_classes)
    except ValueError:
        raise ValueError(
            f"unknown model {name!r} — use nb201:<arch_str>, regnet_x_400mf (or regnet:depth=…), or a torchvision name"
        ) from None
    small = image_size <= SMALL_INPUT_MAX
    if name.startswith("resnet") or name.startswith("resnext") or name.startswith("wide_resnet"):
        if small or in_channels != 3:
            # The usual CIFAR adaptation: 3×3 stride-1 first conv, no max-pool.
            model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)  # type: ignore[union-attr]
            if small:
                model.maxpool = nn.Identity()  # type: ignore[assignment]
    elif in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    child_name,
                    nn.Conv2d(
                        in_channels,
                        child.out_channels,
                        child.kernel_size,  # type: ignore[arg-type]
                        child.stride,  # type: ignore[arg-type]
                        child.padding,  # type: ignore[arg-type]
                        bias=child.bias is not None,
                    ),
                )
                return
    raise ValueError("model has no Conv2d to adapt to the input channels")


def build_model(
    spec: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
) -> nn.Module:
    """`nb201:<arch_str>` (C=channels, N=cells_per_stage), `regnet_x_*` / `regnet:…`, or a torchvision model name.

    ValueError with a one-line message for anything it cannot build.
    """
    text = spec.strip()
    if not text:
        raise ValueError("model spec is empty — use nb201:<arch_str>, regnet_x_400mf or a torchvision name")
    if text.startswith("nb201:"):
        return TinyNetwork(text[len("nb201:") :], channels, cells_per_stage, num_classes, in_channels)
    if text.startswith("|"):  # a bare arch_str is unambiguous
        return TinyNetwork(text, channels, cells_per_stage, num_classes, in_channels)
    if text in REGNET_X_PRESETS or text.startswith("regnet:"):
        return RegNetX(parse_regnet_spec(text), num_classes, in_channels, small_input=image_size <= SMALL_INPUT_MAX)
    return _torchvision_model(text, num_classes, in_channels, image_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
