"""One-shot evaluation: a cell scored by inherited weights is the supergraph restricted to it.

The supergraphs below get random network weights (the output BatchNorm too, which starts at
zero) and random connection logits (as after training: no probability is 0 or 1), in float64.
The checks compare numbers: the supergraph run with ``restricted_weights`` against the
``inherited_cell`` (1e-10), ``inherited_cell`` against ``cell_from_supergraph`` on a derived
cell, and whole-model scores through either path.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attnas.space import CellSpec, OpNode, OpSpec, load_space
from attnas.supergraph import SuperGraph, cell_from_supergraph, derive_cell
from attnas.supergraph.oneshot import (
    cell_in_place,
    cell_nodes,
    evaluate,
    evaluate_cells,
    expresses,
    inherited_cell,
    recalibrate_batchnorm,
    restricted_weights,
)
from attnas.supergraph.weights import ArchitectureWeights

SHAPE = (16, 4, 4, 4)  # (C, T, H, W)
SPACE = load_space("attention_nas")
# (map, spatial), (map, temporal), (map, st), (dot, spatial), (dot, temporal), (dot, st)
NODES6 = list(SPACE.supergraph.nodes)


def _supergraph(seed=0, levels=2, dirichlet=False):
    torch.manual_seed(seed)
    acts = [SPACE.activations_for(t) for t, _ in NODES6]
    aw = ArchitectureWeights(levels, NODES6, acts, dirichlet=dirichlet)
    sg = SuperGraph(levels, NODES6, SHAPE[0], SHAPE[0] // 4, SHAPE, acts, arch_weights=aw)
    sg = sg.double()
    aw = sg.arch_weights.double()  # not a submodule of the supergraph: converted on its own
    with torch.no_grad():
        sg.out_norm.weight.normal_()
        sg.out_norm.bias.normal_()
        sg.out_norm.running_mean.normal_()
        sg.out_norm.running_var.uniform_(0.5, 2.0)
        for p in sg.parameters():
            if p.dim() == 1 and p is not sg.out_norm.weight and p is not sg.out_norm.bias:
                p.add_(0.1 * torch.randn_like(p))
        for w in (aw.w_level, aw.w_act, aw.w_sink):
            w.normal_()
    return sg


def _cell(ops, outputs=None):
    nodes = tuple(OpNode(OpSpec(*op), inputs) for op, inputs in ops)
    return CellSpec(nodes, outputs or tuple(range(1, len(nodes) + 1)))


CHAIN = _cell(
    [(("map", "temporal", "sigmoid"), (0,)), (("dot", "spatiotemporal", "softmax"), (1,))]
)
PARALLEL = _cell([(("dot", "spatial", "relu"), (0,)), (("map", "spatiotemporal", "none"), (0,))])
TWO_PREDECESSORS = _cell(
    [
        (("map", "spatial", "softmax"), (0,)),
        (("dot", "temporal", "none"), (0,)),
        (("dot", "spatial", "sigmoid"), (1, 2)),
    ],
    (3,),
)
SINGLE = _cell([(("dot", "spatiotemporal", "softmax"), (0,))])
WITH_F0 = _cell(
    [(("map", "temporal", "sigmoid"), (0,)), (("dot", "spatiotemporal", "softmax"), (0, 1))]
)
SHARED_NODE = _cell([(("dot", "spatial", "relu"), (0,)), (("dot", "spatial", "softmax"), (0,))])


def _x(batch=3, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, *SHAPE, dtype=torch.float64)  # (B, C, T, H, W)


@pytest.mark.parametrize("dirichlet", [False, True], ids=["softmax", "dirichlet"])
@pytest.mark.parametrize(
    "cell", [CHAIN, PARALLEL, TWO_PREDECESSORS, SINGLE], ids=["chain", "parallel", "join", "single"]
)
def test_inherited_cell_equals_supergraph_restricted_to_it(cell, dirichlet):
    """Under Dirichlet mixing the supergraph mixes with the Dirichlet mean (evaluation, or no
    gradient), so the inherited cell's input and output weights are that mean over its own
    choices, not their softmax."""
    sg = _supergraph(seed=len(cell.ops) + len(cell.outputs), dirichlet=dirichlet)
    assert expresses(sg.arch_weights, cell)
    inherited = inherited_cell(sg, cell)
    acts = [SPACE.activations_for(t) for t, _ in NODES6]
    restricted = SuperGraph(
        2, NODES6, SHAPE[0], SHAPE[0] // 4, SHAPE, acts,
        arch_weights=restricted_weights(sg.arch_weights, cell),
    ).double()  # fmt: skip
    restricted.load_state_dict(sg.state_dict())
    x = _x()
    for train in (False, True):
        for module in (sg, restricted, inherited):
            module.train(train)
        with torch.no_grad():
            y_sg, y_cell, y_full = restricted(x), inherited(x), sg(x)
        assert (y_cell - x).abs().max() > 1e-2  # not the identity: the comparison means something
        assert (y_full - y_cell).abs().max() > 1e-3  # the restriction changed the supergraph
        torch.testing.assert_close(y_sg, y_cell, rtol=0, atol=1e-10)


def test_restricted_weights_renormalise_the_trained_probabilities_over_the_cell():
    sg = _supergraph()
    aw = sg.arch_weights
    r = restricted_weights(aw, TWO_PREDECESSORS)
    # ops: L1.map/spatial (j=0), L1.dot/temporal (j=4), L2.dot/spatial (j=3) reading both
    assert cell_nodes(aw, TWO_PREDECESSORS) == [(1, 0), (1, 4), (2, 3)]
    sink = r.sink_probs()
    assert sink[6 + 3].item() == pytest.approx(1.0, abs=1e-12)  # the only output
    assert sink.sum().item() == pytest.approx(1.0, abs=1e-12)
    level = r.level_probs()[0, 3]
    full = aw.level_probs()[0, 3]
    expected = torch.zeros(6, dtype=torch.float64)
    expected[[0, 4]] = full[[0, 4]] / full[[0, 4]].sum()
    torch.testing.assert_close(level, expected, rtol=0, atol=1e-12)
    act = r.act_probs()
    assert act[0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]  # softmax
    assert act[1, 3].tolist() == [0.0, 0.0, 1.0, 0.0]  # sigmoid
    torch.testing.assert_close(act[1, 0], aw.act_probs()[1, 0])  # unused node: untouched
    # the original is left as it was
    assert aw.sink_probs().min().item() > 0


def test_inherited_cell_matches_cell_from_supergraph_on_a_derived_cell():
    """With one-hot connection weights (the existing derivation tests' setting) the two
    constructions hold the same weights and compute the same function."""
    sg = _supergraph(seed=4)
    aw = sg.arch_weights
    off = -1e4
    with torch.no_grad():
        aw.w_sink.fill_(off)
        aw.w_sink[1] = aw.w_sink[6 + 5] = 0.0  # L1.map/temporal and L2.dot/spatiotemporal
        aw.w_level.fill_(off)
        aw.w_level[0, :, 1] = 0.0  # every L2 node reads L1.map/temporal
        aw.w_act.fill_(off)
        aw.w_act[0, 1, 2] = aw.w_act[1, 5, 3] = 0.0  # sigmoid, softmax
    derived = derive_cell(aw, alpha=2, beta=1)
    assert derived == CHAIN
    reference = cell_from_supergraph(sg, derived)
    inherited = inherited_cell(sg, derived)
    ref_state, state = reference.state_dict(), inherited.state_dict()
    assert ref_state.keys() == state.keys()
    for key in ref_state:
        torch.testing.assert_close(state[key], ref_state[key], rtol=0, atol=1e-12)
    x = _x()
    for train in (False, True):
        with torch.no_grad():
            torch.testing.assert_close(
                inherited.train(train)(x), reference.train(train)(x), rtol=0, atol=1e-10
            )


def test_f0_next_to_an_op_is_left_out():
    """``{f0, op 1}`` has no supergraph edge for f0: it is scored exactly like ``{op 1}``."""
    sg = _supergraph(seed=2)
    assert not expresses(sg.arch_weights, WITH_F0)
    assert cell_nodes(sg.arch_weights, WITH_F0) == [(1, 1), (2, 5)]
    cell = inherited_cell(sg, WITH_F0)
    assert cell.input_weights["2"].tolist() == [0.0, 1.0]
    assert cell.input_proj.weight.abs().max().item() == 0.0
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(
            cell.eval()(x), inherited_cell(sg, CHAIN).eval()(x), rtol=0, atol=1e-12
        )


def test_two_ops_on_one_node_share_its_weights_with_their_own_activations():
    sg = _supergraph(seed=3)
    aw = sg.arch_weights
    assert cell_nodes(aw, SHARED_NODE) == [(1, 3), (1, 3)]
    assert not expresses(aw, SHARED_NODE)
    cell = inherited_cell(sg, SHARED_NODE)
    node = sg.node(1, 3).state_dict()
    for op in cell.ops:
        for key, value in op.state_dict().items():
            assert torch.equal(value, node[key])
    assert [op_node.op.activation for op_node in cell.spec.ops] == ["relu", "softmax"]
    # both outputs read the node's sink conv, each with half the (equal) sink logit's weight
    w = sg.sink_conv(1, 3).weight
    torch.testing.assert_close(cell.out_conv.weight, torch.cat([w / 2, w / 2], dim=1))
    x = _x()
    with torch.no_grad():
        y = cell.eval()(x)
    assert torch.isfinite(y).all() and (y - x).abs().max() > 1e-2


def test_unknown_nodes_and_too_deep_cells_raise():
    sg = _supergraph(levels=1)
    with pytest.raises(ValueError, match="depth 2; the supergraph has 1 levels"):
        inherited_cell(sg, CHAIN)
    other = load_space("attention_nas_plus")
    op = next(o for o in other.op_choices() if (o.type, o.dim) not in NODES6)
    with pytest.raises(ValueError, match="the supergraph has no"):
        cell_nodes(sg.arch_weights, _cell([((op.type, op.dim, op.activation), (0,))]))


class _FrozenNorm(nn.Module):
    """A frozen pre-trained stage: its BatchNorm stays in eval mode when the model trains."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.BatchNorm3d(channels)

    def train(self, mode=True):
        super().train(mode)
        self.norm.eval()
        return self

    def forward(self, x):
        return self.norm(x)


class _Net(nn.Module):
    """A frozen stage, the supergraph and a position-wise readout with a BatchNorm."""

    def __init__(self, sg, classes=3):
        super().__init__()
        self.frozen = _FrozenNorm(SHAPE[0])
        self.inserted = nn.ModuleDict({"p": sg})
        self.readout = nn.Sequential(nn.Conv3d(SHAPE[0], 8, 1), nn.BatchNorm3d(8), nn.ReLU())
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.inserted["p"](self.frozen(x))  # (B, C, T, H, W)
        return self.fc(self.readout(x).mean(dim=(2, 3, 4)))  # (B, classes)


def _net(seed=5, dirichlet=False):
    net = _Net(_supergraph(seed=seed, dirichlet=dirichlet)).double()
    with torch.no_grad():
        net.frozen.norm.running_mean.normal_()
        net.readout[1].running_mean.normal_()
        net.readout[1].running_var.uniform_(0.5, 2.0)
    return net


def _batches(n=4, batch=6, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *SHAPE, dtype=torch.float64, generator=g), torch.arange(batch) % 3)
        for _ in range(n)
    ]


@pytest.mark.parametrize("dirichlet", [False, True], ids=["softmax", "dirichlet"])
@pytest.mark.parametrize("batchnorm", ["keep", "recalibrate"])
def test_scores_through_the_inherited_cell_equal_the_restricted_supergraph(batchnorm, dirichlet):
    net = _net(dirichlet=dirichlet)
    before = copy.deepcopy(net.state_dict())
    val, train = _batches(seed=7), _batches(seed=8)
    cells = [CHAIN, PARALLEL, SINGLE]
    kwargs = {"batchnorm": batchnorm, "calibration": train, "calibration_batches": 2}
    via_cell = evaluate_cells(net, cells, val, via="cell", **kwargs)
    via_sg = evaluate_cells(net, cells, val, via="supergraph", **kwargs)
    assert [s.cell for s in via_cell] == cells
    assert all(s.expressed and s.clips == 24 and s.nonfinite == 0 for s in via_cell)
    for a, b in zip(via_cell, via_sg):
        assert a.top1 == b.top1
        assert a.loss == pytest.approx(b.loss, rel=0, abs=1e-10)
    assert len({round(s.loss, 8) for s in via_cell}) == 3  # the cells are told apart
    # nothing of the model changed: weights, connection logits, running statistics, modules
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(net.inserted["p"], SuperGraph)


def test_a_single_score_is_the_model_with_the_cell_swapped_in():
    net = _net()
    val = _batches(seed=9)
    (score,) = evaluate_cells(net, [PARALLEL], val)
    swapped = copy.deepcopy(net)
    swapped.inserted["p"] = inherited_cell(net.inserted["p"], PARALLEL)
    manual = evaluate(swapped, val)
    assert (score.top1, score.clips) == (manual.top1, manual.clips)
    assert score.loss == pytest.approx(manual.loss, rel=0, abs=1e-12)
    logits = torch.cat([swapped.eval()(x) for x, _ in val]).double()
    labels = torch.cat([y for _, y in val])
    assert manual.top1 == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    loss = nn.functional.cross_entropy(logits, labels).item()
    assert manual.loss == pytest.approx(loss, abs=1e-12)


def test_recalibration_averages_the_batches_and_leaves_frozen_norms_alone():
    net = _net()
    frozen = copy.deepcopy(net.frozen.norm.state_dict())
    batches = _batches(n=3, seed=11)
    with cell_in_place(net, CHAIN):
        assert recalibrate_batchnorm(net, batches, 2) == 2
        assert not net.training
        calibrated = copy.deepcopy(net)
        # what the readout BatchNorm saw on each of the first two batches: its input, with
        # the cell's BatchNorm on batch statistics as during the recalibration
        seen = []
        probe = net.readout[1].register_forward_hook(lambda m, i, o: seen.append(i[0]))
        net.inserted["p"].out_norm.train()
        with torch.no_grad():
            for x, _ in batches[:2]:
                net(x)
        probe.remove()
    means = torch.stack([s.mean(dim=(0, 2, 3, 4)) for s in seen])  # (2, 8)
    variances = torch.stack([s.transpose(0, 1).flatten(1).var(dim=1) for s in seen])  # (2, 8)
    bn = calibrated.readout[1]
    torch.testing.assert_close(bn.running_mean, means.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_var, variances.mean(0), rtol=0, atol=1e-12)
    assert bn.momentum == 0.1  # restored
    assert calibrated.inserted["p"].out_norm.num_batches_tracked.item() == 2
    for key, value in frozen.items():
        assert torch.equal(net.frozen.norm.state_dict()[key], value)


def test_recalibrate_needs_a_calibration_loader():
    with pytest.raises(ValueError, match="calibration loader"):
        evaluate_cells(_net(), [CHAIN], _batches(), batchnorm="recalibrate")


def test_recalibrated_top1_re_estimates_a_copy_and_leaves_the_model_alone():
    from types import SimpleNamespace

    from torch.utils.data import TensorDataset

    from attnas.benchmark.search import recalibrated_top1

    net = _net(dirichlet=True)
    train, val = _batches(n=2, seed=3), _batches(n=2, seed=4)
    data = {
        name: TensorDataset(torch.cat([x for x, _ in b]), torch.cat([y for _, y in b]))
        for name, b in (("train", train), ("val", val))
    }
    before = copy.deepcopy(net.state_dict())
    top1 = recalibrated_top1(net, SimpleNamespace(data=data), batch_size=6, batches=2)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is not changed
    manual = copy.deepcopy(net)
    recalibrate_batchnorm(manual, train, 2)
    assert top1 == evaluate(manual, val).top1
    assert evaluate(manual, val).loss != pytest.approx(evaluate(net, val).loss)  # it mattered
