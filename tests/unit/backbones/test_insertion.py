"""insert_cells: placement, state_dict keys, errors, and identity at insertion time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnas.backbones import build_backbone, insert_cells, remove_cells


class ZeroResidual(nn.Module):
    """x + BN(conv(x)) with the BatchNorm's weight at zero: the identity at initialisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 1)
        self.norm = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x):
        return x + self.norm(self.conv(x))


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine weights, so the backbone is not near-identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _logits_before_after(name, factory):
    torch.manual_seed(0)
    model = build_backbone(name, 10)
    _randomise_batchnorm(model)
    model.eval()
    x = torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
        insert_cells(model, None, factory)
        model.eval()
        after = model(x)
    return model, before, after


@pytest.mark.parametrize("name", ["i3d_tiny", "s3d_tiny", "r3d_tiny"])
def test_zero_residual_insertion_leaves_logits_unchanged(name):
    model, before, after = _logits_before_after(name, lambda pos, shape: ZeroResidual(shape[0]))
    assert len(model.inserted) == 5
    assert before.abs().max() > 1e-3  # the comparison is not between two zero vectors
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["i3d_tiny", "r3d_tiny"])
def test_nonlocal_insertion_leaves_logits_unchanged(name):
    blocks = pytest.importorskip("attnas.blocks.nonlocal_block")

    def factory(pos, shape):
        return blocks.NonLocalBlock(shape[0], shape[0] // 2)  # REFERENCE_OPS.md: dim_in / 2

    model, before, after = _logits_before_after(name, factory)
    assert all(isinstance(m, blocks.NonLocalBlock) for m in model.inserted.values())
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_attention_cell_insertion_leaves_logits_unchanged():
    cells = pytest.importorskip("attnas.cells")
    space = pytest.importorskip("attnas.space")
    spec = space.CellSpec(
        ops=[
            space.OpNode(space.OpSpec("dot", "spatiotemporal", "softmax"), (0,)),
            space.OpNode(space.OpSpec("map", "temporal", "sigmoid"), (0, 1)),
        ],
        outputs=[1, 2],
    )

    def factory(pos, shape):
        return cells.AttentionCell(spec, shape[0], shape[0] // 4, shape)

    _, before, after = _logits_before_after("r3d_tiny", factory)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_factory_receives_names_and_shapes_and_keys_are_sensible():
    model = build_backbone("r3d_tiny", 10)
    calls = []

    def factory(pos, shape):
        calls.append((pos, shape))
        return ZeroResidual(shape[0])

    own_keys = set(model.state_dict())
    returned = insert_cells(model, ["res3_1", "res4_2"], factory)
    assert returned is model
    assert calls == [("res3_1", (64, 4, 8, 8)), ("res4_2", (128, 4, 4, 4))]
    keys = set(model.state_dict())
    assert own_keys <= keys  # the backbone's own keys are unchanged
    assert keys - own_keys == {
        f"inserted.{pos}.{k}" for pos in ["res3_1", "res4_2"] for k in ZeroResidual(4).state_dict()
    }
    assert model.inserted["res3_1"].conv.in_channels == 64
    # inserted parameters are trained with the model
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for p in model.inserted.parameters())


def test_inserted_module_runs_at_its_position():
    model = build_backbone("i3d_tiny", 10).eval()
    seen = {}

    class Probe(nn.Module):
        def __init__(self, pos):
            super().__init__()
            self.pos = pos

        def forward(self, x):
            seen[self.pos] = tuple(x.shape)
            return x

    insert_cells(model, None, lambda pos, shape: Probe(pos))
    with torch.no_grad():
        model(torch.randn(3, *model.input_shape))
    assert seen == {
        pos: (3, *shape)
        for pos, shape in model.insertion_points().items()
        if pos in model.default_positions
    }


def test_unknown_position_lists_valid_ones():
    model = build_backbone("r3d_tiny", 10)
    with pytest.raises(KeyError, match=r"unknown insertion point\(s\) \['res9_0'\].*'res3_0'"):
        insert_cells(model, ["res9_0"], lambda pos, shape: nn.Identity())
    assert len(model.inserted) == 0


def test_occupied_position_needs_replace():
    model = build_backbone("r3d_tiny", 10)
    insert_cells(model, ["res3_0"], lambda pos, shape: nn.Identity())
    with pytest.raises(KeyError, match="already hold a module"):
        insert_cells(model, ["res3_0"], lambda pos, shape: ZeroResidual(shape[0]))
    insert_cells(model, ["res3_0"], lambda pos, shape: ZeroResidual(shape[0]), replace=True)
    assert isinstance(model.inserted["res3_0"], ZeroResidual)
    remove_cells(model)
    assert len(model.inserted) == 0


def test_factory_must_return_module():
    model = build_backbone("r3d_tiny", 10)
    with pytest.raises(TypeError, match=r"expected an nn\.Module"):
        insert_cells(model, ["res3_0"], lambda pos, shape: "not a module")


def test_shape_changing_module_is_rejected_at_forward():
    model = build_backbone("r3d_tiny", 10)
    insert_cells(model, ["res4_0"], lambda pos, shape: nn.Conv3d(shape[0], 3, 1))
    with pytest.raises(RuntimeError, match=r"inserted at 'res4_0' changed the feature shape"):
        model(torch.randn(1, *model.input_shape))
