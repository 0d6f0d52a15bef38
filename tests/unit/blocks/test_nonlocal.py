"""``NonLocalBlock``: the restated official function over its constructor grid, and the
equivalence with an ``AttentionCell`` holding the single op (dot, spatiotemporal, softmax)."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from attnas.blocks import NonLocalBlock
from attnas.cells import AttentionCell
from attnas.space import OpSpec, single_op_cell

DIM_IN, DIM_INNER = 8, 4
X_SHAPE = (2, DIM_IN, 4, 6, 6)  # (B, C, T, H, W): divisible by every pool size below
POOLS = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 3, 3)]
OFFICIAL_KEYS = {
    "conv_theta.weight",
    "conv_theta.bias",
    "conv_phi.weight",
    "conv_phi.bias",
    "conv_g.weight",
    "conv_g.bias",
    "conv_out.weight",
    "conv_out.bias",
    "norm.weight",
    "norm.bias",
    "norm.running_mean",
    "norm.running_var",
    "norm.num_batches_tracked",
}


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Seeded random parameters and BatchNorm statistics (a zero-init branch hides nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=p.dtype))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=p.dtype) + 0.5)


def _input(seed: int = 0, shape=X_SHAPE) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    ("pool", "instantiation", "norm", "mode"),
    list(itertools.product(POOLS, ["softmax", "dot_product"], [True, False], ["eval", "train"])),
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_block_matches_restatement(nonlocal_reference, pool, instantiation, norm, mode):
    block = NonLocalBlock(DIM_IN, DIM_INNER, pool, instantiation, norm=norm).double()
    randomise(block, seed=zlib.crc32(repr((pool, instantiation, norm)).encode()))
    block.train(mode == "train")
    sd = {k: v.clone() for k, v in block.state_dict().items()}
    x = _input()
    with torch.no_grad():
        got = block(x)
    want = nonlocal_reference(x, sd, pool, instantiation, norm, train=mode == "train")
    assert got.shape == x.shape
    assert (got - x).abs().max() > 1e-2  # the branch is live
    assert (got - want).abs().max() < 1e-10


def test_train_mode_updates_running_stats_like_batchnorm():
    block = NonLocalBlock(DIM_IN, DIM_INNER, (1, 2, 2), norm_momentum=0.3).double()
    randomise(block, seed=4)
    old_mean = block.norm.running_mean.clone()
    old_var = block.norm.running_var.clone()
    x = _input(1)
    with torch.no_grad():
        block.train()
        block(x)
        block.eval()
        p = block.conv_out(_branch_before_out(block, x))  # (B, C, T, H, W)
    batch_mean = p.mean(dim=(0, 2, 3, 4))
    batch_var = p.var(dim=(0, 2, 3, 4), unbiased=True)
    torch.testing.assert_close(
        block.norm.running_mean, 0.7 * old_mean + 0.3 * batch_mean, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        block.norm.running_var, 0.7 * old_var + 0.3 * batch_var, rtol=0, atol=1e-12
    )
    assert int(block.norm.num_batches_tracked) == 1


def _branch_before_out(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """A · gᵀ of the block (softmax, pooled), restated with einsum: (B, d, T, H, W)."""
    b, _, t, h, w = x.shape
    theta = block.conv_theta(x).reshape(b, DIM_INNER, -1)
    xp = block.pool(x)
    phi = block.conv_phi(xp).reshape(b, DIM_INNER, -1)
    g = block.conv_g(xp).reshape(b, DIM_INNER, -1)
    a = torch.softmax(torch.einsum("bdi,bdj->bij", theta, phi) * DIM_INNER**-0.5, dim=-1)
    return torch.einsum("bij,bdj->bdi", a, g).reshape(b, DIM_INNER, t, h, w)


def test_parameter_names_are_the_official_ones():
    assert set(NonLocalBlock(DIM_IN, DIM_INNER).state_dict()) == OFFICIAL_KEYS
    no_norm = set(NonLocalBlock(DIM_IN, DIM_INNER, norm=False).state_dict())
    assert no_norm == {k for k in OFFICIAL_KEYS if not k.startswith("norm.")}
    block = NonLocalBlock(DIM_IN, DIM_INNER)
    assert block.conv_theta.weight.shape == (DIM_INNER, DIM_IN, 1, 1, 1)
    assert block.conv_out.weight.shape == (DIM_IN, DIM_INNER, 1, 1, 1)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_identity_at_initialisation(mode):
    torch.manual_seed(0)
    block = NonLocalBlock(DIM_IN, DIM_INNER, (1, 2, 2)).train(mode == "train")
    assert (block.norm.weight == 0).all()
    x = torch.randn(*X_SHAPE)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    live = NonLocalBlock(DIM_IN, DIM_INNER, zero_init_final_norm=False)
    assert (live.norm.weight == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"instantiation": "gaussian"}, r"instantiation 'gaussian' is not one of"),
        ({"pool_size": (1, 2)}, r"pool_size must be 3 positive ints, got \(1, 2\)"),
        ({"pool_size": (0, 1, 1)}, r"pool_size must be 3 positive ints"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonLocalBlock(DIM_IN, DIM_INNER, **kwargs)


# ---------------------------------------------------------------------------------------- cell
def _tied_pair(seed: int) -> tuple[NonLocalBlock, AttentionCell]:
    shape = X_SHAPE[1:]
    block = NonLocalBlock(DIM_IN, DIM_INNER, (1, 1, 1), "softmax").double()
    randomise(block, seed)
    spec = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    cell = AttentionCell(spec, DIM_IN, DIM_INNER, shape).double()
    op = cell.ops[0]
    assert op.inner_channels == DIM_INNER
    with torch.no_grad():
        op.g1.weight.copy_(block.conv_theta.weight.view(DIM_INNER, DIM_IN))
        op.g1.bias.copy_(block.conv_theta.bias)
        op.g2.weight.copy_(block.conv_phi.weight.view(DIM_INNER, DIM_IN))
        op.g2.bias.copy_(block.conv_phi.bias)
        op.g3.weight.copy_(block.conv_g.weight)
        op.g3.bias.copy_(block.conv_g.bias)
        cell.out_conv.weight.copy_(block.conv_out.weight)
        cell.out_conv.bias.copy_(block.conv_out.bias)
        cell.out_norm.weight.copy_(block.norm.weight)
        cell.out_norm.bias.copy_(block.norm.bias)
        cell.out_norm.running_mean.copy_(block.norm.running_mean)
        cell.out_norm.running_var.copy_(block.norm.running_var)
    # every parameter of the cell was tied: same count as the block
    assert sum(p.numel() for p in cell.parameters()) == sum(p.numel() for p in block.parameters())
    return block, cell


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_single_op_cell_equals_nonlocal_block(mode):
    block, cell = _tied_pair(seed=11)
    block.train(mode == "train")
    cell.train(mode == "train")
    x = _input(2)
    with torch.no_grad():
        want = block(x)
        got = cell(x)
    assert (want - x).abs().max() > 1e-2
    assert (got - want).abs().max() < 1e-10
    if mode == "train":  # the BatchNorm statistics moved identically
        assert (cell.out_norm.running_mean - block.norm.running_mean).abs().max() < 1e-12
        assert (cell.out_norm.running_var - block.norm.running_var).abs().max() < 1e-12


def test_single_op_cell_equals_nonlocal_block_in_gradients():
    block, cell = _tied_pair(seed=12)
    x = _input(3)
    proj = _input(4)
    (block(x) * proj).sum().backward()
    (cell(x) * proj).sum().backward()
    op = cell.ops[0]
    pairs = [
        (op.g1.weight.grad, block.conv_theta.weight.grad.view(DIM_INNER, DIM_IN)),
        (op.g2.weight.grad, block.conv_phi.weight.grad.view(DIM_INNER, DIM_IN)),
        (op.g3.weight.grad, block.conv_g.weight.grad),
        (cell.out_conv.weight.grad, block.conv_out.weight.grad),
        (cell.out_norm.weight.grad, block.norm.weight.grad),
    ]
    for ours, theirs in pairs:
        assert (ours - theirs).abs().max() < 1e-10
