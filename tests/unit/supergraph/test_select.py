"""Perturbation-based selection: ranked choices, progressive fixing, restored weights, and a
real supergraph's loss as the score."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnas.space import load_space
from attnas.supergraph import ArchitectureWeights, SuperGraph, derive_cell
from attnas.supergraph.oneshot import evaluate, evaluate_recalibrated
from attnas.supergraph.search import DifferentiableSearchConfig
from attnas.supergraph.select import derive_by_perturbation, perturbation_ranking, supergraph_loss

SPACE = load_space("attention_nas")
NODES = list(SPACE.supergraph.nodes)
ACTS = [SPACE.activations_for(t) for t, _ in NODES]
N = len(NODES)


def weights(dirichlet: bool = False, seed: int = 0) -> ArchitectureWeights:
    w = ArchitectureWeights(2, NODES, ACTS, dirichlet=dirichlet)
    torch.manual_seed(seed)
    with torch.no_grad():  # learned-looking logits, so nothing ties
        for p in w.parameters():
            p.normal_(0, 0.1)
    return w


def planted_score(w: ArchitectureWeights, calls: list[dict[str, torch.Tensor]]):
    """A loss that needs sink nodes 2 (level 1, map/spatiotemporal) and 9 (level 2,
    dot/spatial), the latter's input from level-1 node 5 (dot/spatiotemporal), and activation 2
    (sigmoid) on every node; each call's mixing weights are recorded."""

    def score() -> float:
        with torch.no_grad():
            sink, level, act = w.sink_probs(), w.level_probs(), w.act_probs()
        calls.append({"sink": sink, "level": level, "act": act})
        need = sink[2] + sink[9] + level[0, 3, 5] + act[..., 2].mean()
        return float(4 - need)

    return score


@pytest.mark.parametrize("dirichlet", [False, True])
def test_the_ranking_finds_the_planted_choices_and_restores_the_weights(dirichlet):
    w = weights(dirichlet)
    before = {k: getattr(w, k).detach().clone() for k in ("w_level", "w_act", "w_sink")}
    calls: list[dict[str, torch.Tensor]] = []
    cell = derive_by_perturbation(w, planted_score(w, calls), alpha=2, beta=1)
    for k, value in before.items():
        assert torch.equal(getattr(w, k), value)  # the learned weights are as they were
    chosen = cell.meta["derivation"]["chosen"]
    assert set(chosen) == {"L1.map/spatiotemporal", "L2.dot/spatial", "L1.dot/spatiotemporal"}
    assert [name for name in chosen if "sink_score" in chosen[name]] == [
        "L1.map/spatiotemporal",
        "L2.dot/spatial",
    ]
    assert all(op.op.activation == "sigmoid" for op in cell.ops)
    level2 = chosen["L2.dot/spatial"]
    assert max(level2["input_scores"], key=level2["input_scores"].get) == "L1.dot/spatiotemporal"
    assert len(cell.ops) == 3 and cell.outputs == (1, 3) and cell.ops[2].inputs == (2,)
    assert cell.meta["derivation"]["method"] == "perturbation"
    # one evaluation as trained, 12 without a sink node, 1 with the sink fixed, 6 without an
    # input of the level-2 node and 1 after, 4 without each activation of the 3 nodes and 1 after
    record = cell.meta["derivation"]["selection"]
    assert record["evaluations"] == len(calls) == 1 + 12 + 1 + 6 + 1 + 3 * (4 + 1)
    # progressive: the inputs are measured with the sink fixed to the two kept nodes
    sink = calls[14]["sink"]
    assert float(sink[2] + sink[9]) == pytest.approx(1.0)
    assert float(sink.sum()) == pytest.approx(1.0)
    # ... and the activations with the input fixed too
    assert float(calls[21]["level"][0, 3, 5]) == pytest.approx(1.0)
    assert record["loss_cell"] < record["loss_as_trained"]


def test_the_weights_rule_and_the_ranked_rule_share_the_derivation():
    w = weights()
    ranking = {
        "sink": w.sink_probs().detach(),
        "level": w.level_probs().detach(),
        "act": w.act_probs().detach(),
    }
    ranked = derive_cell(w, 3, 1, ranking, method="probs")
    plain = derive_cell(w, 3, 1)
    assert ranked == plain and plain.meta["derivation"]["method"] == "weights"
    flipped = derive_cell(w, 3, 1, {"sink": -ranking["sink"]})
    lowest = min(range(2 * N), key=lambda i: float(ranking["sink"][i]))
    name = w.node_name(lowest // N + 1, lowest % N)
    assert "sink_score" in flipped.meta["derivation"]["chosen"][name]
    assert set(flipped.meta["derivation"]["sink_scores"]) == {
        w.node_name(i // N + 1, i % N) for i in range(2 * N)
    }
    with pytest.raises(ValueError, match=r"ranking\['sink'\] has shape \(3,\)"):
        derive_cell(w, 3, 1, {"sink": torch.zeros(3)})
    with pytest.raises(ValueError, match="ranking keys"):
        derive_cell(w, 3, 1, {"edges": torch.zeros(3)})


def test_a_choice_left_alone_is_not_measured():
    w = ArchitectureWeights(1, [("dot", "spatial"), ("map", "temporal")], [("softmax",), ACTS[0]])
    calls: list[dict[str, torch.Tensor]] = []

    def score() -> float:
        calls.append({})
        with torch.no_grad():
            return float(1 - w.sink_probs()[0])

    ranking, record = perturbation_ranking(w, score, alpha=1, beta=1)
    assert "level" not in ranking  # one level: no inputs to choose
    assert float(ranking["sink"][0]) > float(ranking["sink"][1])
    # as trained, 2 sink nodes, fixed; the kept node has one activation: nothing to measure
    assert record["evaluations"] == len(calls) == 1 + 2 + 1
    assert float(ranking["act"][0, 0, 0]) == 0 and torch.isneginf(ranking["act"][0, 1]).all()
    cell = derive_by_perturbation(w, score, alpha=1, beta=1)
    assert [str(n.op) for n in cell.ops] == ["dot/spatial/softmax"]
    with pytest.raises(ValueError, match=r"alpha must be in 1\.\.2"):
        perturbation_ranking(w, score, alpha=3, beta=1)


class _Net(nn.Module):
    """A supergraph between a conv stem and a pooled linear readout with a BatchNorm."""

    def __init__(self, w: ArchitectureWeights):
        super().__init__()
        self.stem = nn.Conv3d(3, 8, 1)
        self.inserted = nn.ModuleDict({"sg": SuperGraph.from_space(SPACE, 8, (8, 2, 4, 4), w)})
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            self.inserted["sg"].out_norm.weight.fill_(1.0)  # the branch open

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.inserted["sg"](self.stem(x)).mean(dim=(2, 3, 4))))


def test_the_supergraph_loss_is_the_recalibrated_loss_and_leaves_the_model_alone():
    torch.manual_seed(0)
    w = weights(dirichlet=True)
    net = _Net(w).train()
    batches = [(torch.randn(6, 3, 2, 4, 4), torch.randint(0, 3, (6,))) for _ in range(3)]
    with torch.no_grad():
        net(batches[0][0])  # running statistics of their own
    state = {k: v.clone() for k, v in net.state_dict().items()}
    score = supergraph_loss(net, batches[:2], batches[2:], calibration_batches=1)
    first = score()
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert first == score() == evaluate_recalibrated(net, batches[:2], batches[2:], 1).loss
    assert first != evaluate(net, batches[:2]).loss  # the statistics were re-estimated
    cell = derive_by_perturbation(w, score, alpha=3, beta=1)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    # a recorded rise is the loss without that choice minus the loss as trained
    record = cell.meta["derivation"]["selection"]
    assert record["loss_as_trained"] == pytest.approx(first, abs=1e-6)
    with torch.no_grad():
        saved = w.w_sink[4].clone()
        w.w_sink[4] = float("-inf")
        without = score()
        w.w_sink[4] = saved
    rise = cell.meta["derivation"]["sink_scores"][w.node_name(1, 4)]
    assert rise == pytest.approx(without - first, abs=1e-6)


def test_the_config_names_a_bad_selection():
    assert DifferentiableSearchConfig().selection == "weights"
    with pytest.raises(ValueError, match="selection must be one of"):
        DifferentiableSearchConfig(selection="magnitude")


def test_pruning_drops_the_least_needed_node_first_and_measures_after_each_readaptation():
    """A planted network that, re-adapted, comes to need level-2 node 9 more than node 2: the
    one-shot ranking keeps node 2 (needed more as trained), the pruning keeps node 9."""
    w = weights()
    state = {"tunes": 0}
    sinks_at_tune: list[torch.Tensor] = []

    def score() -> float:
        with torch.no_grad():
            sink = w.sink_probs()
        return float(4 - sink[2] - (0.5 + state["tunes"]) * sink[9])

    def tune() -> None:
        sinks_at_tune.append(w.sink_probs().detach().clone())
        state["tunes"] += 1

    chosen = derive_by_perturbation(w, score, alpha=1, beta=1).meta["derivation"]["chosen"]
    assert [name for name in chosen if "sink_score" in chosen[name]] == ["L1.map/spatiotemporal"]
    assert state["tunes"] == 0
    ranking, record = perturbation_ranking(w, score, alpha=1, beta=1, tune=tune)
    kept = [i for i in range(2 * N) if torch.isfinite(ranking["sink"][i])]
    assert kept == [9]
    pruned = [p["node"] for p in record["pruned"]]
    assert len(pruned) == 2 * N - 1 and "L1.map/spatiotemporal" in pruned
    # each removal is re-adapted before the next round: the k-th re-adaptation sees k nodes off
    for k, sink in enumerate(sinks_at_tune[: 2 * N - 1], start=1):
        assert int((sink == 0).sum()) == k
    # 1 as trained; rounds over 12, 11, ..., 2 alive nodes and one after each of the 11
    # removals; 1 with the sink fixed; 6 inputs of node 9 and 1 after its re-adaptation;
    # 4 activations and 1 after for each of the cell's 2 nodes
    assert record["evaluations"] == 1 + sum(range(2, 13)) + 11 + 1 + 6 + 1 + 2 * (4 + 1)
    assert record["readaptations"] == state["tunes"] == 11 + 1
    cell = derive_cell(w, 1, 1, ranking, method="pruning")
    assert cell.meta["derivation"]["method"] == "pruning"
    assert "sink_score" in cell.meta["derivation"]["chosen"]["L2.dot/spatial"]


def test_the_readaptation_trains_the_network_alone_and_derive_by_position_restores_it():
    from torch.utils.data import TensorDataset

    from attnas.supergraph.select import Readaptation, derive_by_position
    from attnas.train.spec import TrainConfig

    torch.manual_seed(0)
    w = weights(dirichlet=True)
    net = _Net(w).train()
    arch = list(w.parameters())
    data = TensorDataset(torch.randn(12, 3, 2, 4, 4), torch.randint(0, 3, (12,)))
    batches = [(x, y) for x, y in torch.utils.data.DataLoader(data, batch_size=6)]
    config = TrainConfig(epochs=5, batch_size=6, lr=0.05, warmup_epochs=1.0)
    tune = Readaptation(net, data, config, arch, seed=3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    logits = [p.detach().clone() for p in arch]
    with tune.restored():
        loss = tune()
        assert math.isfinite(loss) and tune.calls == 1
        assert not torch.equal(net.stem.weight, state["stem.weight"])  # the network moved
        assert all(torch.equal(p, q) for p, q in zip(arch, logits))  # the weights did not
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    score = supergraph_loss(net, batches[:1], batches[1:], calibration_batches=1)
    cells = derive_by_position({"all": w}, ["a", "b"], 3, 1, score, tune)
    assert cells["a"] is cells["b"] and cells["a"].meta["derivation"]["method"] == "pruning"
    record = cells["a"].meta["derivation"]["selection"]
    assert record["readaptations"] == tune.calls - 1 >= 2 * N - 3
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(p, q) for p, q in zip(arch, logits))
    with pytest.raises(ValueError, match="needs a score"):
        derive_by_position({"all": w}, ["a"], 3, 1, None, tune)


def test_the_oneshot_candidates_are_the_tables_cells():
    from attnas.benchmark import load
    from attnas.supergraph.select import oneshot_candidates

    candidates = oneshot_candidates(SPACE, 2)
    hashes = [c.hash() for c in candidates]
    assert len(hashes) == len(set(hashes)) == 1452
    table = load("distant_match_k2")  # the benchmark's space is attention_nas at 2 ops
    assert set(hashes) == {c.hash() for c in table.cells()}
    with pytest.raises(ValueError, match=r"oneshot_ops=3: .* 290,304 cells"):
        oneshot_candidates(SPACE, 3)
    with pytest.raises(ValueError, match="oneshot_ops must be >= 1"):
        oneshot_candidates(SPACE, 0)


def test_oneshot_selection_derives_the_best_candidate_and_leaves_the_model_alone():
    from attnas.supergraph.oneshot import evaluate_cells
    from attnas.supergraph.select import derive_by_oneshot, oneshot_candidates

    torch.manual_seed(0)
    w = weights(dirichlet=True)
    net = _Net(w).train()
    batches = [(torch.randn(6, 3, 2, 4, 4), torch.randint(0, 3, (6,))) for _ in range(3)]
    with torch.no_grad():
        net(batches[0][0])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    candidates = oneshot_candidates(SPACE, 2)[::37]  # 40 cells: chains, parallel, shared nodes
    cell = derive_by_oneshot(net, candidates, batches[:2], batches[2:], calibration_batches=1)
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    scores = evaluate_cells(
        net, candidates, batches[:2], batchnorm="recalibrate", calibration=batches[2:],
        calibration_batches=1,
    )  # fmt: skip
    assert cell == max(scores, key=lambda s: s.top1).cell  # (a unique best here)
    derivation = cell.meta["derivation"]
    assert derivation["method"] == "oneshot" and derivation["candidates"] == 40
    ranked = [(r["top1"], -r["loss"]) for r in derivation["ranked"]]
    assert len(ranked) == 10 and ranked == sorted(ranked, reverse=True)
    assert derivation["ranked"][0]["hash"] == cell.hash()
    assert set(derivation["nodes"]) == set(range(1, len(cell.ops) + 1))
    assert derive_by_oneshot(net, candidates[::-1], batches[:2], batches[2:], 1) == cell


def test_oneshot_ties_go_to_the_lower_loss_then_the_earlier_candidate(monkeypatch):
    from attnas.supergraph import oneshot
    from attnas.supergraph.select import derive_by_oneshot, oneshot_candidates

    candidates = oneshot_candidates(SPACE, 2)[:6]
    planted = [(0.5, 0.2), (0.7, 0.9), (0.7, 0.8), (0.7, 0.8), (math.nan, 0.1), (0.6, math.nan)]

    def evaluate_cells(model, cells, *args, **kwargs):
        return [oneshot.OneShotScore(c, t, v, 12, 0, True) for c, (t, v) in zip(cells, planted)]

    monkeypatch.setattr(oneshot, "evaluate_cells", evaluate_cells)
    cell = derive_by_oneshot(_Net(weights()), candidates, [], [])
    assert cell == candidates[2]
    ranked = [r["hash"] for r in cell.meta["derivation"]["ranked"]]
    assert ranked == [candidates[i].hash() for i in (2, 3, 1, 5, 0, 4)]


def test_oneshot_selection_needs_a_position_agnostic_search():
    from attnas.supergraph.select import derive_by_oneshot

    with pytest.raises(ValueError, match="needs position_specific: false"):
        DifferentiableSearchConfig(selection="oneshot", position_specific=True)
    with pytest.raises(ValueError, match="oneshot_ops must be >= 1"):
        DifferentiableSearchConfig(selection="oneshot", oneshot_ops=0)
    with pytest.raises(ValueError, match="oneshot_retrain must be >= 0"):
        DifferentiableSearchConfig(selection="oneshot", oneshot_retrain_seeds=0)
    net = _Net(weights())
    net.inserted["other"] = SuperGraph.from_space(SPACE, 8, (8, 2, 4, 4), weights(seed=1))
    with pytest.raises(ValueError, match="position-agnostic search"):
        derive_by_oneshot(net, SPACE.enumerate(), [], [])


def test_oneshot_retraining_derives_the_best_retrained_of_the_best_candidates(monkeypatch):
    from attnas.supergraph import oneshot
    from attnas.supergraph.select import derive_by_oneshot, oneshot_candidates

    candidates = oneshot_candidates(SPACE, 2)[:6]
    top1 = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # one-shot order: the candidates' order

    def evaluate_cells(model, cells, *args, **kwargs):
        return [oneshot.OneShotScore(c, t, 1.0, 12, 0, True) for c, t in zip(cells, top1)]

    monkeypatch.setattr(oneshot, "evaluate_cells", evaluate_cells)
    # trained from scratch: candidate 2 is best, candidate 0 failed a trial, 3 ties with 2
    trials = {0: [0.99, None], 1: [0.6, 0.7], 2: [0.8, 0.9], 3: [0.9, 0.8], 4: [1.0, 1.0]}
    asked = []

    def retrain(cell):
        i = candidates.index(cell)
        asked.append(i)
        return trials[i]

    net = _Net(weights())
    cell = derive_by_oneshot(net, candidates, [], [], retrain=retrain, retrain_top=4)
    assert asked == [0, 1, 2, 3]  # the 4 best by one-shot top-1, not candidate 4
    assert cell == candidates[2]  # the best mean, the first of the tie with 3
    retrained = cell.meta["derivation"]["retrained"]
    assert [r["hash"] for r in retrained] == [candidates[i].hash() for i in range(4)]
    assert math.isnan(retrained[0]["top1"]) and retrained[2]["top1"] == pytest.approx(0.85)
    # no retraining asked: the one-shot best, nothing trained
    assert derive_by_oneshot(net, candidates, [], [], retrain=retrain) == candidates[0]
    assert len(asked) == 4
    with pytest.raises(RuntimeError, match="every retrained candidate failed"):
        derive_by_oneshot(net, candidates, [], [], retrain=lambda c: [None], retrain_top=2)
