"""CPU fast paths of the renderer: Winograd convolutions (NNPACK) and the parallel 3-D grid sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sadtalker_core.render import conv
from sadtalker_core.render.generator import (
    DenseMotionConfig,
    DenseMotionNetwork,
    GeneratorConfig,
    _grid_sample_3d,
)


def _conv(cin: int, cout: int, k: int = 3) -> conv.Conv2d:
    torch.manual_seed(0)
    return conv.Conv2d(cin, cout, k, padding=k // 2).eval()


def test_conv2d_is_plain_nn_conv2d_outside_the_fast_block():
    layer = _conv(128, 64)
    x = torch.randn(2, 128, 16, 16)
    with torch.inference_mode():
        assert torch.equal(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1))
    assert set(layer.state_dict()) == {"weight", "bias"}  # checkpoint keys unchanged


@pytest.mark.parametrize("batch", [1, 3])
def test_winograd_path_matches_direct_convolution(batch):
    layer = _conv(128, 64)
    x = torch.randn(batch, 128, 24, 24)
    with torch.inference_mode():
        direct = layer(x)
        with conv.winograd() as active:
            fast = layer(x)
    assert active == conv.worthwhile()
    assert fast.shape == direct.shape
    err = ((fast - direct).abs().max() / direct.abs().max()).item()
    if active:  # the NNPACK kernels really ran: close, but not bit-identical
        assert 0 < err < 1e-4
    else:
        assert err == 0


def test_winograd_skips_what_it_cannot_or_should_not_do():
    x = torch.randn(1, 128, 16, 16)
    thin = _conv(3, 64)  # too little arithmetic to gain
    pointwise = _conv(128, 64, k=1)
    with torch.inference_mode(), conv.winograd():
        for layer, inp in ((thin, torch.randn(1, 3, 16, 16)), (pointwise, x)):
            assert torch.equal(
                layer(inp), F.conv2d(inp, layer.weight, layer.bias, padding=layer.padding)
            )
        half = _conv(128, 64).to(torch.bfloat16)
        xb = x.to(torch.bfloat16)
        assert torch.equal(half(xb), F.conv2d(xb, half.weight, half.bias, padding=1))


def test_winograd_is_never_used_with_autograd():
    layer = _conv(128, 64)
    x = torch.randn(1, 128, 16, 16, requires_grad=True)
    with conv.winograd():
        y = layer(x)
    y.sum().backward()  # NNPACK has no backward here: the direct path must have run
    assert x.grad is not None and torch.equal(y, F.conv2d(x, layer.weight, layer.bias, padding=1))


def test_winograd_block_restores_the_previous_state():
    with conv.winograd(False) as active:
        assert not active
        with conv.winograd():
            pass
        layer = _conv(128, 64)
        x = torch.randn(1, 128, 8, 8)
        with torch.inference_mode():
            assert torch.equal(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1))


@pytest.mark.parametrize(
    ("n", "depth"),
    [(1, 16), (1, 256), (2, 16), (1, 7), (1, 1)],  # 7: prime depth, 1: nothing to split
)
def test_parallel_grid_sample_is_bit_identical(n, depth):
    torch.manual_seed(0)
    volume = torch.randn(n, 4, 6, 10, 12)
    grid = torch.rand(n, depth, 5, 9, 3) * 2.4 - 1.2  # some points outside: zero padding
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with torch.inference_mode():
            ours = _grid_sample_3d(volume, grid)
    finally:
        torch.set_num_threads(saved)
    ref = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert ours.shape == ref.shape == (n, 4, depth, 5, 9)
    assert torch.equal(ours, ref)


def test_motion_coordinates_stay_float32_under_bf16_autocast():
    """In bf16 a coordinate in [-1, 1] is off by up to 1/256: the sparse motions and the
    deformation must be computed in float32 whatever the feature volume's precision."""
    cfg = GeneratorConfig(
        feature_channel=4,
        num_kp=3,
        dense_motion=DenseMotionConfig(
            block_expansion=4, max_features=8, num_blocks=2, reshape_depth=4, compress=2
        ),
    )
    torch.manual_seed(0)
    net = DenseMotionNetwork(cfg).eval()
    feature = torch.randn(1, 4, 4, 16, 16)
    kp = torch.rand(1, 3, 3) * 1.6 - 0.8  # no motion: every sparse motion is the identity grid
    with torch.inference_mode():
        ref = net(feature, kp, kp)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(feature, kp, kp)
    assert out.deformation.dtype == torch.float32 and out.mask.dtype == torch.float32
    # the deformation is the identity grid times the kept mask mass, both float32 now
    assert (out.deformation - ref.deformation).abs().max() < 1e-4
