"""``derive_cell`` on hand-set connection weights (AttentionNAS Sec. 4.2, derivation).

Every expected cell below is worked out by hand from the paper's rule (top-α sink nodes, then
recursively the top-β predecessors of each kept node at level i >= 2, argmax activation) and
derive.py's documented tie-breaks (equal sink -> lower level, then lower node index; equal level
weight -> lower predecessor index; equal activation -> the one listed first). Logits are set to
``log p`` so that the softmax probabilities are the hand-chosen ``p``.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnas.space import CellSpec, OpNode, OpSpec
from attnas.supergraph import ArchitectureWeights, derive_cell

ACTS4 = ("none", "relu", "sigmoid", "softmax")


def _weights(levels, nodes, acts=None, *, sink=None, level=None, act=None, temperature=1.0):
    """ArchitectureWeights with logits ``log p`` for the given probabilities (None: zeros)."""
    acts = acts or [ACTS4] * len(nodes)
    w = ArchitectureWeights(levels, nodes, acts, temperature=temperature)
    with torch.no_grad():
        if sink is not None:
            w.w_sink.copy_(torch.tensor(sink, dtype=torch.float64).log())
        if level is not None:
            w.w_level.copy_(torch.tensor(level, dtype=torch.float64).log())
        for (lv, j), probs in (act or {}).items():
            w.w_act[lv - 1, j, : len(probs)] = torch.tensor(probs, dtype=torch.float64).log()
    return w


def _cell(ops, outputs):
    return CellSpec(tuple(OpNode(OpSpec(*op), inputs) for op, inputs in ops), outputs)


NODES3 = [("map", "spatial"), ("dot", "temporal"), ("map", "temporal")]


def test_two_levels_alpha2_beta1():
    # sink (level-major): L1 = [.05, .30, .05], L2 = [.10, .40, .10]
    # top-2: L2.dot/temporal (.40), L1.dot/temporal (.30)
    # L2 node 1 reads level 1 with [.2, .1, .7] -> its top-1 predecessor is L1 node 2 (map/temporal)
    # S ordered by (level, index): L1.1 -> op 1, L1.2 -> op 2, L2.1 -> op 3
    level = [[[1 / 3] * 3, [0.2, 0.1, 0.7], [1 / 3] * 3]]
    act = {(1, 1): [0.1, 0.6, 0.2, 0.1], (1, 2): [0.1, 0.1, 0.1, 0.7], (2, 1): [0.2, 0.2, 0.5, 0.1]}
    w = _weights(2, NODES3, sink=[0.05, 0.30, 0.05, 0.10, 0.40, 0.10], level=level, act=act)
    cell = derive_cell(w, alpha=2, beta=1)
    expected = _cell(
        [
            (("dot", "temporal", "relu"), (0,)),
            (("map", "temporal", "softmax"), (0,)),
            (("dot", "temporal", "sigmoid"), (2,)),
        ],
        (1, 3),
    )
    assert cell == expected
    assert cell.canonical() == expected.canonical()
    d = cell.meta["derivation"]
    assert (d["alpha"], d["beta"], d["temperature"]) == (2, 1, 1.0)
    assert d["sink_probs"] == pytest.approx(
        {
            "L1.map/spatial": 0.05,
            "L1.dot/temporal": 0.30,
            "L1.map/temporal": 0.05,
            "L2.map/spatial": 0.10,
            "L2.dot/temporal": 0.40,
            "L2.map/temporal": 0.10,
        },
        abs=1e-6,
    )
    chosen = d["chosen"]
    assert set(chosen) == {"L1.dot/temporal", "L1.map/temporal", "L2.dot/temporal"}
    assert chosen["L2.dot/temporal"]["op"] == 3
    assert chosen["L2.dot/temporal"]["sink_prob"] == pytest.approx(0.40, abs=1e-6)
    assert chosen["L1.dot/temporal"]["sink_prob"] == pytest.approx(0.30, abs=1e-6)
    # L1.map/temporal is only a predecessor: no sink_prob recorded
    assert "sink_prob" not in chosen["L1.map/temporal"]
    assert chosen["L2.dot/temporal"]["input_probs"] == pytest.approx(
        {"L1.map/spatial": 0.2, "L1.dot/temporal": 0.1, "L1.map/temporal": 0.7}, abs=1e-6
    )
    assert chosen["L2.dot/temporal"]["activation_probs"] == pytest.approx(
        dict(zip(ACTS4, [0.2, 0.2, 0.5, 0.1])), abs=1e-6
    )
    assert chosen["L1.map/temporal"]["activation_probs"] == pytest.approx(
        dict(zip(ACTS4, [0.1, 0.1, 0.1, 0.7])), abs=1e-6
    )


def test_ties_at_initialisation_follow_documented_order():
    # All logits zero: every sink weight ties -> lower level first, then lower node index;
    # every activation ties -> the first listed ("none"); level ties -> lower predecessor index.
    w = _weights(2, NODES3)
    assert derive_cell(w, 3, 1) == _cell(
        [
            (("map", "spatial", "none"), (0,)),
            (("dot", "temporal", "none"), (0,)),
            (("map", "temporal", "none"), (0,)),
        ],
        (1, 2, 3),
    )
    # alpha = 4 reaches L2 node 0, whose tied predecessors resolve to L1 node 0 (op 1)
    assert derive_cell(w, 4, 1) == _cell(
        [
            (("map", "spatial", "none"), (0,)),
            (("dot", "temporal", "none"), (0,)),
            (("map", "temporal", "none"), (0,)),
            (("map", "spatial", "none"), (1,)),
        ],
        (1, 2, 3, 4),
    )
    # beta = 2 on the same: L2 node 0 keeps L1 nodes 0 and 1
    assert derive_cell(w, 4, 2).ops[3].inputs == (1, 2)


def test_three_levels_alpha1_beta2_with_level_ties():
    nodes = [("map", "spatial"), ("map", "temporal"), ("dot", "spatial"), ("dot", "temporal")]
    sink = [0.05] * 4 + [0.05] * 4 + [0.05, 0.05, 0.40, 0.10]  # top-1: L3 node 2 (dot/spatial)
    uniform = [0.25] * 4
    level = [
        # level 2 over level 1
        [[0.1, 0.2, 0.3, 0.4], uniform, uniform, uniform],
        # level 3 over level 2: node 2 reads [.3, .3, .1, .3]: three-way tie for 2 slots ->
        # predecessors 0 and 1 (lower index wins)
        [uniform, uniform, [0.3, 0.3, 0.1, 0.3], uniform],
    ]
    # activation tie between relu and sigmoid (listed first wins: relu)
    act = {(3, 2): [0.1, 0.4, 0.4, 0.1], (2, 0): [0.1, 0.2, 0.3, 0.4]}
    w = _weights(3, nodes, sink=sink, level=level, act=act)
    cell = derive_cell(w, alpha=1, beta=2)
    # L2.0 keeps L1 nodes 3, 2 (.4, .3); L2.1 (uniform) keeps L1 nodes 0, 1.
    # order: L1.0=1, L1.1=2, L1.2=3, L1.3=4, L2.0=5, L2.1=6, L3.2=7
    expected = _cell(
        [
            (("map", "spatial", "none"), (0,)),
            (("map", "temporal", "none"), (0,)),
            (("dot", "spatial", "none"), (0,)),
            (("dot", "temporal", "none"), (0,)),
            (("map", "spatial", "softmax"), (3, 4)),
            (("map", "temporal", "none"), (1, 2)),
            (("dot", "spatial", "relu"), (5, 6)),
        ],
        (7,),
    )
    assert cell == expected
    chosen = cell.meta["derivation"]["chosen"]
    assert chosen["L3.dot/spatial"]["input_probs"] == pytest.approx(
        {
            "L2.map/spatial": 0.3,
            "L2.map/temporal": 0.3,
            "L2.dot/spatial": 0.1,
            "L2.dot/temporal": 0.3,
        },
        abs=1e-6,
    )
    assert chosen["L3.dot/spatial"]["sink_prob"] == pytest.approx(0.40, abs=1e-6)
    assert [chosen[k]["op"] for k in ("L1.map/spatial", "L2.map/spatial", "L3.dot/spatial")] == [
        1,
        5,
        7,
    ]
    # the same weights with beta = 1: one chain L1.3 -> L2.0 -> L3.2 (L3.2's tie -> L2.0,
    # L2.0's best predecessor is L1 node 3 at .4)
    assert derive_cell(w, 1, 1) == _cell(
        [
            (("dot", "temporal", "none"), (0,)),
            (("map", "spatial", "softmax"), (1,)),
            (("dot", "spatial", "relu"), (2,)),
        ],
        (3,),
    )


def test_alpha3_shared_predecessor_counted_once_and_masked_activations():
    # n = 5 with types having fewer activations (rsa: none only; bat: softmax, sigmoid).
    nodes = [
        ("map", "spatial"),
        ("dot", "spatiotemporal"),
        ("rsa", "spatial"),
        ("bat", "temporal"),
        ("dot", "temporal"),
    ]
    acts = [ACTS4, ACTS4, ("none",), ("softmax", "sigmoid"), ACTS4]
    # sink: L2 node 1 (.25), L1 node 2 (.21), L2 node 3 (.20) win; then L2 node 4 (.10)
    sink = [*[0.04, 0.04, 0.21, 0.04, 0.04], *[0.04, 0.25, 0.04, 0.20, 0.10]]
    uniform = [0.2] * 5
    level = [[uniform, [0.1, 0.1, 0.6, 0.1, 0.1], uniform, [0.1, 0.1, 0.5, 0.2, 0.1], uniform]]
    act = {(1, 3): [0.3, 0.7], (2, 3): [0.5, 0.5], (2, 1): [0.1, 0.1, 0.1, 0.7]}
    w = _weights(2, nodes, acts, sink=sink, level=level, act=act)
    cell = derive_cell(w, 3, 1)
    # both L2 nodes pick L1 node 2 (rsa/spatial), which the sink also chose: one op, 3 nodes.
    expected = _cell(
        [
            (("rsa", "spatial", "none"), (0,)),
            (("dot", "spatiotemporal", "softmax"), (1,)),
            (("bat", "temporal", "softmax"), (1,)),  # tie softmax/sigmoid -> softmax (first)
        ],
        (1, 2, 3),
    )
    assert cell == expected
    chosen = cell.meta["derivation"]["chosen"]
    assert chosen["L1.rsa/spatial"]["activation_probs"] == {"none": 1.0}
    assert chosen["L2.bat/temporal"]["activation_probs"] == pytest.approx(
        {"softmax": 0.5, "sigmoid": 0.5}, abs=1e-6
    )
    # masked activations never win: rsa's padded slots are -inf before the softmax
    assert w.act_probs()[0, 2, 1:].abs().max().item() == 0.0
    # alpha 4 adds L2.dot/temporal (.1), which reads L1 node 0 (uniform tie -> index 0)
    cell4 = derive_cell(w, 4, 1)
    assert [str(o.op) for o in cell4.ops] == [
        str(OpSpec(*x))
        for x in [
            ("map", "spatial", "none"),
            ("rsa", "spatial", "none"),
            ("dot", "spatiotemporal", "softmax"),
            ("bat", "temporal", "softmax"),
            ("dot", "temporal", "none"),
        ]
    ]
    assert [o.inputs for o in cell4.ops] == [(0,), (0,), (2,), (2,), (1,)]
    assert cell4.outputs == (2, 3, 4, 5)


def test_temperature_changes_probabilities_not_ranking():
    w = _weights(2, NODES3, sink=[0.05, 0.30, 0.05, 0.10, 0.40, 0.10], temperature=2.0)
    cell = derive_cell(w, 1, 1)
    d = cell.meta["derivation"]
    assert d["temperature"] == 2.0
    # softmax(log p / 2) = sqrt(p) / sum sqrt(p)
    z = sum(math.sqrt(p) for p in [0.05, 0.30, 0.05, 0.10, 0.40, 0.10])
    assert d["chosen"]["L2.dot/temporal"]["sink_prob"] == pytest.approx(
        math.sqrt(0.4) / z, abs=1e-6
    )


def test_single_level_supergraph():
    w = _weights(1, NODES3, sink=[0.2, 0.5, 0.3])
    assert derive_cell(w, 2, 1) == _cell(
        [(("dot", "temporal", "none"), (0,)), (("map", "temporal", "none"), (0,))], (1, 2)
    )


def test_meta_survives_yaml_round_trip(tmp_path):
    w = _weights(2, NODES3, sink=[0.05, 0.30, 0.05, 0.10, 0.40, 0.10])
    cell = derive_cell(w, 2, 1)
    loaded = CellSpec.load(cell.save(tmp_path / "cell.yaml"))
    assert loaded == cell
    assert loaded.meta["derivation"]["alpha"] == 2
    assert loaded.meta["derivation"]["beta"] == 1
    assert loaded.meta["derivation"]["chosen"]["L2.dot/temporal"]["sink_prob"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("alpha", "beta", "message"),
    [
        (0, 1, "alpha must be in 1..6, got 0"),
        (7, 1, "alpha must be in 1..6, got 7"),
        (1, 0, "beta must be in 1..3, got 0"),
        (1, 4, "beta must be in 1..3, got 4"),
    ],
)
def test_invalid_alpha_beta_raise(alpha, beta, message):
    with pytest.raises(ValueError, match=message):
        derive_cell(_weights(2, NODES3), alpha, beta)
