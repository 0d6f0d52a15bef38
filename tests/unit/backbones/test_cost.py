"""Parameter counts against published figures; FLOP counts against closed forms."""

from __future__ import annotations

import pytest
from torch import nn

from attnas.backbones import build_backbone, count_flops, count_parameters, insert_cells


def _rel(a: float, b: float) -> float:
    return abs(a - b) / b


def test_i3d_parameters_match_i3d_paper():
    # Carreira & Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017), Table 1: Two-Stream
    # I3D has 25M parameters: an RGB stream plus an optical-flow stream (2 input channels).
    rgb = count_parameters(build_backbone("i3d", 400))
    flow = count_parameters(build_backbone("i3d", 400, input_shape=(2, 64, 224, 224)))
    assert rgb == 12_697_264
    assert flow == rgb - 64 * 7 * 7 * 7  # one input channel fewer in Conv3d_1a_7x7
    assert _rel(rgb + flow, 25e6) < 0.03
    assert _rel(rgb, 12.5e6) < 0.03  # about half of the two-stream figure per stream


def test_s3d_parameters_match_published():
    # torchvision's S3D (a port of Xie et al. 2018's S3D, Kinetics-400 weights), documented
    # at torchvision.models.video.s3d, S3D_Weights.KINETICS400_V1: num_params 8,320,048.
    n = count_parameters(build_backbone("s3d", 400))
    assert _rel(n, 8_320_048) < 0.03
    assert n == 8_320_048


def test_i3d_r50_parameters_match_published():
    # PyTorchVideo model zoo (Kinetics-400), I3D R50 8x8: 28.04 M parameters; the same network
    # as the non-local paper's I3D-R50 baseline (Wang et al. 2018) at 400 classes.
    n = count_parameters(build_backbone("i3d_r50", 400))
    assert _rel(n, 28.04e6) < 0.03
    assert round(n / 1e6, 2) == 28.04


def test_flops_of_a_conv_match_closed_form():
    # FlopCounterMode: 2 FLOPs per multiply-accumulate; a 3×3×3 conv, stride 1, padding 1.
    conv = nn.Conv3d(4, 6, 3, padding=1, bias=False)
    t, h, w = 3, 5, 7
    expected = 2 * 4 * 6 * 27 * t * h * w
    assert count_flops(conv, (4, t, h, w)) == expected
    assert count_flops(conv, (4, t, h, w), batch=3) == 3 * expected


def test_meta_and_cpu_counts_agree():
    model = build_backbone("i3d_tiny", 10)
    assert count_flops(model) == count_flops(model, device="cpu") > 0
    assert model.training  # the mode is restored


def test_fused_softmax_attention_counts_the_same_on_cpu_and_meta():
    # on the CPU, softmax dot attention runs PyTorch's CPU flash kernel, which FlopCounterMode
    # did not count (the two N×N products were missing); on meta it decomposes into bmm
    from attnas.train.run import cell_factory

    model = build_backbone("i3d_tiny", 2, (3, 4, 32, 32))
    base = count_flops(model, device="cpu")
    cell = {
        "ops": [{"type": "dot", "dim": "spatiotemporal", "activation": "softmax", "inputs": [0]}],
        "outputs": [1],
    }
    insert_cells(model, ["Conv3d_2c_3x3"], cell_factory(cell, 0.25))
    c, t, h, w = model.insertion_points()["Conv3d_2c_3x3"]
    n, d = t * h * w, c // 4
    on_cpu, on_meta = count_flops(model, device="cpu"), count_flops(model, device="meta")
    assert on_cpu == on_meta
    assert on_cpu - base >= 4 * n * n * d  # q·kᵀ and attention·v are counted


def test_nonlocal_block_flops_add_up():
    blocks = pytest.importorskip("attnas.blocks.nonlocal_block")
    model = build_backbone("r3d_tiny", 10)
    base = count_flops(model)
    c, t, h, w = model.insertion_points()["res4_0"]
    insert_cells(model, ["res4_0"], lambda pos, s: blocks.NonLocalBlock(s[0], s[0] // 2))
    d, n = c // 2, t * h * w
    # θ, φ, g, out 1×1×1 convs: 4 · 2·C·d·N; θᵀφ and A·g: 2 · 2·N²·d
    expected = 8 * c * d * n + 4 * n * n * d
    assert count_flops(model) - base == expected
    assert count_parameters(model.inserted) == 4 * c * d + 3 * d + c + 2 * c


def test_parameter_count_includes_inserted_cells():
    model = build_backbone("r3d_tiny", 10)
    before = count_parameters(model)
    insert_cells(model, None, lambda pos, shape: nn.Conv3d(shape[0], shape[0], 1, bias=False))
    channels = [model.insertion_points()[p][0] for p in model.default_positions]
    assert count_parameters(model) - before == sum(c * c for c in channels)
    model.inserted.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == before


def test_full_model_flops_are_recorded():
    # At the default clips: I3D 64×224×224 has ~111 G multiply-accumulates (the S3D paper
    # reports 107.89 GFLOPs for I3D, counting multiply-adds, on the same clip); S3D is cheaper.
    i3d = count_flops(build_backbone("i3d", 400))
    s3d = count_flops(build_backbone("s3d", 400))
    assert _rel(i3d / 2, 107.89e9) < 0.05
    assert s3d < 0.7 * i3d
