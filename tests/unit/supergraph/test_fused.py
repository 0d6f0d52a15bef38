"""The fused supergraph (a level's projections batched, channels-last node outputs, one sink
product) against a naive restatement of Eq. 4-6 and against ``forward_per_node``.

The restatement shares no code with ``SuperGraph.forward``: node by node and activation by
activation through each op's single-activation ``forward_mixed`` (Eq. 5 as the plain sum
Σ_a p_a op_a(x)), Eq. 4 as an explicit sum over predecessors, Eq. 6 as one 1×1×1 convolution
per node weighted by its sink probability. Connection weights are random (not one-hot), every
network weight and bias is non-trivial, and outputs, running statistics and the gradients of
every parameter, connection weight and the input are compared in float64 to 1e-10.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from attnas.space import load_space
from attnas.supergraph import SuperGraph

SHAPE = (16, 4, 4, 4)
ACTS4 = ("none", "relu", "sigmoid", "softmax")
NODES6 = list(load_space("attention_nas").supergraph.nodes)


def naive(sg: SuperGraph, x: torch.Tensor) -> torch.Tensor:
    """Eq. 4-6 restated node by node and activation by activation."""
    aw = sg.arch_weights
    act_p, sink_p = aw.act_probs(), aw.sink_probs()
    level_p = aw.level_probs() if sg.levels > 1 else None
    n = aw.num_nodes
    prev: list[torch.Tensor] = []
    total = 0
    for i in range(sg.levels):
        outs = []
        for j in range(n):
            op = sg.node(i + 1, j)
            if i == 0:
                inp = x
            else:
                inp = sum(level_p[i - 1, j, k] * prev[k] for k in range(n))
            acts = aw.activations[j]
            out = sum(
                act_p[i, j, a] * op.forward_mixed(inp, None, (act,)) for a, act in enumerate(acts)
            )
            outs.append(out)  # (B, C_op, T, H, W)
            conv = sg.sink_conv(i + 1, j)
            total = total + sink_p[i * n + j] * F.conv3d(out, conv.weight, conv.bias)
        prev = outs
    return x + sg.out_norm(total)


def _randomised(sg: SuperGraph, seed: int) -> SuperGraph:
    gen = torch.Generator().manual_seed(seed)
    sg = sg.double()
    sg.arch_weights.double()
    with torch.no_grad():
        for p in [*sg.parameters(), *sg.arch_weights.parameters()]:
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        sg.out_norm.running_mean.normal_(generator=gen)
        sg.out_norm.running_var.uniform_(0.5, 2.0, generator=gen)
    return sg


def _compare(sg: SuperGraph, reference, x: torch.Tensor, train: bool) -> None:
    """Output, BN running statistics and every gradient of the fused path equal ``reference``."""
    results = []
    for fn in (lambda g, inp: g(inp), reference):
        g = copy.deepcopy(sg).train(train)  # copies the (non-owned) arch_weights along
        inp = x.detach().clone().requires_grad_(True)
        y = fn(g, inp)
        proj = torch.sin(torch.arange(y.numel(), dtype=y.dtype)).view_as(y)
        (y * proj).sum().backward()
        params = dict(g.named_parameters())
        params.update({f"arch.{k}": p for k, p in g.arch_weights.named_parameters()})
        grads = {k: p.grad for k, p in params.items() if p.numel()}  # (w_level of 1 level: empty)
        grads["input"] = inp.grad
        results.append((y.detach(), grads, g.out_norm.running_mean.clone()))
    (y_f, g_f, rm_f), (y_r, g_r, rm_r) = results
    assert (y_f - x).abs().max() > 1e-2  # the branch is alive: the comparison means something
    torch.testing.assert_close(y_f, y_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(rm_f, rm_r, rtol=0, atol=1e-10)
    assert g_f.keys() == g_r.keys()
    for k in g_f:
        assert g_f[k] is not None, k
        torch.testing.assert_close(g_f[k], g_r[k], rtol=0, atol=1e-10, msg=k)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_fused_equals_the_naive_restatement_paper_space(levels, train):
    torch.manual_seed(levels)
    sg = _randomised(SuperGraph(levels, NODES6, 16, 4, SHAPE, [ACTS4] * 6), seed=levels)
    assert sg.fused
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    _compare(sg, naive, x, train)


def test_fused_equals_per_node_with_other_op_types_mixed_in():
    # bat, rsa, sta nodes run through their own forward_mixed inside the fused levels
    space = load_space("attention_nas_plus")
    torch.manual_seed(0)
    sg = _randomised(SuperGraph.from_space(space, SHAPE[0], SHAPE), seed=1)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    _compare(sg, naive, x, train=True)
    _compare(sg, lambda g, inp: g.forward_per_node(inp), x, train=True)


def test_fused_with_uneven_activation_lists_and_one_activation_nodes():
    nodes = [("dot", "spatiotemporal"), ("map", "temporal"), ("dot", "spatial"), ("map", "spatial")]
    acts = [("softmax",), ("sigmoid", "none"), ("relu", "softmax", "none"), ("softmax",)]
    torch.manual_seed(2)
    sg = _randomised(SuperGraph(2, nodes, 16, 8, SHAPE, acts), seed=2)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    _compare(sg, naive, x, train=True)


def test_fused_equals_forward_per_node_and_the_flag_switches_paths():
    torch.manual_seed(3)
    sg = _randomised(SuperGraph(2, NODES6, 16, 4, SHAPE, [ACTS4] * 6), seed=3)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    _compare(sg, lambda g, inp: g.forward_per_node(inp), x, train=True)
    sg.fused = False
    with torch.no_grad():
        torch.testing.assert_close(sg(x), sg.forward_per_node(x), rtol=0, atol=0)


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(4)
    sg = _randomised(SuperGraph(2, NODES6, 16, 4, SHAPE, [ACTS4] * 6), seed=4).eval()
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        y = sg(x)
        y_cl = sg(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(y_cl, y, rtol=0, atol=1e-12)
    assert y.is_contiguous()


def test_level_one_projections_are_two_products():
    """Every level-1 projection that reads per-position channels is one product, the temporal
    nodes' frame-wide ones another: 2 products for 6 nodes (the per-node path runs 15)."""
    torch.manual_seed(5)
    sg = SuperGraph(1, NODES6, 16, 4, SHAPE, [ACTS4] * 6)
    x = torch.randn(2, *SHAPE)
    calls = []
    real = F.linear

    def counting(inp, weight, bias=None):
        calls.append(tuple(weight.shape))
        return real(inp, weight, bias)

    import attnas.supergraph.graph as graph

    graph.F.linear = counting
    try:
        with torch.no_grad():
            sg(x)
    finally:
        graph.F.linear = real
    # from C = 16 channels: 6 G3 (4 each), G1 and G2 of dot spatial/st (4 each) and AvgPool∘G1
    # of map spatial/st (1 each); from H*W*C = 256 features: G1, G2 of dot temporal and
    # AvgPool∘G1 of map temporal; then the map nodes' G2 MLPs (2 linears each) and the sink
    assert calls[:2] == [(6 * 4 + 4 * 4 + 2 * 1, 16), (4 + 4 + 1, 4 * 4 * 16)]


def test_double_backward_through_the_fused_mix_is_exact():
    torch.manual_seed(6)
    sg = _randomised(SuperGraph(2, NODES6, 16, 4, SHAPE, [ACTS4] * 6), seed=6)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    w = sg.arch_weights.w_act
    second = []
    for fused in (True, False):
        sg.fused = fused
        (g,) = torch.autograd.grad(sg(x).square().sum(), w, create_graph=True)
        (h,) = torch.autograd.grad(g.square().sum(), w)
        second.append(h)
    torch.testing.assert_close(second[0], second[1], rtol=1e-10, atol=1e-10)


def test_bfloat16_autocast_runs_and_stays_close_to_float32():
    torch.manual_seed(7)
    sg = SuperGraph(2, NODES6, 16, 4, SHAPE, [ACTS4] * 6)
    with torch.no_grad():
        sg.out_norm.weight.fill_(1.0)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        ref = sg(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sg(x)
    y.float().square().mean().backward()
    assert all(p.grad is not None for p in sg.arch_weights.parameters())
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.1)
