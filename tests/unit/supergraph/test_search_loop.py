"""``run_differentiable_search`` end to end on the embedded task (i3d_tiny, moving digits 32×32,
T = 8): exported cells per mode, telemetry, joint / bilevel / warm-up updates of the connection
weights, and kill-and-resume (slow).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from attnas.backbones import build_backbone, insert_cells
from attnas.space import CellSpec, load_space
from attnas.supergraph import ArchitectureWeights, derive_cell
from attnas.supergraph import search as search_mod
from attnas.supergraph.search import (
    ArchitectureStep,
    DifferentiableSearchConfig,
    SupergraphFactory,
    run_differentiable_search,
)
from attnas.supergraph.select import oneshot_seeds
from attnas.supergraph.telemetry import collapse_summary
from attnas.train import TrainConfig, Trainer, TrainerHook, TrialSpec, split_dataset

SPACE = load_space("attention_nas")
POSITIONS = ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"]


def _spec(train_clips=64, val_clips=32, **train):
    cfg = dict(epochs=1, batch_size=16, optimizer="adamw", lr=2e-3, progress=False, device="cpu")
    cfg.update(train)
    return TrialSpec(
        backbone="i3d_tiny",
        dataset="moving_digits",
        dataset_kwargs={"num_frames": 8, "size": 32},
        train_kwargs={"num_clips": train_clips},
        val_kwargs={"num_clips": val_clips},
        train=TrainConfig(**cfg),
        tracker="none",
    )


def _telemetry(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]


def _arch_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "search" / "checkpoints" / "last.pt", weights_only=True)
    return {k: v for k, v in state["model"].items() if k.startswith("architecture.")}


def _exported_as_trained(run_dir: Path) -> bool:
    """Whether the exported sink weights are the trained ones (the selection restored them)."""
    exported = ArchitectureWeights.from_dict(
        json.loads((run_dir / "cells" / "cell.weights.json").read_text())
    )
    return torch.equal(exported.w_sink, _arch_state(run_dir)["architecture.all.w_sink"])


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    out = {}
    for name, specific in (("agnostic", False), ("specific", True)):
        run_dir = tmp_path_factory.mktemp(name)
        config = DifferentiableSearchConfig(position_specific=specific)
        out[name] = (run_differentiable_search(SPACE, _spec(), config, run_dir), run_dir)
    return out


def test_position_agnostic_gives_one_shared_cell(searches):
    result, run_dir = searches["agnostic"]
    cells_dir = run_dir / "cells"
    assert sorted(p.name for p in cells_dir.iterdir()) == [
        "cell.png",
        "cell.weights.json",
        "cell.yaml",
    ]
    assert result.cell_files == [cells_dir / "cell.yaml"]
    cell = CellSpec.load(cells_dir / "cell.yaml")
    assert list(result.cells) == POSITIONS
    assert all(c == cell for c in result.cells.values())
    assert cell.meta["derivation"]["alpha"] == SPACE.alpha == 3
    assert cell.meta["derivation"]["beta"] == SPACE.beta == 1
    assert len(cell.outputs) == 3
    assert (cells_dir / "cell.png").stat().st_size > 10_000
    # the JSON weights re-derive the same cell (what attnas-derive does)
    weights = ArchitectureWeights.from_dict(
        json.loads((cells_dir / "cell.weights.json").read_text())
    )
    assert derive_cell(weights, 3, 1).canonical() == cell.canonical()
    # ... and are the checkpoint's connection weights
    state = _arch_state(run_dir)
    assert sorted(state) == [
        "architecture.all.w_act",
        "architecture.all.w_level",
        "architecture.all.w_sink",
    ]
    assert torch.equal(state["architecture.all.w_sink"], weights.w_sink.detach())
    # joint mode: the connection weights moved away from their zero initialisation
    assert state["architecture.all.w_sink"].abs().max() > 0
    assert state["architecture.all.w_level"].abs().max() > 0
    # telemetry: one record for the one epoch, with entropies, the cell and the top weights
    (record,) = _telemetry(run_dir)
    assert record["epoch"] == 1
    assert record["arch_steps"] == 64 // 16
    pos = record["positions"]["all"]
    assert pos["cell"] == cell.canonical()
    assert 0 < pos["entropy/sink"] <= torch.log(torch.tensor(12.0)).item() + 1e-6
    assert 0 < pos["entropy/act"] <= torch.log(torch.tensor(4.0)).item() + 1e-6
    assert 0 < pos["entropy/level"] <= torch.log(torch.tensor(6.0)).item() + 1e-6
    assert len(pos["top_sink"]) == 3
    assert pos["top_sink_share"] == max(pos["top_sink"].values())
    assert pos["entropy_max/sink"] == pytest.approx(math.log(12))
    assert pos["entropy_max/level"] == pytest.approx(math.log(6))
    # gradient telemetry: the connection weights and the network got gradients, and the
    # logits' range covers the largest update of the epoch (they started at zero)
    assert record["grad_norm/net"] > 0 and record["grad_norm/supergraph"] > 0
    for kind in ("sink", "level", "act"):
        assert pos[f"grad_norm/{kind}"] > 0
        assert 0 < pos[f"grad_coherence/{kind}"] <= 1 + 1e-6
        lo, hi = pos[f"logits/{kind}"]
        assert max(-lo, hi) == pytest.approx(pos[f"epoch_update/{kind}"])
        assert pos[f"max_step_update/{kind}"] > 0
    hist = result.search.history[-1]
    assert hist["arch/grad_norm/sink"] == pytest.approx(pos["grad_norm/sink"])
    assert hist["arch/entropy/sink"] == pytest.approx(pos["entropy/sink"])


def test_position_specific_gives_one_cell_per_position(searches):
    result, run_dir = searches["specific"]
    cells_dir = run_dir / "cells"
    names = sorted(p.name for p in cells_dir.iterdir())
    assert names == sorted(
        f"cell_{p}{ext}" for p in POSITIONS for ext in (".png", ".weights.json", ".yaml")
    )
    assert list(result.cells) == POSITIONS
    (record,) = _telemetry(run_dir)
    assert list(record["positions"]) == POSITIONS
    state = _arch_state(run_dir)
    assert len(state) == 3 * 5
    for p in POSITIONS:
        cell = CellSpec.load(cells_dir / f"cell_{p}.yaml")
        assert result.cells[p] == cell
        assert record["positions"][p]["cell"] == cell.canonical()
        weights = ArchitectureWeights.from_dict(
            json.loads((cells_dir / f"cell_{p}.weights.json").read_text())
        )
        assert torch.equal(state[f"architecture.{p}.w_sink"], weights.w_sink.detach())
        assert derive_cell(weights, 3, 1).canonical() == cell.canonical()
    # each position learned its own weights (they differ between positions)
    assert not torch.equal(
        state["architecture.Mixed_4b.w_sink"], state["architecture.Mixed_4f.w_sink"]
    )
    assert "arch/Mixed_4b/entropy/sink" in result.search.history[-1]


def test_warmup_keeps_connection_weights_at_zero(tmp_path):
    config = DifferentiableSearchConfig(warmup_epochs=1)
    run_differentiable_search(SPACE, _spec(32, 16), config, tmp_path)
    state = _arch_state(tmp_path)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in state.values())
    (record,) = _telemetry(tmp_path)
    assert record["arch_steps"] == 0
    # uniform weights: entropies are the maxima, the cell is the tie-break cell
    assert record["positions"]["all"]["entropy/sink"] == pytest.approx(
        torch.log(torch.tensor(12.0)).item(), abs=1e-5
    )
    # ... which the collapse monitor says: every softmax undecided, one epoch only
    warnings = collapse_summary(_telemetry(tmp_path))["all"].warnings
    assert sum("barely moved" in w for w in warnings) == 3
    # the frozen weights' gradients are still measured (what they would have stepped on)
    assert record["positions"]["all"]["grad_norm/sink"] > 0


@pytest.mark.slow
def test_perturbation_selection_exports_the_cell_the_trained_network_needs(tmp_path):
    config = DifferentiableSearchConfig(alpha=2, beta=1, selection="perturbation", arch_lr=0.05)
    result = run_differentiable_search(SPACE, _spec(32, 16), config, tmp_path)
    cell = CellSpec.load(tmp_path / "cells" / "cell.yaml")
    derivation = cell.meta["derivation"]
    assert derivation["method"] == "perturbation" and len(derivation["sink_scores"]) == 12
    assert all(result.cells[p] == cell for p in POSITIONS)
    # the learned weights are exported as trained (the selection restores them)
    assert _exported_as_trained(tmp_path)
    # 1 + 12 sink nodes + 1; 6 inputs + 1 for each kept level-2 node; 4 + 1 per cell node
    level2 = sum(
        name.startswith("L2") for name, e in derivation["chosen"].items() if "sink_score" in e
    )
    expected = 1 + 12 + 1 + level2 * (6 + 1) + len(cell.ops) * (4 + 1)
    assert derivation["selection"]["evaluations"] == expected
    ranked = sorted(derivation["sink_scores"], key=lambda n: -derivation["sink_scores"][n])
    assert sorted(n for n, e in derivation["chosen"].items() if "sink_score" in e) == sorted(
        ranked[:2]
    )


@pytest.mark.slow
def test_pruning_selection_exports_a_pruned_cell_and_the_weights_as_trained(tmp_path):
    config = DifferentiableSearchConfig(alpha=2, beta=1, selection="pruning", arch_lr=0.05)
    result = run_differentiable_search(SPACE, _spec(32, 16), config, tmp_path)
    cell = CellSpec.load(tmp_path / "cells" / "cell.yaml")
    derivation = cell.meta["derivation"]
    record = derivation["selection"]
    assert derivation["method"] == "pruning" and all(result.cells[p] == cell for p in POSITIONS)
    kept = [name for name, e in derivation["chosen"].items() if "sink_score" in e]
    pruned = [p["node"] for p in record["pruned"]]
    assert len(kept) == 2 and len(pruned) == 12 - 2 and not set(kept) & set(pruned)
    # an epoch after each of the 10 removals and after each kept level-2 node's inputs
    level2 = sum(name.startswith("L2") for name in kept)
    assert record["readaptations"] == 10 + level2
    # rounds over 12, 11, ..., 3 nodes, one evaluation after each re-adaptation, 1 as trained,
    # 1 with the sink fixed; 6 inputs per kept level-2 node; 4 + 1 per cell node
    expected = 1 + sum(range(3, 13)) + 10 + 1 + level2 * (6 + 1) + len(cell.ops) * (4 + 1)
    assert record["evaluations"] == expected
    assert _exported_as_trained(tmp_path)


@pytest.mark.slow
def test_oneshot_selection_exports_the_best_scoring_candidate(tmp_path):
    config = DifferentiableSearchConfig(
        selection="oneshot", oneshot_ops=1, oneshot_retrain=2, oneshot_retrain_seeds=1,
        arch_lr=0.05,
    )  # fmt: skip
    result = run_differentiable_search(SPACE, _spec(32, 16), config, tmp_path)
    cell = CellSpec.load(tmp_path / "cells" / "cell.yaml")
    derivation = cell.meta["derivation"]
    assert derivation["method"] == "oneshot" and derivation["candidates"] == 24
    assert all(result.cells[p] == cell for p in POSITIONS) and len(cell.ops) == 1
    ranked = [(r["top1"], -r["loss"]) for r in derivation["ranked"]]
    assert ranked == sorted(ranked, reverse=True) and derivation["ranked"][0]["hash"] == cell.hash()
    assert (tmp_path / "cells" / "cell.png").is_file()  # the plot marks the chosen node
    # the 2 best trained from scratch (a run each, with a seed derived from the search's), the
    # better one derived
    retrained = derivation["retrained"]
    assert [r["hash"] for r in retrained] == [r["hash"] for r in derivation["ranked"][:2]]
    seed = oneshot_seeds(0, 1)[0]
    for r in retrained:
        metrics = tmp_path / "oneshot_retrain" / f"{r['hash']}_seed{seed}" / "derived"
        assert metrics.is_dir() and len(r["trials"]) == 1
    assert cell.hash() == max(retrained, key=lambda r: r["top1"])["hash"]
    assert _exported_as_trained(tmp_path)


def test_bilevel_steps_on_the_heldout_half(tmp_path, monkeypatch):
    seen: dict[str, object] = {}
    real_loader, real_trial = search_mod.heldout_loader, search_mod.run_trial
    real_next = ArchitectureStep._next_heldout

    def loader(data, batch_size, seed):
        seen["held"] = data
        return real_loader(data, batch_size, seed)

    def trial(spec, **kwargs):
        seen["train"] = kwargs["datasets"][0]
        return real_trial(spec, **kwargs)

    def next_heldout(self):
        x, y = real_next(self)
        seen.setdefault("heldout_batches", []).append(y.clone())
        return x, y

    monkeypatch.setattr(search_mod, "heldout_loader", loader)
    monkeypatch.setattr(search_mod, "run_trial", trial)
    monkeypatch.setattr(ArchitectureStep, "_next_heldout", next_heldout)
    config = DifferentiableSearchConfig(mode="bilevel")
    run_differentiable_search(SPACE, _spec(64, 16), config, tmp_path)
    held, train = seen["held"], seen["train"]
    assert len(held) == 32 and len(train) == 32
    assert held.dataset is train.dataset
    assert not set(held.indices) & set(train.indices)
    assert sorted(held.indices + train.indices) == list(range(64))
    # one held-out batch per architecture step, two network steps (32 clips / 16)
    (record,) = _telemetry(tmp_path)
    assert record["arch_steps"] == 2
    assert len(seen["heldout_batches"]) == 2
    labels = torch.cat(seen["heldout_batches"])
    held_labels = torch.tensor([int(held[i][1]) for i in range(len(held))])
    assert sorted(labels.tolist()) == sorted(held_labels.tolist())
    state = _arch_state(tmp_path)
    assert state["architecture.all.w_sink"].abs().max() > 0


def test_split_is_deterministic_and_disjoint():
    data = list(range(10))
    a1, b1 = split_dataset(data, 0.3, seed=5)
    a2, b2 = split_dataset(data, 0.3, seed=5)
    assert (a1.indices, b1.indices) == (a2.indices, b2.indices)
    assert len(b1) == 3 and len(a1) == 7
    assert sorted(a1.indices + b1.indices) == list(range(10))


def test_invalid_config_raises():
    with pytest.raises(ValueError, match="mode must be one of"):
        DifferentiableSearchConfig(mode="darts2")
    with pytest.raises(ValueError, match="heldout_fraction"):
        DifferentiableSearchConfig(heldout_fraction=1.0)
    with pytest.raises(ValueError, match="temperature"):
        DifferentiableSearchConfig(temperature=0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["joint", "bilevel"])
def test_kill_and_resume_matches_uninterrupted(tmp_path, monkeypatch, mode):
    config = DifferentiableSearchConfig(mode=mode)
    spec = _spec(64, 16, epochs=2, deterministic=True)
    full = run_differentiable_search(SPACE, spec, config, tmp_path / "a")

    real_step = ArchitectureStep.on_train_step

    def killed(self, trainer, batch, step):
        if trainer.epoch == 1:  # the first step of epoch 2: epoch 1 is checkpointed
            raise KeyboardInterrupt
        real_step(self, trainer, batch, step)

    with monkeypatch.context() as m:
        m.setattr(ArchitectureStep, "on_train_step", killed)
        with pytest.raises(KeyboardInterrupt):
            run_differentiable_search(SPACE, spec, config, tmp_path / "b")
    state = torch.load(tmp_path / "b" / "search" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    resumed = run_differentiable_search(SPACE, spec.replace(resume=True), config, tmp_path / "b")
    a, b = _arch_state(tmp_path / "a"), _arch_state(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["architecture.all.w_sink"].abs().max() > 0
    assert resumed.cells == full.cells
    assert _telemetry(tmp_path / "a") == _telemetry(tmp_path / "b")
    timing = ("epoch_time_s", "clips_per_s")
    assert len(resumed.search.history) == len(full.search.history) == 2
    for h1, h2 in zip(resumed.search.history, full.search.history):
        assert {k: v for k, v in h1.items() if k not in timing} == {
            k: v for k, v in h2.items() if k not in timing
        }


def test_flops_are_counted_on_the_meta_device_once_the_weights_are_attached(
    tmp_path, monkeypatch, caplog
):
    import attnas.backbones

    devices: list[str] = []
    real_count = attnas.backbones.count_flops

    def count(model, input_shape=None, batch=1, device="meta"):
        devices.append(str(device))
        return real_count(model, input_shape, batch, device)

    monkeypatch.setattr(attnas.backbones, "count_flops", count)
    caplog.set_level(logging.INFO, logger="attnas.train")
    spec = _spec(16, 16, max_steps_per_epoch=1).replace(positions=("Mixed_4b",))
    result = run_differentiable_search(SPACE, spec, DifferentiableSearchConfig(), tmp_path)
    assert devices == ["meta"]  # no fallback to a full forward pass on the CPU
    assert "FLOP count on the meta device failed" not in caplog.text
    assert result.search.flops is not None and result.search.flops > 0


class _RandomClips(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 32, 32, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class _Overflow(TrainerHook):
    """Makes the connection-weight gradients infinite, as an fp16 overflow does."""

    def __init__(self, params):
        self.params = params

    def on_train_step(self, trainer, batch, step):
        self.params[0].grad.fill_(math.inf)


def _two_arch_steps(scale: float | None, overflow: bool = False):
    """Two joint steps of a supergraph search on i3d_tiny (a supergraph at Mixed_4b), with a
    real ``GradScaler`` on the CPU when ``scale`` is given (standing in for fp16 on CUDA).

    The first step's connection-weight gradients are zero (the supergraph's residual branch
    starts at zero); the second step's are not."""
    torch.manual_seed(0)
    factory = SupergraphFactory(SPACE, position_specific=False)
    model = build_backbone("i3d_tiny", 3, (3, 8, 32, 32))
    insert_cells(model, ["Mixed_4b"], factory)
    params = factory.attach(model)
    hook = ArchitectureStep(factory, DifferentiableSearchConfig(), SPACE.alpha, SPACE.beta)
    config = TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=2, device="cpu",
                         progress=False, checkpoint_every=0)  # fmt: skip
    hooks = [_Overflow(params), hook] if overflow else [hook]
    trainer = Trainer(model, _RandomClips(8), None, config, exclude_parameters=params,
                      hooks=hooks)  # fmt: skip
    if scale is not None:
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    seen: list[list[torch.Tensor]] = []
    hook.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.grad.clone() for p in hook.params])
    )
    trainer.fit()
    return hook, seen, [p.detach().clone() for p in params]


def test_connection_weights_step_on_unscaled_gradients_under_a_grad_scaler():
    _, plain_grads, plain_after = _two_arch_steps(None)
    hook, scaled_grads, scaled_after = _two_arch_steps(2.0**14)
    assert len(plain_grads) == len(scaled_grads) == 2 and hook.steps == 2
    assert any(g.abs().max() > 0 for g in plain_grads[1])
    for a, b in zip(plain_grads[1], scaled_grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-12)
    for a, b in zip(plain_after, scaled_after, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-9)


def test_non_finite_connection_weight_gradients_skip_the_step(caplog):
    caplog.set_level(logging.WARNING, logger="attnas.supergraph")
    hook, seen, after = _two_arch_steps(2.0**14, overflow=True)
    assert seen == [] and hook.steps == 0 and hook.skipped_steps == 2
    assert all(torch.equal(p, torch.zeros_like(p)) for p in after)  # still the initial zeros
    assert hook.optimizer.state_dict()["state"] == {}
    assert "architecture step skipped" in caplog.text
