"""Output and insertion-point shapes, checked against formulas and real activations."""

from __future__ import annotations

import pytest
import torch

from attnas.backbones import build_backbone, list_backbones

TINY = ["i3d_tiny", "s3d_tiny", "r3d_tiny"]
FULL = ["i3d", "s3d", "i3d_r50"]
SMALL_CLIP = (3, 8, 64, 64)  # keeps the full-size networks fast on CPU


@pytest.mark.parametrize("name", TINY)
def test_tiny_output_shape_at_default_clip(name):
    model = build_backbone(name, num_classes=10).eval()
    assert model.input_shape == (3, 8, 64, 64)
    with torch.no_grad():
        out = model(torch.randn(2, *model.input_shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", FULL)
def test_full_output_shape_on_small_clip(name):
    model = build_backbone(name, num_classes=400, input_shape=SMALL_CLIP).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *SMALL_CLIP))
    assert out.shape == (1, 400)
    assert torch.isfinite(out).all()


def test_every_registered_backbone_is_covered():
    assert set(list_backbones()) == set(TINY) | set(FULL)


def test_i3d_insertion_shapes_at_published_clip():
    # I3D paper Fig. 3 / S3D paper Fig. 2 at a 64×224×224 clip: stride 2 stem, 1/8 at Mixed_3,
    # 1/16 (and time /4) at Mixed_4, 1/32 (time /8) at Mixed_5; channels of Inception-v1.
    for name in ["i3d", "s3d"]:
        points = build_backbone(name, 400).insertion_points()
        assert points["Conv3d_1a_7x7"] == (64, 32, 112, 112)
        assert points["Conv3d_2c_3x3"] == (192, 32, 56, 56)
        assert points["Mixed_3b"] == (256, 32, 28, 28)
        assert points["Mixed_3c"] == (480, 32, 28, 28)
        assert [points[f"Mixed_4{b}"][0] for b in "bcdef"] == [512, 512, 512, 528, 832]
        assert points["Mixed_4f"][1:] == (16, 14, 14)
        assert points["Mixed_5c"] == (1024, 8, 7, 7)


def test_i3d_r50_insertion_shapes_at_default_clip():
    # Non-local paper Table 1 (8-frame variant of the 32-frame table): res2 at 1/4 with all
    # frames, time halved by pool2, res3/res4/res5 at 1/8, 1/16, 1/32.
    model = build_backbone("i3d_r50", 400)
    points = model.insertion_points()
    assert points["res2_2"] == (256, 8, 56, 56)
    assert points["res3_3"] == (512, 4, 28, 28)
    assert points["res4_5"] == (1024, 4, 14, 14)
    assert points["res5_2"] == (2048, 4, 7, 7)
    # REFERENCE_OPS.md: blocks 1, 3 of res3 and 1, 3, 5 of res4 (0-based)
    assert model.default_positions == ("res3_1", "res3_3", "res4_1", "res4_3", "res4_5")


def _hooked_shapes(model, clip):
    seen = {}
    handles = [
        model.stages[name].register_forward_hook(
            lambda mod, inp, out, name=name: seen.__setitem__(name, tuple(out.shape[1:]))
        )
        for name in model.insertion_points()
    ]
    with torch.no_grad():
        model.eval()(torch.randn(1, *clip))
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize(
    ("name", "clip"),
    [(n, None) for n in TINY] + [(n, SMALL_CLIP) for n in FULL] + [("i3d_r50", (3, 6, 48, 80))],
)
def test_insertion_points_match_activations(name, clip):
    model = build_backbone(name, 5, input_shape=clip)
    seen = _hooked_shapes(model, model.input_shape)
    assert seen == model.insertion_points()


@pytest.mark.parametrize("name", list_backbones())
def test_five_default_positions(name):
    model = build_backbone(name, 5, input_shape=SMALL_CLIP)
    assert len(model.default_positions) == 5
    assert set(model.default_positions) <= set(model.insertion_points())


@pytest.mark.parametrize("name", TINY)
def test_tiny_default_positions_affordable_for_attention(name):
    # DESIGN.md (Backbones, cost note): CPU-sized variants put their cells where N = T*H*W <= 256.
    points = build_backbone(name, 10).insertion_points()
    model = build_backbone(name, 10)
    for pos in model.default_positions:
        c, t, h, w = points[pos]
        assert t * h * w <= 256, (pos, points[pos])
        assert t == 4, "keep time at the insertion points so temporal attention has 4 frames"
        assert 64 <= c <= 128


def test_stem_temporal_kernel_is_configurable():
    c2d_stem = build_backbone("r3d_tiny", 10, stem_temporal_kernel=1)
    i3d_stem = build_backbone("r3d_tiny", 10)
    assert c2d_stem.stages["stem"][0].weight.shape[2:] == (1, 7, 7)
    assert i3d_stem.stages["stem"][0].weight.shape[2:] == (5, 7, 7)
    assert c2d_stem.insertion_points() == i3d_stem.insertion_points()


def test_i3d_r50_inflation_pattern():
    # Non-local paper I3D_{3x1x1} as in the released code / PyTorchVideo: res2 all blocks,
    # res3 and res4 blocks 0, 2, (4), res5 block 1.
    model = build_backbone("i3d_r50", 400, input_shape=SMALL_CLIP)
    inflated = sorted(
        name
        for name, stage in model.stages.items()
        if name.startswith("res") and stage.conv_a.kernel_size[0] == 3
    )
    assert inflated == sorted(
        ["res2_0", "res2_1", "res2_2", "res3_0", "res3_2", "res4_0", "res4_2", "res4_4", "res5_1"]
    )


def test_s3d_is_separable():
    model = build_backbone("s3d", 400, input_shape=SMALL_CLIP)
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, torch.nn.Conv3d)}
    # every conv is 1×k×k, k×1×1 or 1×1×1 (besides the logits conv, also 1×1×1)
    assert kernels == {(1, 7, 7), (7, 1, 1), (1, 3, 3), (3, 1, 1), (1, 1, 1)}
