"""The ``SuperGraph`` module: one-hot equivalence with the derived cell, Eq. 5, identity at
initialisation, connection weights kept apart, the factory's sharing, and the weight plot.

The one-hot checks build a supergraph, give its network weights random values (including the
output BatchNorm, which is zero-initialised), set the connection logits to 0 on the chosen
entries and -1e4 elsewhere (so the softmax is exactly 0 off the choice), derive the cell, copy
the weights with ``cell_from_supergraph`` and compare the two outputs in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnas.backbones import build_backbone, insert_cells
from attnas.ops import MatrixAttention
from attnas.space import CellSpec, OpNode, OpSpec, load_space
from attnas.supergraph import ArchitectureWeights, SuperGraph, cell_from_supergraph, derive_cell
from attnas.supergraph.plot import plot_weights
from attnas.supergraph.search import SupergraphFactory

SHAPE = (16, 4, 4, 4)
ACTS4 = ("none", "relu", "sigmoid", "softmax")
OFF = -1e4


def _supergraph(levels, nodes, acts=None, seed=0, space=None):
    torch.manual_seed(seed)
    if space is not None:
        sg = SuperGraph.from_space(space, SHAPE[0], SHAPE)
    else:
        acts = acts or [ACTS4] * len(nodes)
        sg = SuperGraph(levels, nodes, SHAPE[0], SHAPE[0] // 4, SHAPE, acts)
    sg = sg.double()
    sg.arch_weights.double()  # not a submodule of the supergraph: converted on its own
    with torch.no_grad():
        sg.out_norm.weight.normal_()
        sg.out_norm.bias.normal_()
        sg.out_norm.running_mean.normal_()
        sg.out_norm.running_var.uniform_(0.5, 2.0)
        for p in sg.parameters():  # make every bias / token non-trivial too
            if p.dim() == 1 and p is not sg.out_norm.weight and p is not sg.out_norm.bias:
                p.add_(0.1 * torch.randn_like(p))
    return sg


def _set_one_hot(aw, sink, level=None, act=None):
    """``sink``: {(lv, j): logit}; ``level``: {(lv, j): {k: logit}}; ``act``: {(lv, j): a}.

    Unlisted level rows pick predecessor 0; unlisted activations pick the first listed.
    """
    m, n = aw.levels, aw.num_nodes
    with torch.no_grad():
        aw.w_sink.fill_(OFF)
        for (lv, j), logit in sink.items():
            aw.w_sink[(lv - 1) * n + j] = logit
        if m > 1:
            aw.w_level.fill_(OFF)
            aw.w_level[:, :, 0] = 0.0
            for (lv, j), row in (level or {}).items():
                aw.w_level[lv - 2, j].fill_(OFF)
                for k, logit in row.items():
                    aw.w_level[lv - 2, j, k] = logit
        aw.w_act.fill_(OFF)
        aw.w_act[:, :, 0] = 0.0
        for (lv, j), a in (act or {}).items():
            aw.w_act[lv - 1, j].fill_(OFF)
            aw.w_act[lv - 1, j, a] = 0.0


def _check_equivalent(sg, cell_spec, alpha, beta, expected):
    derived = derive_cell(sg.arch_weights, alpha, beta)
    assert derived == expected, derived.describe()
    cell = cell_from_supergraph(sg, derived)
    assert next(cell.parameters()).dtype == torch.float64
    torch.manual_seed(1)
    x = torch.randn(3, *SHAPE, dtype=torch.float64)  # (B, C, T, H, W)
    for train in (False, True):
        sg.train(train)
        cell.train(train)
        with torch.no_grad():
            y_sg, y_cell = sg(x), cell(x)
        assert (y_sg - x).abs().max() > 1e-2  # not the identity: the comparison means something
        torch.testing.assert_close(y_sg, y_cell, rtol=0, atol=1e-10)
    return cell


def _cell(ops, outputs):
    return CellSpec(tuple(OpNode(OpSpec(*op), inputs) for op, inputs in ops), outputs)


SPACE = load_space("attention_nas")
# (map, spatial), (map, temporal), (map, st), (dot, spatial), (dot, temporal), (dot, st)
NODES6 = list(SPACE.supergraph.nodes)


def test_one_hot_two_levels_beta1_path():
    sg = _supergraph(2, NODES6)
    # sink on L2.dot/spatiotemporal (j=5), which reads L1.map/temporal (j=1)
    _set_one_hot(
        sg.arch_weights, {(2, 5): 0.0}, level={(2, 5): {1: 0.0}}, act={(2, 5): 3, (1, 1): 2}
    )
    expected = _cell(
        [(("map", "temporal", "sigmoid"), (0,)), (("dot", "spatiotemporal", "softmax"), (1,))],
        (2,),
    )
    _check_equivalent(sg, None, 1, 1, expected)


def test_one_hot_single_node_level1():
    sg = _supergraph(2, NODES6, seed=3)
    _set_one_hot(sg.arch_weights, {(1, 3): 0.0}, act={(1, 3): 1})
    _check_equivalent(sg, None, 1, 1, _cell([(("dot", "spatial", "relu"), (0,))], (1,)))


def test_one_hot_three_levels_beta1_path():
    nodes = [("map", "spatial"), ("dot", "temporal"), ("dot", "spatial")]
    sg = _supergraph(3, nodes, seed=4)
    # L3.2 <- L2.0 <- L1.1
    _set_one_hot(
        sg.arch_weights,
        {(3, 2): 0.0},
        level={(3, 2): {0: 0.0}, (2, 0): {1: 0.0}},
        act={(3, 2): 0, (2, 0): 3, (1, 1): 1},
    )
    expected = _cell(
        [
            (("dot", "temporal", "relu"), (0,)),
            (("map", "spatial", "softmax"), (1,)),
            (("dot", "spatial", "none"), (2,)),
        ],
        (3,),
    )
    _check_equivalent(sg, None, 1, 1, expected)


def test_alpha2_shared_sink_scaled_output():
    # alpha = 2: sink 1/2 on L1.map/spatial and L2.dot/temporal, exactly 0 elsewhere; the cell's
    # output conv holds the sink convs scaled by 1/2.
    sg = _supergraph(2, NODES6, seed=5)
    _set_one_hot(
        sg.arch_weights,
        {(1, 0): 0.0, (2, 4): 0.0},
        level={(2, 4): {2: 0.0}},
        act={(1, 0): 3, (2, 4): 2, (1, 2): 1},
    )
    assert sg.arch_weights.sink_probs()[0].item() == 0.5
    expected = _cell(
        [
            (("map", "spatial", "softmax"), (0,)),
            (("map", "spatiotemporal", "relu"), (0,)),
            (("dot", "temporal", "sigmoid"), (2,)),
        ],
        (1, 3),
    )
    cell = _check_equivalent(sg, None, 2, 1, expected)
    torch.testing.assert_close(cell.out_conv.weight[:, :4], 0.5 * sg.sink_conv(1, 0).weight)
    torch.testing.assert_close(cell.out_conv.weight[:, 4:], 0.5 * sg.sink_conv(2, 4).weight)


def test_alpha3_unequal_sink_three_levels():
    nodes = [("map", "temporal"), ("dot", "spatiotemporal"), ("map", "spatial")]
    sg = _supergraph(3, nodes, seed=6)
    # sink logits 0, log 2, log 3 on L1.2, L2.1, L3.0: probs 1/6, 2/6, 3/6
    _set_one_hot(
        sg.arch_weights,
        {(1, 2): 0.0, (2, 1): math.log(2), (3, 0): math.log(3)},
        level={(3, 0): {1: 0.0}, (2, 1): {0: 0.0}},
        act={(3, 0): 2, (2, 1): 1, (1, 0): 3},
    )
    expected = _cell(
        [
            (("map", "temporal", "softmax"), (0,)),
            (("map", "spatial", "none"), (0,)),
            (("dot", "spatiotemporal", "relu"), (1,)),
            (("map", "temporal", "sigmoid"), (3,)),
        ],
        (2, 3, 4),
    )
    _check_equivalent(sg, None, 3, 1, expected)


def test_beta2_level_weights_copied_as_input_weights():
    # beta = 2: L2.map/spatial reads L1 nodes 1 and 3 with 1/4, 3/4 (exactly 0 elsewhere)
    sg = _supergraph(2, NODES6, seed=7)
    _set_one_hot(
        sg.arch_weights,
        {(2, 0): 0.0},
        level={(2, 0): {1: 0.0, 3: math.log(3)}},
        act={(2, 0): 1, (1, 1): 0, (1, 3): 3},
    )
    expected = _cell(
        [
            (("map", "temporal", "none"), (0,)),
            (("dot", "spatial", "softmax"), (0,)),
            (("map", "spatial", "relu"), (1, 2)),
        ],
        (3,),
    )
    cell = _check_equivalent(sg, None, 1, 2, expected)
    torch.testing.assert_close(
        cell.input_weights["3"], torch.tensor([0.25, 0.75], dtype=torch.float64)
    )


def test_one_hot_attention_nas_plus_bat_rsa_sta():
    space = load_space("attention_nas_plus")
    nodes = list(space.supergraph.nodes)
    sg = _supergraph(None, None, seed=8, space=space)
    assert len(sg.nodes[0]) == 15 and sg.op_channels == 4
    bat_t, rsa_s, sta_st = (
        nodes.index(n) for n in [("bat", "temporal"), ("rsa", "spatial"), ("sta", "spatiotemporal")]
    )
    bat_s, dot_t = nodes.index(("bat", "spatial")), nodes.index(("dot", "temporal"))
    # sink on L1.bat/temporal, L2.rsa/spatial (<- L1.sta/spatiotemporal) and
    # L2.bat/spatial (<- L1.dot/temporal); bat activations: softmax (0), sigmoid (1)
    _set_one_hot(
        sg.arch_weights,
        {(1, bat_t): 0.0, (2, rsa_s): 0.0, (2, bat_s): 0.0},
        level={(2, rsa_s): {sta_st: 0.0}, (2, bat_s): {dot_t: 0.0}},
        act={(1, bat_t): 1, (2, bat_s): 0, (1, dot_t): 2},
    )
    expected = _cell(
        [
            (("dot", "temporal", "sigmoid"), (0,)),
            (("bat", "temporal", "sigmoid"), (0,)),
            (("sta", "spatiotemporal", "softmax"), (0,)),
            (("bat", "spatial", "softmax"), (1,)),
            (("rsa", "spatial", "none"), (3,)),
        ],
        (2, 4, 5),
    )
    _check_equivalent(sg, None, 3, 1, expected)


def test_cell_from_supergraph_uses_supergraph_op_params():
    space = load_space("attention_nas_plus")
    torch.manual_seed(0)
    sg = SuperGraph(
        1, [("rsa", "spatial")], 16, 8, SHAPE, [("none",)], op_params={"rsa": {"nh": 2, "m": 3}}
    )
    assert space is not None
    cell = cell_from_supergraph(sg, derive_cell(sg.arch_weights, 1, 1))
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        sg.out_norm.weight.fill_(1.0)
        cell.out_norm.weight.fill_(1.0)
        torch.testing.assert_close(sg.eval()(x), cell.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("node", [0, 1, 2, 3, 4, 5])
def test_multi_activation_mix_equals_naive_sum(node):
    sg = _supergraph(2, NODES6, seed=9)
    torch.manual_seed(2)
    p = torch.softmax(torch.randn(4, dtype=torch.float64), 0)
    for level in (1, 2):
        op = sg.node(level, node)
        c_in = SHAPE[0] if level == 1 else SHAPE[0] // 4
        x = torch.randn(2, c_in, *SHAPE[1:], dtype=torch.float64)  # (B, C_in, T, H, W)
        mixed = op.forward_mixed(x, p, ACTS4)
        naive = sum(p[a] * op.forward_mixed(x, None, (ACTS4[a],)) for a in range(4))
        torch.testing.assert_close(mixed, naive, rtol=0, atol=1e-6)
        assert isinstance(op, MatrixAttention)  # the single-product path was used


def test_multi_activation_mix_bat_nodes():
    space = load_space("attention_nas_plus")
    sg = _supergraph(None, None, seed=10, space=space)
    nodes = list(space.supergraph.nodes)
    torch.manual_seed(3)
    for dim in ("spatial", "temporal", "spatiotemporal"):
        op = sg.node(1, nodes.index(("bat", dim)))
        p = torch.softmax(torch.randn(2, dtype=torch.float64), 0)
        x = torch.randn(2, *SHAPE, dtype=torch.float64)
        naive = sum(
            p[a] * op.forward_mixed(x, None, (act,)) for a, act in enumerate(("softmax", "sigmoid"))
        )
        torch.testing.assert_close(
            op.forward_mixed(x, p, ("softmax", "sigmoid")), naive, rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("train", [True, False])
def test_identity_at_initialisation(train):
    torch.manual_seed(0)
    sg = SuperGraph.from_space(SPACE, SHAPE[0], SHAPE).train(train)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(sg(x), x)


def test_connection_weights_are_not_network_parameters():
    aw = ArchitectureWeights(2, NODES6, [ACTS4] * 6)
    sg = SuperGraph.from_space(SPACE, SHAPE[0], SHAPE, arch_weights=aw)
    assert sg.arch_weights is aw
    arch_ids = {id(p) for p in aw.parameters()}
    assert len(arch_ids) == 3
    assert not arch_ids & {id(p) for p in sg.parameters()}
    assert [id(p) for p in sg.network_parameters()] == [id(p) for p in sg.parameters()]
    assert not [k for k in sg.state_dict() if k.split(".")[-1] in ("w_sink", "w_level", "w_act")]
    # but gradients reach them
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        sg.out_norm.weight.fill_(1.0)
    sg(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aw.parameters())
    assert (
        aw.w_sink.shape == (12,) and aw.w_level.shape == (1, 6, 6) and aw.w_act.shape == (2, 6, 4)
    )


def test_arch_weights_for_another_shape_rejected():
    aw = ArchitectureWeights(3, NODES6, [ACTS4] * 6)
    with pytest.raises(ValueError, match="arch_weights were made for another supergraph shape"):
        SuperGraph.from_space(SPACE, SHAPE[0], SHAPE, arch_weights=aw)


@pytest.mark.parametrize("position_specific", [False, True])
def test_factory_shares_or_separates_weights(position_specific):
    torch.manual_seed(0)
    model = build_backbone("i3d_tiny", 4, (3, 8, 32, 32))
    factory = SupergraphFactory(SPACE, position_specific=position_specific)
    insert_cells(model, None, factory)
    positions = list(model.default_positions)
    assert len(positions) == 5
    graphs = {name: model.inserted[name] for name in positions}
    assert all(isinstance(g, SuperGraph) for g in graphs.values())
    if position_specific:
        assert list(factory.weights) == positions
        assert all(graphs[p].arch_weights is factory.weights[p] for p in positions)
        assert len({id(g.arch_weights) for g in graphs.values()}) == 5
    else:
        assert list(factory.weights) == ["all"]
        assert all(g.arch_weights is factory.weights["all"] for g in graphs.values())
    params = factory.attach(model)
    assert len(params) == 3 * len(factory.weights)
    assert set(model.architecture.keys()) == set(factory.weights)
    state = model.state_dict()
    for key, w in factory.weights.items():
        assert model.architecture[key] is w
        for name in ("w_level", "w_act", "w_sink"):
            assert state[f"architecture.{key}.{name}"].data_ptr() == getattr(w, name).data_ptr()
    # each parameter appears once in model.parameters() (shared weights are not duplicated)
    all_ids = [id(p) for p in model.parameters()]
    assert len(all_ids) == len(set(all_ids))
    assert {id(p) for p in params} <= set(all_ids)


def test_plot_weights_writes_png(tmp_path):
    aw = ArchitectureWeights(2, NODES6, [ACTS4] * 6)
    with torch.no_grad():
        aw.w_sink.copy_(torch.linspace(-1, 1, 12))
        aw.w_level.normal_()
        aw.w_act.normal_()
    cell = derive_cell(aw, 3, 1)
    path = plot_weights(aw, tmp_path / "sub" / "w.png", cell)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_plot_weights_has_a_legend_for_the_activation_bars(tmp_path, monkeypatch):
    """Issue 16 item 13: the activation squares had no legend."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    aw = ArchitectureWeights(2, NODES6, [ACTS4] * 6)
    plot_weights(aw, tmp_path / "w.png", derive_cell(aw, 3, 1))
    legend = figures[0].axes[0].get_legend()
    assert legend is not None and legend.get_title().get_text() == "activation bars"
    assert [t.get_text() for t in legend.get_texts()] == list(ACTS4)
