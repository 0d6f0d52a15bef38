"""``AttentionCell``: identity at initialisation, DAG wiring, the shared f0 projection, files."""

from __future__ import annotations

import random

import pytest
import torch

from attnas.cells import AttentionCell
from attnas.space import CellSpec, OpNode, OpSpec, chain, load_space

C, C_OP = 8, 2
SHAPE = (C, 4, 4, 4)  # (C, T, H, W)

X = OpSpec("dot", "spatiotemporal", "softmax")
Y = OpSpec("map", "temporal", "sigmoid")
Z = OpSpec("dot", "spatial", "relu")


def _cell(nodes, outputs) -> CellSpec:
    return CellSpec(tuple(OpNode(op, inputs) for op, inputs in nodes), outputs)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random parameters and BatchNorm running stats, so no zero-initialised term hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=p.dtype))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=p.dtype) + 0.5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_identity_at_initialisation_for_random_cells(mode):
    space = load_space("attention_nas")
    rng = random.Random(2024)
    x = torch.randn(2, *SHAPE)
    for i in range(30):
        spec = space.sample(rng)
        torch.manual_seed(i)
        cell = AttentionCell(spec, C, space.op_channels(C), SHAPE)
        cell.train(mode == "train")
        assert (cell.out_norm.weight == 0).all()
        with torch.no_grad():
            y = cell(x)
        assert torch.equal(y, x), f"{spec.describe()}\nis not the identity at init ({mode})"


def test_identity_at_initialisation_in_float64():
    spec = _cell([(X, (0,)), (Y, (0, 1)), (Z, (1, 2))], (1, 2, 3))
    cell = AttentionCell(spec, C, C_OP, SHAPE).double()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    assert torch.equal(cell(x), x)
    cell.eval()
    assert torch.equal(cell(x), x)


def test_branch_can_learn_from_init():
    """Identity at init does not mean dead: the final BatchNorm's weight gets a gradient."""
    spec = _cell([(X, (0,)), (Y, (0, 1)), (Z, (1, 2))], (2, 3))
    torch.manual_seed(0)
    cell = AttentionCell(spec, C, C_OP, SHAPE)
    x = torch.randn(2, *SHAPE)
    (cell(x) * torch.randn_like(x)).sum().backward()
    assert cell.out_norm.weight.grad.abs().sum() > 0
    assert cell.out_norm.bias.grad.abs().sum() > 0


def test_channels_of_each_op_and_the_shared_projection():
    spec = _cell([(X, (0,)), (Y, (0, 1)), (Z, (0,)), (Y, (0, 2, 3))], (2, 4))
    cell = AttentionCell(spec, C, C_OP, SHAPE)
    # an op reading f0 alone sees its C channels; any other op sees C_op
    assert [op.c_in for op in cell.ops] == [C, C_OP, C, C_OP]
    assert [op.c_out for op in cell.ops] == [C_OP] * 4
    assert [op.shape for op in cell.ops] == [SHAPE, (C_OP, 4, 4, 4), SHAPE, (C_OP, 4, 4, 4)]
    assert isinstance(cell.input_proj, torch.nn.Conv3d)
    assert cell.input_proj.weight.shape == (C_OP, C, 1, 1, 1)
    assert set(cell.input_weights.keys()) == {"2", "4"}
    assert torch.equal(cell.input_weights["2"].data, torch.full((2,), 0.5))
    assert torch.equal(cell.input_weights["4"].data, torch.full((3,), 1 / 3))
    assert cell.out_conv.weight.shape == (C, 2 * C_OP, 1, 1, 1)

    calls = []
    cell.input_proj.register_forward_hook(lambda *args: calls.append(1))
    cell(torch.randn(2, *SHAPE))
    assert len(calls) == 1  # computed once, shared by ops 2 and 4


@pytest.mark.parametrize(
    "spec",
    [
        chain([X, Y, Z]),
        _cell([(X, (0,)), (Y, (0,)), (Z, (1, 2))], (3,)),  # multi-input without f0
        _cell([(X, (0,))], (1,)),
    ],
    ids=["chain", "multi-without-f0", "single"],
)
def test_no_projection_when_f0_is_never_summed(spec):
    cell = AttentionCell(spec, C, C_OP, SHAPE)
    assert cell.input_proj is None
    assert not any("input_proj" in name for name, _ in cell.named_parameters())


def test_dag_semantics_match_manual_recomputation():
    spec = _cell([(X, (0,)), (Y, (0, 1)), (Z, (1, 2))], (2, 3))
    torch.manual_seed(0)
    cell = AttentionCell(spec, C, C_OP, SHAPE).double()
    _randomise(cell, seed=1)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    for mode in ("eval", "train"):
        cell.train(mode == "train")
        with torch.no_grad():
            got = cell(x)
            w2, w3 = cell.input_weights["2"], cell.input_weights["3"]
            f1 = cell.ops[0](x)
            f2 = cell.ops[1](w2[0] * cell.input_proj(x) + w2[1] * f1)
            f3 = cell.ops[2](w3[0] * f1 + w3[1] * f2)
            cat = torch.cat([f2, f3], dim=1)  # outputs (2, 3) in order
            conv = torch.einsum("oc,bcthw->bothw", cell.out_conv.weight[:, :, 0, 0, 0], cat)
            conv = conv + cell.out_conv.bias[None, :, None, None, None]
            bn = cell.out_norm
            if mode == "eval":
                mean, var = bn.running_mean, bn.running_var
            else:
                mean = conv.mean(dim=(0, 2, 3, 4))
                var = conv.var(dim=(0, 2, 3, 4), unbiased=False)
            shape = (1, C, 1, 1, 1)
            normed = (conv - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
            want = x + normed * bn.weight.view(shape) + bn.bias.view(shape)
        assert (got - want).abs().max() < 1e-10, mode
        assert (got - x).abs().max() > 1e-2  # the branch contributes


def test_single_input_takes_the_node_unscaled():
    """An op with one input reads that node as it is (no learnable scalar on it)."""
    spec = _cell([(X, (0,)), (Z, (1,))], (2,))
    torch.manual_seed(0)
    cell = AttentionCell(spec, C, C_OP, SHAPE).double()
    _randomise(cell, seed=2)
    cell.eval()
    x = torch.randn(1, *SHAPE, dtype=torch.float64)
    assert len(cell.input_weights) == 0
    with torch.no_grad():
        f2 = cell.ops[1](cell.ops[0](x))
        want = x + cell.out_norm(cell.out_conv(f2))
        assert (cell(x) - want).abs().max() < 1e-12


def test_wrong_shape_raises_naming_the_shape():
    cell = AttentionCell(chain([X]), C, C_OP, SHAPE)
    with pytest.raises(ValueError, match=r"built for \(B, 8, 4, 4, 4\), got \(2, 8, 4, 4, 5\)"):
        cell(torch.randn(2, 8, 4, 4, 5))
    with pytest.raises(ValueError, match=r"built for \(B, 8, 4, 4, 4\)"):
        cell(torch.randn(2, 4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(8, 4, 4, 4\) has C=8 but channels=16"):
        AttentionCell(chain([X]), 16, C_OP, SHAPE)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_from_file_round_trip(tmp_path, suffix):
    spec = _cell([(X, (0,)), (Y, (0, 1)), (Z, (1, 2))], (2, 3))
    path = spec.save(tmp_path / f"cell{suffix}")
    torch.manual_seed(5)
    direct = AttentionCell(spec, C, C_OP, SHAPE)
    torch.manual_seed(5)
    loaded = AttentionCell.from_file(path, C, C_OP, SHAPE)
    assert loaded.spec == spec
    assert loaded.spec.hash() == spec.hash()
    sd_a, sd_b = direct.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    _randomise(direct, 9)
    loaded.load_state_dict(direct.state_dict())
    direct.eval()
    loaded.eval()
    x = torch.randn(2, *SHAPE)
    assert torch.equal(direct(x), loaded(x))


def test_from_file_missing_names_file(tmp_path):
    from attnas.space import SpecError

    with pytest.raises(SpecError, match=r"absent\.yaml: cell file not found"):
        AttentionCell.from_file(tmp_path / "absent.yaml", C, C_OP, SHAPE)


def test_op_params_reach_the_ops():
    spec = _cell([(X, (0,)), (Y, (1,))], (1, 2))
    cell = AttentionCell(
        spec, C, C_OP, SHAPE, op_params={"dot": {"inner_channels": 3}, "map": {"hidden": 5}}
    )
    assert cell.ops[0].g1.weight.shape == (3, C)
    assert cell.ops[1].g2[0].out_features == 5
