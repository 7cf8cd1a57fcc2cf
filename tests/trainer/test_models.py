"""Model factory: NB201 cells (including the all-`none` cell), RegNet-X, torchvision names, errors."""

from __future__ import annotations

import pytest
import torch

from jouled.trainer.models import RegNetParams, build_model, count_parameters, parse_regnet_spec
from jouled.trainer.nb201 import EXAMPLE_ARCH_STR, InferCell, TinyNetwork, to_arch_str

ALL_NONE = to_arch_str(("none",) * 6)
CELLS = [
    EXAMPLE_ARCH_STR,
    ALL_NONE,
    to_arch_str(("skip_connect",) * 6),
    to_arch_str(("avg_pool_3x3",) * 6),
    to_arch_str(("nor_conv_1x1", "none", "nor_conv_3x3", "skip_connect", "avg_pool_3x3", "none")),
]


@pytest.mark.parametrize("arch", CELLS)
@pytest.mark.parametrize(("in_ch", "size"), [(3, 32), (1, 8)])
def test_forward_and_backward_shapes(arch: str, in_ch: int, size: int) -> None:
    net = TinyNetwork(arch, channels=4, cells_per_stage=1, num_classes=7, in_channels=in_ch)
    x = torch.randn(3, in_ch, size, size)
    out = net(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()  # the zero op keeps the graph intact, so even all-none trains (to chance)
    assert net.classifier.weight.grad is not None


def test_all_none_cell_ignores_its_input() -> None:
    """NB201's zero op: a cell whose every edge is `none` outputs zeros, so in eval mode logits do not depend on x."""
    cell = InferCell(("none",) * 6, 4)
    assert torch.equal(cell(torch.randn(2, 4, 8, 8)), torch.zeros(2, 4, 8, 8))
    net = TinyNetwork(ALL_NONE, channels=4, cells_per_stage=1).eval()
    a, b = net(torch.randn(2, 3, 16, 16)), net(torch.randn(2, 3, 16, 16))
    assert torch.allclose(a, b)
    conv = TinyNetwork(to_arch_str(("nor_conv_3x3",) * 6), channels=4, cells_per_stage=1).eval()
    assert not torch.allclose(conv(torch.randn(2, 3, 16, 16)), conv(torch.randn(2, 3, 16, 16)))


def test_macro_layout_and_sizes() -> None:
    """C=16, N=5 as NB201: 15 cells + 2 reduction blocks; more convs → more parameters; skip/pool/none add none."""
    net = TinyNetwork(EXAMPLE_ARCH_STR, channels=16, cells_per_stage=5)
    assert len(net.cells) == 17
    assert net.classifier.in_features == 64
    param_free = [count_parameters(TinyNetwork(to_arch_str((op,) * 6))) for op in ("none", "skip_connect", "avg_pool_3x3")]
    assert len(set(param_free)) == 1
    c1 = count_parameters(TinyNetwork(to_arch_str(("nor_conv_1x1",) * 6)))
    c3 = count_parameters(TinyNetwork(to_arch_str(("nor_conv_3x3",) * 6)))
    assert param_free[0] < c1 < c3


def test_build_model_specs() -> None:
    net = build_model("nb201:" + EXAMPLE_ARCH_STR, 10, 1, 8, channels=4, cells_per_stage=1)
    assert isinstance(net, TinyNetwork) and net.arch_str == EXAMPLE_ARCH_STR
    assert isinstance(build_model(EXAMPLE_ARCH_STR, channels=4, cells_per_stage=1), TinyNetwork)
    with pytest.raises(ValueError, match="unknown op"):
        build_model("nb201:|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="empty"):
        build_model("  ")


def test_regnet_x_400mf_stages_match_torchvision() -> None:
    # torchvision's regnet_x_400mf: widths 32, 64, 160, 400; depths 1, 2, 7, 12; group width 16.
    assert parse_regnet_spec("regnet_x_400mf").stages() == [(32, 1, 16), (64, 2, 16), (160, 7, 16), (400, 12, 16)]


def test_regnet_small_input_forward() -> None:
    net = build_model("regnet:depth=4,w0=16,wa=8.0,wm=2.0,gw=8", num_classes=10, in_channels=1, image_size=8)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    big = build_model("regnet_x_400mf", num_classes=10, in_channels=3, image_size=32)
    assert big(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("regnet:depth=4,w0=12,wa=8,wm=2,gw=8", "multiple of 8"),
        ("regnet:depth=4,w0=16,wa=8", "missing wm, gw"),
        ("regnet:depth=x,w0=16,wa=8,wm=2,gw=8", "not a number"),
        ("regnet:size=4", "bad item"),
    ],
)
def test_regnet_spec_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        build_model(spec)


def test_regnet_params_validation() -> None:
    with pytest.raises(ValueError, match="wm > 1"):
        RegNetParams(4, 16, 8.0, 1.0, 8).stages()


def test_torchvision_models_or_a_clear_error() -> None:
    try:
        import torchvision.models  # noqa: F401

        tv_ok = True
    except Exception:
        tv_ok = False
    if tv_ok:
        net = build_model("resnet18", num_classes=10, in_channels=1, image_size=8)
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
        with pytest.raises(ValueError, match="unknown model"):
            build_model("no_such_net")
    else:
        with pytest.raises(ValueError, match="needs torchvision") as e:
            build_model("resnet18")
        assert "\n" not in str(e.value)
