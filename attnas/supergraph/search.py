"""The differentiable search (AttentionNAS Sec. 4.2): train supergraphs, derive, export.

``run_differentiable_search`` inserts a supergraph at every insertion point of a backbone and
trains the network weights and the connection weights through the one trial trainer
(``attnas.train.run_trial``) with an ``ArchitectureStep`` hook:

- ``joint`` (the paper): one training loss; the network optimiser and the connection-weight
  optimiser (Adam) both step on each training batch;
- ``bilevel`` (DARTS, first order): the training split is halved (deterministically, from the
  seed); the network trains on one half and the connection weights step on batches of the
  other, held-out half.

Position-agnostic search shares one ``ArchitectureWeights`` among all supergraphs;
position-specific search gives each insertion point its own. Either way the weights are
registered in the model under ``architecture`` (so they move with it and live in its
checkpoints) and kept out of the network optimiser. For ``warmup_epochs`` epochs the connection
weights stay frozen (the network learns first, as DARTS-style searches commonly do). The
softmax temperature is the ``ArchitectureWeights``'.

Under fp16 autocast the trainer's GradScaler scales the loss, so the joint step's gradients of
the connection weights carry the scale: they are divided by ``trainer.grad_scale`` before the
Adam step, and a step whose gradients are not finite (after the DDP all-reduce, so every rank
agrees) is skipped and counted (``arch_skipped_steps``), as ``GradScaler.step`` skips the
network optimiser's. The bilevel step's held-out gradients come from an unscaled loss.

After every epoch the hook records the entropy of each softmax, the currently derived cell(s)
and the top sink weights: as metrics through the tracker and as one JSON line in
``telemetry.jsonl``. A killed search resumes from its last epoch checkpoint (network weights,
connection weights, both optimisers, RNG) through the trainer's checkpointing.

At the end the cells are derived with α/β, exported as YAML (with the weights behind each
choice), the weights saved as JSON and drawn as PNG; optionally each derived cell set, the
backbone alone and the backbone with non-local blocks at the same positions are retrained from
scratch under the same budget (the comparison of the paper's Table 2).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from attnas.space import CellSpec, SearchSpace
from attnas.supergraph.derive import derive_cell
from attnas.supergraph.graph import SuperGraph
from attnas.supergraph.plot import plot_weights
from attnas.supergraph.weights import ArchitectureWeights
from attnas.train import TrainerHook, TrialResult, TrialSpec, run_trial, unscale_and_check

logger = logging.getLogger("attnas.supergraph")

MODES = ("joint", "bilevel")
AGNOSTIC = "all"


@dataclass(frozen=True)
class DifferentiableSearchConfig:
    """How the connection weights are learned and the cell derived.

    Attributes:
        mode: ``"joint"`` (paper) or ``"bilevel"`` (DARTS first order).
        position_specific: One set of connection weights per insertion point.
        arch_lr: Adam learning rate of the connection weights.
        arch_betas: Adam betas.
        arch_weight_decay: Adam weight decay of the connection weights.
        warmup_epochs: Epochs with the connection weights frozen.
        temperature: Softmax temperature of the connection weights.
        alpha: Sink nodes kept by the derivation (None: the space's default).
        beta: Predecessors kept per node (None: the space's default).
        heldout_fraction: Share of the training split held out for ``bilevel``.
        retrain: Retrain the derived cells and the baselines from scratch afterwards.
        baselines: Baselines retrained alongside (``"none"``, ``"nonlocal"``).
    """

    mode: str = "joint"
    position_specific: bool = False
    arch_lr: float = 3e-3
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    warmup_epochs: int = 0
    temperature: float = 1.0
    alpha: int | None = None
    beta: int | None = None
    heldout_fraction: float = 0.5
    retrain: bool = False
    baselines: tuple[str, ...] = ("none", "nonlocal")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"differentiable search mode must be one of {MODES}, got {self.mode!r}"
            )
        if not 0 < self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be in (0, 1)")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        object.__setattr__(self, "arch_betas", tuple(self.arch_betas))
        object.__setattr__(self, "baselines", tuple(self.baselines))


@dataclass
class DifferentiableSearchResult:
    """What a differentiable search produced.

    Attributes:
        cells: Derived cell per insertion point (position-agnostic: the same cell everywhere).
        cell_files: The exported YAML files.
        search: The search run's ``TrialResult``.
        retrained: ``{"derived": result, "none": result, "nonlocal": result}`` when retrained.
        run_dir: The run directory.
    """

    cells: dict[str, CellSpec]
    cell_files: list[Path]
    search: TrialResult
    retrained: dict[str, TrialResult] = field(default_factory=dict)
    run_dir: Path | None = None


class SupergraphFactory:
    """Builds a supergraph for each insertion point, sharing or not the connection weights."""

    def __init__(self, space: SearchSpace, position_specific: bool, temperature: float = 1.0):
        self.space = space
        self.position_specific = position_specific
        self.temperature = temperature
        self.weights: dict[str, ArchitectureWeights] = {}

    def _weights_for(self, name: str) -> ArchitectureWeights:
        key = name if self.position_specific else AGNOSTIC
        if key not in self.weights:
            nodes = list(self.space.supergraph.nodes)
            self.weights[key] = ArchitectureWeights(
                self.space.supergraph.levels,
                nodes,
                [self.space.activations_for(t) for t, _ in nodes],
                temperature=self.temperature,
            )
        return self.weights[key]

    def __call__(self, name: str, shape: tuple[int, int, int, int]) -> SuperGraph:
        return SuperGraph.from_space(self.space, shape[0], shape, self._weights_for(name))

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        """Register the connection weights in ``model`` (``model.architecture``); return them."""
        model.add_module("architecture", nn.ModuleDict(self.weights))
        return [p for w in self.weights.values() for p in w.parameters()]


class ArchitectureStep(TrainerHook):
    """Trainer hook that updates the connection weights (joint or bilevel) and logs telemetry.

    Args:
        factory: The supergraph factory whose weights are optimised.
        config: The search config.
        alpha: Derivation α for telemetry.
        beta: Derivation β for telemetry.
        heldout: Loader of the held-out split (``bilevel`` only).
        telemetry_path: Where one JSON line per epoch is appended (None: nowhere).
    """

    def __init__(
        self,
        factory: SupergraphFactory,
        config: DifferentiableSearchConfig,
        alpha: int,
        beta: int,
        heldout: DataLoader | None = None,
        telemetry_path: Path | None = None,
    ):
        self.factory = factory
        self.config = config
        self.alpha = alpha
        self.beta = beta
        self.heldout = heldout
        self.telemetry_path = telemetry_path
        self.params = [p for w in factory.weights.values() for p in w.parameters()]
        self.optimizer = torch.optim.Adam(
            self.params,
            lr=config.arch_lr,
            betas=config.arch_betas,
            weight_decay=config.arch_weight_decay,
        )
        self.steps = 0
        self.skipped_steps = 0
        self._heldout_iter: Iterator[Any] | None = None
        self._heldout_epoch = 0
        # Batches of the current held-out pass already used: with the per-pass seed below this
        # lets a resumed search continue the held-out stream exactly where it stopped.
        self._heldout_pos = 0
        generator = getattr(heldout, "generator", None)
        self._heldout_seed = None if generator is None else generator.initial_seed()

    def on_train_step(self, trainer: Any, batch: Any, step: int) -> None:
        if trainer.epoch < self.config.warmup_epochs:
            for p in self.params:
                p.grad = None
            return
        scale = getattr(trainer, "grad_scale", 1.0)  # the training loss's GradScaler factor
        if self.config.mode == "bilevel":
            self._heldout_gradients(trainer)
            scale = 1.0
        _all_reduce_grads(self.params)
        if not unscale_and_check(self.params, scale):
            self.skipped_steps += 1
            logger.warning(
                "step %d: non-finite connection-weight gradients, architecture step skipped", step
            )
        else:
            self.optimizer.step()
            self.steps += 1
        self.optimizer.zero_grad(set_to_none=True)

    def _heldout_gradients(self, trainer: Any) -> None:
        """Replace the training-loss gradients by those of a held-out batch (first order)."""
        from torch.nn import functional as F

        x, y = self._next_heldout()
        logits = trainer.model(x.to(trainer.device))  # (B, K)
        loss = F.cross_entropy(logits.float(), y.to(trainer.device))
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for p, g in zip(self.params, grads):
            p.grad = None if g is None else g.detach()

    def _next_heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.heldout is None:
            raise RuntimeError("bilevel search needs a held-out loader")
        while True:
            if self._heldout_iter is None:
                self._heldout_iter = self._start_heldout_pass()
            try:
                batch = next(self._heldout_iter)
            except StopIteration:
                self._heldout_iter = None
                self._heldout_epoch += 1
                self._heldout_pos = 0
                continue
            self._heldout_pos += 1
            x, y = batch[0], batch[1]
            if y.numel() > 0:
                return x, y

    def _start_heldout_pass(self) -> Iterator[Any]:
        """An iterator over the held-out loader, its order seeded by the pass number and
        advanced past the batches this pass already used (non-zero after a resume)."""
        from attnas.train import derive_seed

        assert self.heldout is not None
        sampler = getattr(self.heldout, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._heldout_epoch)
        if self._heldout_seed is not None:
            self.heldout.generator.manual_seed(  # type: ignore[union-attr]
                derive_seed(self._heldout_seed, "heldout", self._heldout_epoch)
            )
        it = iter(self.heldout)
        for _ in range(self._heldout_pos):
            next(it)
        return it

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "arch_steps": self.steps,
            "arch_skipped_steps": self.skipped_steps,
            "positions": {},
        }
        metrics["arch_skipped_steps"] = self.skipped_steps
        for key, weights in self.factory.weights.items():
            ent = weights.entropies()
            cell = derive_cell(weights, self.alpha, self.beta)
            sink = weights.sink_probs().detach().cpu()
            top = sorted(range(sink.numel()), key=lambda i: -float(sink[i]))[:3]
            n = weights.num_nodes
            record["positions"][key] = {
                **ent,
                "cell": cell.canonical(),
                "top_sink": {weights.node_name(i // n + 1, i % n): float(sink[i]) for i in top},
            }
            prefix = "arch" if key == AGNOSTIC else f"arch/{key}"
            metrics.update({f"{prefix}/{k}": v for k, v in ent.items()})
            metrics[f"{prefix}/top_sink"] = float(sink[top[0]])
        if self.telemetry_path is not None and _is_main():
            self.telemetry_path.parent.mkdir(parents=True, exist_ok=True)
            with self.telemetry_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "heldout_epoch": self._heldout_epoch,
            "heldout_pos": self._heldout_pos,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._heldout_epoch = int(state.get("heldout_epoch", 0))
        self._heldout_pos = int(state.get("heldout_pos", 0))
        self._heldout_iter = None


def _is_main() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Average connection-weight gradients over DDP ranks (DDP itself only sees the network)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world


def _split_train(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministically split a dataset into (network half, held-out half), stratified-free."""
    n = len(train)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    n_held = max(1, round(n * fraction))
    return Subset(train, sorted(perm[n_held:])), Subset(train, sorted(perm[:n_held]))


def _build_datasets(spec: TrialSpec) -> tuple[Dataset, Dataset]:
    from attnas.data.builders import build_splits

    return build_splits(spec.dataset, spec.dataset_kwargs, spec.train_kwargs, spec.val_kwargs)


def _heldout_loader(data: Dataset, spec: TrialSpec) -> DataLoader:
    from attnas.data import collate_skip_failed

    return DataLoader(
        data,
        batch_size=spec.train.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(spec.seed + 1),
        collate_fn=collate_skip_failed,
        drop_last=len(data) >= spec.train.batch_size,  # type: ignore[arg-type]
        num_workers=0,
    )


def export_cells(
    weights: Mapping[str, ArchitectureWeights],
    alpha: int,
    beta: int,
    out_dir: Path,
    positions: list[str],
) -> tuple[dict[str, CellSpec], list[Path]]:
    """Derive and write the cell(s), the weights (JSON) and their plot(s) under ``out_dir``.

    Position-agnostic weights give ``cell.yaml`` (used at every position); position-specific
    weights give ``cell_<position>.yaml`` per position.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cells: dict[str, CellSpec] = {}
    files: list[Path] = []
    for key, w in weights.items():
        cell = derive_cell(w, alpha, beta)
        stem = "cell" if key == AGNOSTIC else f"cell_{key}"
        cell = dataclasses.replace(cell, name=stem)
        files.append(cell.save(out_dir / f"{stem}.yaml"))
        (out_dir / f"{stem}.weights.json").write_text(json.dumps(w.to_dict()))
        plot_weights(
            w,
            out_dir / f"{stem}.png",
            cell,
            title=f"{stem}: learned connection weights (alpha={alpha}, beta={beta})",
        )
        if key == AGNOSTIC:
            cells.update({p: cell for p in positions})
        else:
            cells[key] = cell
    return cells, files


def run_differentiable_search(
    space: SearchSpace,
    spec: TrialSpec,
    config: DifferentiableSearchConfig,
    run_dir: str | Path,
) -> DifferentiableSearchResult:
    """Search, derive and export; optionally retrain the result against the baselines.

    Args:
        space: The search space (supergraph nodes, levels, activations, C_op, α/β defaults).
        spec: The training run of the search (backbone, positions, data, epochs, seed, resume);
            its ``cell`` is ignored and its ``run_dir`` replaced by ``<run_dir>/search``.
        config: How connection weights are learned.
        run_dir: The run directory (cells go to ``<run_dir>/cells``).

    Returns:
        The derived cells, their files, the search result and any retraining results.
    """
    run_dir = Path(run_dir)
    alpha = config.alpha or space.alpha
    beta = config.beta or space.beta
    factory = SupergraphFactory(space, config.position_specific, config.temperature)
    search_spec = spec.replace(
        run_dir=str(run_dir / "search"), cell="none", op_channel_ratio=space.op_channel_ratio
    )
    train_ds, val_ds = _build_datasets(search_spec)
    num_classes = spec.num_classes or int(train_ds.num_classes)  # type: ignore[attr-defined]
    input_shape = spec.input_shape or tuple(train_ds.clip_shape)  # type: ignore[attr-defined]
    search_spec = search_spec.replace(num_classes=num_classes, input_shape=input_shape)
    heldout = None
    if config.mode == "bilevel":
        train_ds, held_ds = _split_train(train_ds, config.heldout_fraction, spec.seed)
        heldout = _heldout_loader(held_ds, spec)
    state: dict[str, Any] = {}

    def hooks(model: nn.Module) -> list[TrainerHook]:
        state["arch_params"] = factory.attach(model)
        state["hook"] = ArchitectureStep(
            factory, config, alpha, beta, heldout, run_dir / "telemetry.jsonl"
        )
        return [state["hook"]]

    def exclude(model: nn.Module) -> list[nn.Parameter]:
        return state["arch_params"]

    if not spec.resume:
        (run_dir / "telemetry.jsonl").unlink(missing_ok=True)
    result = run_trial(
        search_spec,
        module_factory=factory,
        hooks=hooks,
        exclude_parameters=exclude,
        datasets=(train_ds, val_ds),
    )
    if not result.ok:
        raise RuntimeError(f"differentiable search failed:\n{result.error}")
    positions = _positions(spec, input_shape)
    cells, files = export_cells(factory.weights, alpha, beta, run_dir / "cells", positions)
    out = DifferentiableSearchResult(cells, files, result, run_dir=run_dir)
    if config.retrain:
        out.retrained = retrain_comparison(
            spec,
            cells,
            config.baselines,
            run_dir / "retrain",
            space.op_channel_ratio,
            num_classes,
            input_shape,
            op_params={t: space.op_params(t) for t in space.op_types},
        )
    return out


def _positions(spec: TrialSpec, input_shape: tuple[int, ...]) -> list[str]:
    if spec.positions is not None:
        return list(spec.positions)
    from attnas.backbones import build_backbone

    model = build_backbone(spec.backbone, 2, input_shape, **spec.backbone_kwargs)
    return list(model.default_positions)


def derived_cell_factory(
    cells: Mapping[str, CellSpec],
    op_channel_ratio: float,
    op_params: Mapping[str, Mapping[str, Any]] | None = None,
):
    """``factory(name, shape)`` that inserts the cell derived for each position.

    ``op_params`` are the space's per-type op options, the ones the supergraph's nodes were
    built with (so the retrained cell has the ops that were searched).
    """
    from attnas.cells import AttentionCell

    def factory(name: str, shape: tuple[int, int, int, int]) -> nn.Module:
        c_op = max(1, round(shape[0] * op_channel_ratio))
        return AttentionCell(cells[name], shape[0], c_op, shape, op_params=op_params)

    return factory


def retrain_comparison(
    spec: TrialSpec,
    cells: Mapping[str, CellSpec],
    baselines: tuple[str, ...],
    out_dir: Path,
    op_channel_ratio: float,
    num_classes: int,
    input_shape: tuple[int, ...],
    op_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, TrialResult]:
    """Retrain from scratch, under ``spec``'s budget: the derived cells and each baseline.

    ``op_params``: the space's per-type op options for the derived cells' ops.
    """
    results: dict[str, TrialResult] = {}
    base = spec.replace(
        resume=False,
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        positions=tuple(cells),
    )
    for name in itertools.chain(["derived"], baselines):
        run = base.replace(
            run_dir=str(out_dir / name), name=name, cell=name if name != "derived" else "none"
        )
        factory = (
            derived_cell_factory(cells, op_channel_ratio, op_params) if name == "derived" else None
        )
        logger.info("retraining %s", name)
        results[name] = run_trial(run, module_factory=factory)
    return results
