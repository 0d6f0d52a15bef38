"""The proxy protocol: cached features are the frozen prefix's output, the readout is local,
the branch opening, the protocol's plain-data round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from attnas.backbones import build_backbone
from attnas.benchmark import FeatureCache, ProxyProtocol, build_proxy_model, run_proxy_trial
from attnas.benchmark.protocol import LocalReadout
from attnas.data import build_dataset
from attnas.space import CellSpec
from attnas.supergraph.search import DifferentiableSearchConfig
from attnas.train import TrainConfig

TINY = ProxyProtocol(
    dataset_kwargs={"num_frames": 4, "size": 32, "min_distance": 12.0, "show_frames": 1},
    train_clips=32,
    val_clips=16,
    readout_width=8,
    train=TrainConfig(
        epochs=2,
        batch_size=16,
        optimizer="adamw",
        lr=3e-3,
        device="cpu",
        progress=False,
        checkpoint_every=0,
    ),
)
CELL = CellSpec.from_dict(
    {
        "ops": [
            {"type": "dot", "dim": "spatiotemporal", "activation": "softmax", "inputs": [0]},
            {"type": "map", "dim": "temporal", "activation": "sigmoid", "inputs": [0, 1]},
        ],
        "outputs": [1, 2],
    }
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """Random (not pre-trained) backbone weights: the tests need a file, not a good one."""
    torch.manual_seed(0)
    model = build_backbone(TINY.backbone, 10, TINY.clip_shape())
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "weights.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def cache(weights) -> FeatureCache:
    return FeatureCache(TINY, weights)


def test_cached_features_are_the_frozen_prefix_output(cache, weights):
    model = build_backbone(TINY.backbone, 10, TINY.clip_shape())
    model.load_state_dict(torch.load(weights, weights_only=True)["state_dict"])
    model.eval()
    clips = build_dataset(
        "distant_match",
        split="val",
        num_clips=TINY.val_clips,
        seed=TINY.data_seed,
        **TINY.dataset_kwargs,
    )
    x = torch.stack([clips[i][0] for i in range(4)])
    with torch.no_grad():
        for name in cache.prefix:
            x = model.stages[name](x)
    assert cache.prefix[-1] == TINY.split
    torch.testing.assert_close(cache.data["val"].tensors[0][:4], x, rtol=0, atol=1e-6)
    assert torch.equal(cache.data["val"].tensors[1], clips.labels)


def test_stored_features_are_reused_only_for_the_same_protocol_and_weights(
    cache, weights, tmp_path
):
    first = FeatureCache(TINY, weights, store=tmp_path)
    (stored,) = tmp_path.glob("features_*.pt")
    again = FeatureCache(TINY, weights, store=tmp_path)  # loaded from the file
    for split in ("train", "val"):
        for a, b, c in zip(
            cache.data[split].tensors, first.data[split].tensors, again.data[split].tensors
        ):
            assert torch.equal(a, b) and torch.equal(b, c) and a.dtype == c.dtype
    assert again.num_classes == cache.num_classes
    # another protocol (other clips) gets its own file, never the stored one
    other = dataclasses.replace(TINY, data_seed=TINY.data_seed + 1)
    FeatureCache(other, weights, store=tmp_path)
    assert len(list(tmp_path.glob("features_*.pt"))) == 2 and stored.exists()


def test_proxy_model_trains_only_what_follows_the_split(cache):
    model = build_proxy_model(TINY, cache, CELL, seed=0)
    assert isinstance(model.head, LocalReadout)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters()}
    assert trainable == {"inserted.Conv3d_2c_3x3", "head.conv", "head.bn", "head.fc"}
    feats = cache.data["train"].tensors[0][:2]
    assert model(feats).shape == (2, 2)


def test_branch_opens_at_the_configured_weight(cache):
    for cell, attr in ((CELL, "out_norm"), ("nonlocal", "norm")):
        model = build_proxy_model(TINY, cache, cell, seed=0)
        norm = getattr(model.inserted[TINY.split], attr)
        assert torch.all(norm.weight == 1.0)
        closed = build_proxy_model(TINY.replace(branch_init=0.0), cache, cell, seed=0)
        assert torch.all(getattr(closed.inserted[TINY.split], attr).weight == 0.0)


def test_local_readout_cannot_relate_two_places():
    """Pooled hidden features of two disjoint events add up: the head is linear in their sum."""
    torch.manual_seed(0)
    head = LocalReadout(6, 8, 2).eval()
    background = torch.zeros(1, 6, 2, 4, 4)
    a, b = background.clone(), background.clone()
    a[..., 0, 0] = torch.randn(6, 2)
    b[..., 3, 3] = torch.randn(6, 2)
    both = a + b

    def pooled(x):
        return torch.relu(head.bn(head.conv(x))).mean(dim=(2, 3, 4))

    torch.testing.assert_close(pooled(both), pooled(a) + pooled(b) - pooled(background))


def test_trial_is_deterministic_and_records_every_epoch(cache):
    first = run_proxy_trial(TINY, cache, CELL, seed=3)
    second = run_proxy_trial(TINY, cache, CELL, seed=3)
    assert first.ok and len(first.history) == 2
    assert [h["val_top1"] for h in first.history] == [h["val_top1"] for h in second.history]
    assert first.num_parameters > 0 and first.flops > 0


def test_protocol_round_trip_and_errors():
    assert ProxyProtocol.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(KeyError, match="unknown key"):
        ProxyProtocol.from_dict({**TINY.to_dict(), "epochz": 3})
    with pytest.raises(ValueError, match="readout"):
        ProxyProtocol(readout="mlp")
    assert TINY.pretrain_key() != TINY.replace(pretrain_clips=5).pretrain_key()


def test_proxy_search_trains_supergraphs_and_derives_a_cell(cache):
    from attnas.benchmark.search import run_proxy_search
    from attnas.space import load_space
    from attnas.supergraph.search import DifferentiableSearchConfig

    space = load_space("attention_nas")
    config = DifferentiableSearchConfig(arch_lr=0.05, alpha=2, beta=1)
    result = run_proxy_search(TINY, cache, space, config, seed=0)
    assert len(result.history) == TINY.train.epochs and result.arch_steps == 4  # 2 x 2 steps
    weights = next(iter(result.weights.values()))
    assert not torch.allclose(weights.sink_probs(), torch.full((12,), 1 / 12))  # they moved
    assert len(result.cell.outputs) == 2 and len(result.telemetry) == TINY.train.epochs
    assert result.cells == {TINY.split: result.cell}


SELECTED = DifferentiableSearchConfig(arch_lr=0.05, alpha=2, beta=1, dirichlet=True)


def _selected_search(cache, selection: str, **changes):
    from attnas.benchmark.search import run_proxy_search
    from attnas.space import load_space

    config = dataclasses.replace(SELECTED, selection=selection, **changes)
    return run_proxy_search(TINY, cache, load_space("attention_nas"), config, seed=0)


@pytest.fixture(scope="module")
def plain_search(cache):
    """The search the selection tests derive from, its cell ranked by the weights."""
    return _selected_search(cache, "weights")


def test_perturbation_selection_ranks_the_trained_networks_choices(cache, plain_search):
    from attnas.benchmark.search import proxy_score
    from attnas.supergraph import derive_cell
    from attnas.supergraph.select import derive_by_perturbation

    plain, picked = plain_search, _selected_search(cache, "perturbation")
    (w, other) = (next(iter(r.weights.values())) for r in (picked, plain))
    assert torch.equal(w.w_sink, other.w_sink)  # the selection comes after the same search
    assert plain.cell == derive_cell(w, 2, 1)
    derivation = picked.cell.meta["derivation"]
    assert derivation["method"] == "perturbation" and len(derivation["sink_scores"]) == 12
    # the scores are the rises of the network's own recalibrated validation loss
    score = proxy_score(picked.model, TINY, cache)
    assert derivation["selection"]["loss_as_trained"] == pytest.approx(score(), abs=1e-6)
    assert derive_by_perturbation(w, score, 2, 1) == picked.cell
    chosen = [n for n, e in derivation["chosen"].items() if "sink_score" in e]
    ranked = sorted(derivation["sink_scores"], key=lambda n: -derivation["sink_scores"][n])
    assert sorted(chosen) == sorted(ranked[:2])


def test_pruning_selection_readapts_between_decisions_and_restores_the_network(cache, plain_search):
    plain, pruned = plain_search, _selected_search(cache, "pruning")
    # the same search, and the network as trained afterwards: the re-adaptation is undone
    after, trained = pruned.model.state_dict(), plain.model.state_dict()
    assert after.keys() == trained.keys()
    assert all(torch.equal(after[k], trained[k]) for k in trained)
    derivation = pruned.cell.meta["derivation"]
    record = derivation["selection"]
    assert derivation["method"] == "pruning" and len(record["pruned"]) == 12 - 2
    level2 = sum(
        name.startswith("L2") for name, e in derivation["chosen"].items() if "sink_score" in e
    )
    assert record["readaptations"] == 10 + level2
    kept = [n for n, e in derivation["chosen"].items() if "sink_score" in e]
    assert not set(kept) & {p["node"] for p in record["pruned"]}
    assert len(pruned.cell.outputs) == 2


def test_oneshot_selection_derives_the_best_scoring_candidate_of_the_same_search(
    cache, plain_search
):
    from attnas.benchmark.search import _unshuffled
    from attnas.space import load_space
    from attnas.supergraph.oneshot import evaluate_cells
    from attnas.supergraph.select import oneshot_candidates

    picked = _selected_search(cache, "oneshot", oneshot_ops=1)
    after, trained = picked.model.state_dict(), plain_search.model.state_dict()
    assert all(torch.equal(after[k], trained[k]) for k in trained)  # the same search, untouched
    candidates = oneshot_candidates(load_space("attention_nas"), 1)
    assert len(candidates) == 24  # 6 (type, dim) x 4 activations
    calibration, val = _unshuffled(cache, TINY.train.batch_size)
    scores = evaluate_cells(
        picked.model, candidates, val, batchnorm="recalibrate", calibration=calibration
    )
    best = max(scores, key=lambda s: (s.top1, -s.loss))
    derivation = picked.cell.meta["derivation"]
    assert picked.cell == best.cell and derivation["method"] == "oneshot"
    assert derivation["candidates"] == 24
    assert derivation["ranked"][0]["top1"] == pytest.approx(best.top1, abs=1e-6)
    assert picked.cells == {TINY.split: picked.cell}


def test_oneshot_selection_retrains_its_best_candidates_with_fresh_seeds(cache, tmp_path):
    from attnas.benchmark.search import proxy_oneshot, retrain_under_protocol
    from attnas.space import load_space
    from attnas.supergraph.select import oneshot_seeds

    picked = _selected_search(cache, "oneshot", oneshot_ops=1)
    config = dataclasses.replace(
        SELECTED, selection="oneshot", oneshot_ops=1, oneshot_retrain=3, oneshot_retrain_seeds=2
    )
    space = load_space("attention_nas")
    cell = proxy_oneshot(picked.model, TINY, cache, space, config, 0, tmp_path)
    derivation = cell.meta["derivation"]
    ranked, retrained = derivation["ranked"], derivation["retrained"]
    assert [r["hash"] for r in retrained] == [r["hash"] for r in ranked[:3]]
    seeds = oneshot_seeds(0, 2)
    assert len(set(seeds)) == 2 and not set(seeds) & set(range(1000))
    for r in retrained:  # each candidate's trials, kept under the store, with those seeds
        assert sorted(p.name for p in (tmp_path / r["hash"]).iterdir()) == sorted(
            f"seed{s}.json" for s in seeds
        )
        assert r["top1"] == pytest.approx(sum(r["trials"]) / 2, abs=1e-6)
    best = max(retrained, key=lambda r: r["top1"])  # the first of ties
    assert cell.hash() == best["hash"]
    # the retrained figures are the protocol's own trials of those cells and seeds
    again = retrain_under_protocol(TINY, cache, cell, seeds)
    assert [t.top1 for t in again] == pytest.approx(best["trials"])


def test_position_specific_proxy_search_derives_and_retrains_a_cell_per_position(weights, tmp_path):
    from attnas.benchmark.protocol import count_proxy_cost
    from attnas.benchmark.search import retrain_under_protocol, run_proxy_search
    from attnas.space import load_space
    from attnas.supergraph import derive_cell
    from attnas.supergraph.search import DifferentiableSearchConfig, derived_cell_factory

    two = TINY.replace(positions=(TINY.split, "Mixed_3b"))
    cache = FeatureCache(two, weights)
    space = load_space("attention_nas")
    config = DifferentiableSearchConfig(position_specific=True, arch_lr=0.05, alpha=2, beta=1)
    result = run_proxy_search(two, cache, space, config, seed=0)
    assert list(result.weights) == list(result.cells) == list(two.positions)
    first, second = (result.weights[p].sink_probs() for p in two.positions)
    assert not torch.allclose(first, second)  # each position learned its own weights
    assert all(c == derive_cell(result.weights[p], 2, 1) for p, c in result.cells.items())
    assert result.cell == result.cells[two.split]
    assert list(result.model.inserted) == list(two.positions)  # a supergraph at each
    # the derived cells train together, each at its own position
    other = CellSpec.from_dict({**CELL.to_dict(), "outputs": [2]})
    cells = derived_cell_factory({two.split: CELL, "Mixed_3b": other}, two.op_channel_ratio)
    model = build_proxy_model(two, cache, cells, seed=0)
    assert [model.inserted[p].spec for p in two.positions] == [CELL, other]
    same = derived_cell_factory({p: CELL for p in two.positions}, two.op_channel_ratio)
    assert count_proxy_cost(two, same) == count_proxy_cost(two, CELL)
    assert count_proxy_cost(two, cells)[0] < count_proxy_cost(two, CELL)[0]  # one output less
    (trial,) = retrain_under_protocol(two, cache, result.cell_set(two), [1], store=tmp_path)
    again = run_proxy_trial(two, cache, derived_cell_factory(result.cells, 0.25), seed=1)
    losses = [[h["val_loss"] for h in t.history] for t in (trial, again)]
    assert trial.ok and losses[0] == losses[1] and (tmp_path / "seed1.json").is_file()


def test_bilevel_proxy_search_trains_on_half_and_steps_on_the_other(cache):
    from attnas.benchmark.search import run_proxy_search
    from attnas.space import load_space
    from attnas.supergraph.search import DifferentiableSearchConfig

    space = load_space("attention_nas")
    config = DifferentiableSearchConfig(mode="bilevel", arch_lr=0.05, alpha=2, beta=1)
    result = run_proxy_search(TINY, cache, space, config, seed=0)
    # 16 of the 32 training clips train the network: 1 batch of 16 per epoch, so 1 connection
    # weight step per epoch, each on a held-out batch
    assert len(result.history) == TINY.train.epochs and result.arch_steps == TINY.train.epochs
    weights = next(iter(result.weights.values()))
    assert not torch.allclose(weights.sink_probs(), torch.full((12,), 1 / 12))
    joint = run_proxy_search(TINY, cache, space, dataclasses.replace(config, mode="joint"), 0)
    assert not torch.allclose(weights.sink_probs(), next(iter(joint.weights.values())).sink_probs())


def test_recount_cost_corrects_a_wrong_count_and_nothing_else(tmp_path):
    from attnas.benchmark.build import BuildConfig, recount_cost
    from attnas.benchmark.protocol import count_proxy_cost
    from attnas.dispatch import TrialStore

    params, flops = count_proxy_cost(TINY, CELL)
    other = CellSpec.from_dict({**CELL.to_dict(), "outputs": [2]})
    with TrialStore.open(tmp_path) as store:
        for cell, cost in ((CELL, (params, flops - 8)), (other, count_proxy_cost(TINY, other))):
            trial = store.add(cell)
            store.mark_running(trial)
            seeds = [{"seed": s, "val_top1": 0.5 + s, "params": cost[0], "flops": cost[1]}
                     for s in (0, 1)]  # fmt: skip
            store.complete(trial, {"status": "completed", "top1": 1.0, "seeds": seeds})
    config = BuildConfig(protocol=TINY, work_dir=str(tmp_path))
    assert recount_cost(config) == [
        {"cell_hash": CELL.hash(), "recorded": [params, flops - 8], "counted": [params, flops]}
    ]
    with TrialStore.open(tmp_path) as store:
        fixed = store.trials("completed")[0].metrics
    assert [(r["seed"], r["val_top1"], r["flops"]) for r in fixed["seeds"]] == [
        (0, 0.5, flops), (1, 1.5, flops)
    ]  # fmt: skip
    assert fixed["top1"] == 1.0 and recount_cost(config) == []


def test_the_manifest_keeps_every_commit_the_table_was_exported_at(tmp_path, monkeypatch):
    from attnas.benchmark import build

    config = build.BuildConfig(protocol=TINY, work_dir=str(tmp_path / "work"),
                               out_root=str(tmp_path / "out"), max_cells=2)  # fmt: skip
    manifest = tmp_path / "out" / config.name / "manifest.json"
    for head in ("aaa", "bbb", "bbb", None):
        monkeypatch.setattr(build, "_git_commit", lambda head=head: head)
        build.export_table(config)
    data = json.loads(manifest.read_text())
    assert data["code_commits"] == ["aaa", "bbb"] and data["code_commit"] is None
    manifest.write_text(json.dumps({"code_commit": "old"}))  # a manifest from before the list
    monkeypatch.setattr(build, "_git_commit", lambda: "ccc")
    build.export_table(config)
    assert json.loads(manifest.read_text())["code_commits"] == ["old", "ccc"]
