"""The differentiable search (AttentionNAS Sec. 4.2): the search hook and the search run.

``run_differentiable_search`` inserts a supergraph at every insertion point of a backbone and
trains the network weights and the connection weights through the one trial trainer
(``attnas.train.run_trial``, with the datasets of ``attnas.train.build_datasets``) with an
``ArchitectureStep`` hook:

- ``joint`` (the paper): one training loss; the network optimiser and the connection-weight
  optimiser (Adam) both step on each training batch;
- ``bilevel`` (DARTS, first order): the training split is halved (deterministically, from the
  seed, ``attnas.train.split_dataset``); the network trains on one half and the connection
  weights step on batches of the other, held-out half.

Position-agnostic search shares one ``ArchitectureWeights`` among all supergraphs;
position-specific search gives each insertion point its own. Either way the weights are
registered in the model under ``architecture`` (so they move with it and live in its
checkpoints) and kept out of the network optimiser. For ``warmup_epochs`` epochs the connection
weights stay frozen (the network learns first, as DARTS-style searches commonly do).

Options against connection weights that do not move (issue 14; all off by default, since no
benchmark evidence yet says which helps — see ``DifferentiableSearchConfig``): a cosine
schedule of the connection weights' learning rate, their weight decay (0 turns it off), a
softmax temperature schedule (``attnas.supergraph.weights.temperature_at``), the initial
weight of the sink's BatchNorm during search (``sink_bn_init``: the supergraph's convention is
0, which multiplies every gradient reaching the connection weights by a near-zero scale at
first), β-decay regularisation (``beta_decay``, Ye et al. 2022: the mean log-sum-exp of the
logits added to the connection weights' loss, which keeps any one logit from running away),
Dirichlet mixing (``dirichlet``, DrNAS: mixing weights sampled from a Dirichlet whose
concentration the logits set, which explores and regularises at once) and SDARTS random
smoothing (``perturbation``: uniform noise on the mixing weights in training forwards).

Under fp16 autocast the trainer's GradScaler scales the loss, so the joint step's gradients of
the connection weights carry the scale: they are divided by ``trainer.grad_scale`` before the
Adam step, and a step whose gradients are not finite (after the DDP all-reduce, so every rank
agrees) is skipped and counted (``arch_skipped_steps``), as ``GradScaler.step`` skips the
network optimiser's. The bilevel step's held-out gradients come from an unscaled loss.

After every epoch the hook records, as metrics through the tracker and as one JSON line in
``telemetry.jsonl``: the entropy of each softmax (and that of uniform mixing), the currently
derived cell(s), the top sink weights, the logits' range, and the gradient telemetry of
``attnas.supergraph.telemetry`` (per-step gradient norms reaching each kind of connection
weight and the network, their coherence, the largest logit update; during warm-up the
gradients the frozen weights would have stepped on). With ``telemetry_every``
> 0 the gradient norms of every that-many steps also go to ``telemetry_steps.jsonl``.
``attnas.supergraph.telemetry.collapse_summary`` turns the records into the report's collapse
monitor. A killed search resumes from its last epoch checkpoint (network weights, connection
weights, both optimisers, RNG) through the trainer's checkpointing.

At the end the cells are derived with α/β, their choices ranked by the learned weights or,
with ``selection="perturbation"``, by how much the trained network's validation loss rises
without each (DARTS-PT, ``attnas.supergraph.select``), and exported
(``attnas.supergraph.export``);
optionally each derived cell set, the backbone alone and the backbone with non-local blocks at
the same positions are retrained from scratch under the same budget
(``attnas.train.compare.retrain_comparison``, the comparison of the paper's Table 2).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from attnas.space import CellSpec, SearchSpace
from attnas.supergraph.derive import derive_cell
from attnas.supergraph.export import AGNOSTIC, export_cells
from attnas.supergraph.graph import SuperGraph
from attnas.supergraph.select import SELECTIONS
from attnas.supergraph.telemetry import GradientMeter, logit_stats, snapshot
from attnas.supergraph.weights import TEMPERATURE_SCHEDULES, ArchitectureWeights, temperature_at
from attnas.train import (
    TrainerHook,
    TrialResult,
    TrialSpec,
    WarmupCosine,
    build_datasets,
    heldout_loader,
    run_trial,
    split_dataset,
    unscale_and_check,
)
from attnas.train.compare import retrain_comparison

logger = logging.getLogger("attnas.supergraph")

MODES = ("joint", "bilevel")
ARCH_LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DifferentiableSearchConfig:
    """How the connection weights are learned and the cell derived.

    Attributes:
        mode: ``"joint"`` (paper) or ``"bilevel"`` (DARTS first order).
        position_specific: One set of connection weights per insertion point.
        arch_lr: Adam learning rate of the connection weights (apart from the network's).
        arch_betas: Adam betas.
        arch_weight_decay: Adam (L2) weight decay of the connection weights; 0 turns it off
            (it pulls the logits back towards uniform mixing).
        arch_lr_schedule: ``"constant"`` or ``"cosine"``: from ``arch_lr`` down to
            ``arch_min_lr_ratio * arch_lr`` over the architecture steps after warm-up.
        arch_min_lr_ratio: The cosine schedule's final factor.
        warmup_epochs: Epochs with the connection weights frozen.
        temperature: Softmax temperature of the connection weights (the first epoch's when a
            schedule is set).
        temperature_final: The last epoch's temperature (None: constant ``temperature``).
        temperature_schedule: ``"exponential"`` (geometric, SNAS/GDAS), ``"linear"`` or
            ``"constant"``, from ``temperature`` to ``temperature_final`` over the epochs.
        sink_bn_init: Initial weight of each supergraph's sink BatchNorm during the search
            (None: the supergraph's own, 0, or the proxy protocol's ``branch_init``). A small
            non-zero value (e.g. 0.1) keeps the branch near the identity while letting the
            connection weights get a gradient from the first step.
        beta_decay: Weight λ of β-decay regularisation: ``λ · mean log Σ exp(w)`` over every
            softmax row of the connection weights, added to their loss (0: off).
        entropy_penalty: Weight λ of ``λ · mean entropy`` of every row's (evaluation-mode)
            mixing weights, added to their loss: it pushes each row towards one choice (0: off).
        dirichlet: DrNAS-style mixing: each training forward mixes with a sample of
            ``Dirichlet(elu(w / τ) + 1)`` instead of the softmax (``ArchitectureWeights``); the
            weight decay then anchors the concentrations (DrNAS's L2 regulariser).
        perturbation: SDARTS random smoothing: each training forward adds uniform noise in
            ``[-ε, ε]`` to every mixing weight (``ArchitectureWeights``; 0: off).
        gumbel: GDAS-style hard sampling: each training forward mixes with a one-hot sample
            of each row's softmax, differentiated straight through its Gumbel-softmax
            relaxation (``ArchitectureWeights``); not with ``dirichlet``.
        selection: What ranks the derivation's choices: ``"weights"`` (the paper: the
            learned connection weights) or ``"perturbation"`` (DARTS-PT: the rise of the
            trained network's validation loss without each choice,
            ``attnas.supergraph.select``; about 50 extra evaluations for α = 3, β = 1) or
            ``"pruning"`` (the same, the sink pruned one node at a time and the network
            re-adapted for one epoch of the search's training after each structural decision;
            about 80 evaluations and 10 epochs for α = 3, β = 1; the trained network restored
            afterwards) or ``"oneshot"`` (α and β unused: every cell of the space with
            ``oneshot_ops`` ops scored by the weights it inherits, the best by validation top-1
            derived; 1,452 evaluations for ``attention_nas`` at 2 ops; position-agnostic only).
        oneshot_ops: The candidates' number of ops for ``selection="oneshot"``.
        oneshot_retrain: ``selection="oneshot"``: train this many of the best candidates by
            one-shot top-1 from scratch and derive the best of them by their mean validation
            top-1 (0: the one-shot best, no training).
        oneshot_retrain_seeds: Seeds per retrained candidate (derived from the search seed:
            fresh, not those the derived cell is retrained with afterwards).
        telemetry_every: Also write gradient telemetry every this many steps to
            ``telemetry_steps.jsonl`` (0: per epoch only).
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
    arch_lr_schedule: str = "constant"
    arch_min_lr_ratio: float = 0.0
    warmup_epochs: int = 0
    temperature: float = 1.0
    temperature_final: float | None = None
    temperature_schedule: str = "exponential"
    sink_bn_init: float | None = None
    beta_decay: float = 0.0
    entropy_penalty: float = 0.0
    dirichlet: bool = False
    perturbation: float = 0.0
    gumbel: bool = False
    selection: str = "weights"
    oneshot_ops: int = 2
    oneshot_retrain: int = 0
    oneshot_retrain_seeds: int = 2
    telemetry_every: int = 0
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
        if self.temperature_final is not None and self.temperature_final <= 0:
            raise ValueError("temperature_final must be > 0")
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"temperature_schedule must be one of {TEMPERATURE_SCHEDULES}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.oneshot_ops < 1:
            raise ValueError(f"oneshot_ops must be >= 1, got {self.oneshot_ops}")
        if self.oneshot_retrain < 0 or self.oneshot_retrain_seeds < 1:
            raise ValueError(
                "oneshot_retrain must be >= 0 and oneshot_retrain_seeds >= 1, got "
                f"{self.oneshot_retrain} and {self.oneshot_retrain_seeds}"
            )
        if self.selection == "oneshot" and self.position_specific:
            raise ValueError(
                "selection 'oneshot' picks one cell for every position: it needs "
                "position_specific: false"
            )
        if self.dirichlet and self.gumbel:
            raise ValueError("dirichlet and gumbel mixing exclude each other: set one of them")
        if self.arch_lr_schedule not in ARCH_LR_SCHEDULES:
            raise ValueError(f"arch_lr_schedule must be one of {ARCH_LR_SCHEDULES}")
        penalties = (self.arch_weight_decay, self.beta_decay, self.entropy_penalty)
        if min(*penalties, self.perturbation) < 0 or self.telemetry_every < 0:
            raise ValueError(
                "arch_weight_decay, beta_decay, entropy_penalty, perturbation and "
                "telemetry_every must be >= 0"
            )
        object.__setattr__(self, "arch_betas", tuple(self.arch_betas))
        object.__setattr__(self, "baselines", tuple(self.baselines))

    def temperature_at(self, epoch: int, epochs: int) -> float:
        """The softmax temperature of epoch ``epoch`` (0-based) of a search of ``epochs``."""
        return temperature_at(
            epoch, epochs, self.temperature, self.temperature_final, self.temperature_schedule
        )


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
    """Builds a supergraph for each insertion point, sharing or not the connection weights.

    Args:
        space: The search space.
        position_specific: One ``ArchitectureWeights`` per insertion point.
        temperature: Initial softmax temperature.
        sink_bn_init: When given, the initial weight of each built supergraph's sink BatchNorm
            (set after building it; the supergraph itself starts it at 0).
        dirichlet: Dirichlet (DrNAS-style) mixing of the connection weights.
        perturbation: SDARTS-RS noise on the mixing weights in training forwards (0: off).
        gumbel: GDAS-style straight-through one-hot sampling of the mixing weights.

    Attributes:
        weights: ``{key: ArchitectureWeights}`` (key ``"all"`` when position-agnostic).
        graphs: ``{position: SuperGraph}`` of every supergraph built.
    """

    def __init__(
        self,
        space: SearchSpace,
        position_specific: bool,
        temperature: float = 1.0,
        sink_bn_init: float | None = None,
        dirichlet: bool = False,
        perturbation: float = 0.0,
        gumbel: bool = False,
    ):
        self.space = space
        self.position_specific = position_specific
        self.temperature = temperature
        self.sink_bn_init = sink_bn_init
        self.dirichlet = dirichlet
        self.perturbation = perturbation
        self.gumbel = gumbel
        self.weights: dict[str, ArchitectureWeights] = {}
        self.graphs: dict[str, SuperGraph] = {}

    @classmethod
    def from_config(
        cls, space: SearchSpace, config: DifferentiableSearchConfig
    ) -> SupergraphFactory:
        """The factory a search with ``config`` uses (sharing, temperature, sink opening,
        Dirichlet mixing, perturbation, Gumbel sampling)."""
        return cls(
            space,
            config.position_specific,
            config.temperature,
            config.sink_bn_init,
            config.dirichlet,
            config.perturbation,
            config.gumbel,
        )

    def _weights_for(self, name: str) -> ArchitectureWeights:
        key = name if self.position_specific else AGNOSTIC
        if key not in self.weights:
            nodes = list(self.space.supergraph.nodes)
            self.weights[key] = ArchitectureWeights(
                self.space.supergraph.levels,
                nodes,
                [self.space.activations_for(t) for t, _ in nodes],
                temperature=self.temperature,
                dirichlet=self.dirichlet,
                perturbation=self.perturbation,
                gumbel=self.gumbel,
            )
        return self.weights[key]

    def __call__(self, name: str, shape: tuple[int, int, int, int]) -> SuperGraph:
        graph = SuperGraph.from_space(self.space, shape[0], shape, self._weights_for(name))
        self.graphs[name] = graph
        if self.sink_bn_init is not None:
            self.open_sinks(self.sink_bn_init)
        return graph

    def open_sinks(self, value: float) -> None:
        """Set the weight of every built supergraph's sink BatchNorm to ``value``."""
        with torch.no_grad():
            for graph in self.graphs.values():
                graph.out_norm.weight.fill_(value)

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
        self.telemetry_path = None if telemetry_path is None else Path(telemetry_path)
        self.params = [p for w in factory.weights.values() for p in w.parameters()]
        self.optimizer = torch.optim.Adam(
            self.params,
            lr=config.arch_lr,
            betas=config.arch_betas,
            weight_decay=config.arch_weight_decay,
        )
        self.steps = 0
        self.skipped_steps = 0
        self.meter = GradientMeter()
        self._step_meter = GradientMeter()
        self._epoch_start: dict[str, dict[str, torch.Tensor]] = {}
        self._lr_factor = WarmupCosine(1, 0, config.arch_min_lr_ratio)
        self._heldout_iter: Iterator[Any] | None = None
        self._heldout_epoch = 0
        # Batches of the current held-out pass already used: with the per-pass seed below this
        # lets a resumed search continue the held-out stream exactly where it stopped.
        self._heldout_pos = 0
        generator = getattr(heldout, "generator", None)
        self._heldout_seed = None if generator is None else generator.initial_seed()

    # ------------------------------------------------------------------ schedules
    def on_fit_start(self, trainer: Any) -> None:
        epochs = int(trainer.config.epochs)
        search_steps = max(1, (epochs - self.config.warmup_epochs) * trainer.steps_per_epoch)
        self._lr_factor = WarmupCosine(search_steps, 0, self.config.arch_min_lr_ratio)
        self._start_epoch(trainer.epoch, epochs)

    def _start_epoch(self, epoch: int, epochs: int) -> None:
        """Set the epoch's temperature and reset its telemetry."""
        for weights in self.factory.weights.values():
            weights.set_temperature(self.config.temperature_at(epoch, epochs))
        self.meter.reset()
        self._step_meter.reset()
        self._epoch_start = {k: snapshot(w) for k, w in self.factory.weights.items()}

    def arch_lr(self) -> float:
        """The connection weights' learning rate of the next architecture step."""
        if self.config.arch_lr_schedule == "constant":
            return self.config.arch_lr
        return self.config.arch_lr * self._lr_factor(self.steps)

    # ------------------------------------------------------------------ the step
    def on_train_step(self, trainer: Any, batch: Any, step: int) -> None:
        warmup = trainer.epoch < self.config.warmup_epochs
        scale = getattr(trainer, "grad_scale", 1.0)  # the training loss's GradScaler factor
        if self.config.mode == "bilevel" and not warmup:
            self._heldout_gradients(trainer)
            scale = 1.0
        _all_reduce_grads(self.params)
        finite = unscale_and_check(self.params, scale)
        if finite:
            self._measure(trainer, step)
        if warmup:
            self.optimizer.zero_grad(set_to_none=True)
            self._flush_steps(trainer, step)
            return
        if not finite:
            self.skipped_steps += 1
            logger.warning(
                "step %d: non-finite connection-weight gradients, architecture step skipped", step
            )
        else:
            if self.config.beta_decay > 0 or self.config.entropy_penalty > 0:
                self._add_penalties()
            for group in self.optimizer.param_groups:
                group["lr"] = self.arch_lr()
            before = {k: snapshot(w) for k, w in self.factory.weights.items()}
            self.optimizer.step()
            self.steps += 1
            for meter in self._meters():
                for key, weights in self.factory.weights.items():
                    meter.add_update(key, before[key], weights)
        self.optimizer.zero_grad(set_to_none=True)
        self._flush_steps(trainer, step)

    def _meters(self) -> list[GradientMeter]:
        """The epoch's meter, and the per-N-steps one when ``telemetry_every`` is set."""
        return [self.meter, self._step_meter] if self.config.telemetry_every else [self.meter]

    def _measure(self, trainer: Any, step: int) -> None:
        """Gradient norms of this step (connection weights, network, supergraphs' network)."""
        net = [p.grad for p in getattr(trainer, "parameters", [])]
        graphs = [p.grad for g in self.factory.graphs.values() for p in g.parameters()]
        for meter in self._meters():
            for key, weights in self.factory.weights.items():
                meter.add_weights(key, weights)
            meter.add_norm("net", net)
            meter.add_norm("supergraph", graphs)
            meter.step()

    def _flush_steps(self, trainer: Any, step: int) -> None:
        """Write the per-N-steps record once ``telemetry_every`` steps were measured."""
        every = self.config.telemetry_every
        if every and self._step_meter.steps >= every:
            record = {
                "step": step,
                "epoch": trainer.epoch + 1,
                "arch_steps": self.steps,
                **self._step_meter.summary(),
            }
            self._write(record, "_steps")
            self._step_meter.reset()

    def _add_penalties(self) -> None:
        """Add the gradients of the regularisers to the connection weights': β-decay,
        λ · mean log-sum-exp of every softmax row (its gradient is the row's softmax), and the
        entropy penalty, λ · mean entropy of every row's mixing weights."""
        c = self.config
        with torch.enable_grad():
            terms = []
            for w in self.factory.weights.values():
                if c.beta_decay > 0:
                    terms.append(c.beta_decay * w.logsumexp_penalty())
                if c.entropy_penalty > 0:
                    terms.append(c.entropy_penalty * w.entropy_penalty())
            loss = torch.stack(terms).sum()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for p, g in zip(self.params, grads):
            if g is not None:
                p.grad = g.detach() if p.grad is None else p.grad + g.detach()

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

    # ------------------------------------------------------------------ telemetry
    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        grads = self.meter.summary()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "arch_steps": self.steps,
            "arch_skipped_steps": self.skipped_steps,
            "arch_lr": self.arch_lr(),
            "temperature": next(iter(self.factory.weights.values())).temperature,
            "grad_norm/net": grads.get("grad_norm/net"),
            "grad_norm/supergraph": grads.get("grad_norm/supergraph"),
            "positions": {},
        }
        metrics["arch_skipped_steps"] = self.skipped_steps
        for key, weights in self.factory.weights.items():
            ent = weights.entropies()
            cell = derive_cell(weights, self.alpha, self.beta)
            sink = weights.sink_probs(sample=False).detach().cpu()
            top = sorted(range(sink.numel()), key=lambda i: -float(sink[i]))[:3]
            n = weights.num_nodes
            per_key = {
                name.replace(f"/{key}/", "/"): value
                for name, value in grads.items()
                if name.split("/")[1] == key
            }
            record["positions"][key] = {
                **ent,
                **{
                    k.replace("entropy", "entropy_max"): v
                    for k, v in weights.max_entropies().items()
                },
                "cell": cell.canonical(),
                "top_sink": {weights.node_name(i // n + 1, i % n): float(sink[i]) for i in top},
                "top_sink_share": float(sink[top[0]]),
                **logit_stats(weights, self._epoch_start.get(key)),
                **per_key,
            }
            prefix = "arch" if key == AGNOSTIC else f"arch/{key}"
            metrics.update({f"{prefix}/{k}": v for k, v in ent.items()})
            metrics.update({f"{prefix}/{k}": v for k, v in per_key.items()})
            metrics[f"{prefix}/top_sink"] = float(sink[top[0]])
        for name in ("grad_norm/net", "grad_norm/supergraph"):
            if record[name] is not None:
                metrics[f"arch/{name}"] = record[name]
        self._write(record)
        self._start_epoch(epoch + 1, int(trainer.config.epochs))

    def _write(self, record: Mapping[str, Any], suffix: str = "") -> None:
        if self.telemetry_path is None or not _is_main():
            return
        path = self.telemetry_path
        if suffix:
            path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
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
    factory = SupergraphFactory.from_config(space, config)
    search_spec = spec.replace(
        run_dir=str(run_dir / "search"), cell="none", op_channel_ratio=space.op_channel_ratio
    )
    train_ds, val_ds = build_datasets(search_spec)
    num_classes = spec.num_classes or int(train_ds.num_classes)  # type: ignore[attr-defined]
    input_shape = spec.input_shape or tuple(train_ds.clip_shape)  # type: ignore[attr-defined]
    search_spec = search_spec.replace(num_classes=num_classes, input_shape=input_shape)
    heldout = None
    if config.mode == "bilevel":
        train_ds, held_ds = split_dataset(train_ds, config.heldout_fraction, spec.seed)
        heldout = heldout_loader(held_ds, spec.train.batch_size, spec.seed + 1)
    state: dict[str, Any] = {}
    telemetry = run_dir / "telemetry.jsonl"

    def hooks(model: nn.Module) -> list[TrainerHook]:
        state["model"] = model
        state["arch_params"] = factory.attach(model)
        state["hook"] = ArchitectureStep(factory, config, alpha, beta, heldout, telemetry)
        return [state["hook"]]

    def exclude(model: nn.Module) -> list[nn.Parameter]:
        return state["arch_params"]

    if not spec.resume:
        telemetry.unlink(missing_ok=True)
        telemetry.with_name("telemetry_steps.jsonl").unlink(missing_ok=True)
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
    derived = None
    if config.selection in ("perturbation", "pruning"):
        derived = _select_by_perturbation(
            state["model"],
            factory.weights,
            positions,
            train_ds,
            val_ds,
            spec,
            alpha,
            beta,
            pruning=config.selection == "pruning",
        )
    elif config.selection == "oneshot":

        def train(cell: CellSpec, seeds: list[int]) -> list[float | None]:
            return [
                retrain_comparison(
                    spec.replace(train=spec.train.replace(seed=seed)),
                    {p: cell for p in positions},
                    (),
                    run_dir / "oneshot_retrain" / f"{cell.hash()}_seed{seed}",
                    space.op_channel_ratio,
                    num_classes,
                    input_shape,
                    op_params={t: space.op_params(t) for t in space.op_types},
                )["derived"].top1
                for seed in seeds
            ]

        model = state["model"]
        derived = _select_by_oneshot(model, space, config, positions, train_ds, val_ds, spec, train)
    cells, files = export_cells(factory.weights, alpha, beta, run_dir / "cells", positions, derived)
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


def _select_by_perturbation(
    model: nn.Module,
    weights: Mapping[str, ArchitectureWeights],
    positions: list[str],
    train_ds: Any,
    val_ds: Any,
    spec: TrialSpec,
    alpha: int,
    beta: int,
    pruning: bool = False,
) -> dict[str, CellSpec]:
    """``{position: cell}`` with the choices ranked by the trained network's validation loss
    without each (``attnas.supergraph.select``), BatchNorms re-estimated on the first training
    batches (unshuffled) for every evaluation; ``pruning``: the sink pruned one node at a time,
    the network re-adapted for an epoch of the search's training after each structural
    decision (``Readaptation``) and restored afterwards."""
    from attnas.supergraph.select import Readaptation, derive_by_position, supergraph_loss

    batch = spec.train.batch_size
    val = DataLoader(val_ds, batch_size=batch, shuffle=False)
    calibration = DataLoader(train_ds, batch_size=batch, shuffle=False)
    tune = Readaptation(model, train_ds, spec.train, seed=spec.seed) if pruning else None
    score = supergraph_loss(model, val, calibration)
    return derive_by_position(weights, positions, alpha, beta, score, tune)


def _select_by_oneshot(
    model: nn.Module,
    space: SearchSpace,
    config: DifferentiableSearchConfig,
    positions: list[str],
    train_ds: Any,
    val_ds: Any,
    spec: TrialSpec,
    train: Any,
) -> dict[str, CellSpec]:
    """``{position: cell}`` by one-shot selection (``attnas.supergraph.select.select_oneshot``),
    BatchNorms re-estimated on the first training batches (unshuffled) for every cell; the
    retrained candidates by ``train(cell, seeds)``."""
    from attnas.supergraph.select import select_oneshot

    batch = spec.train.batch_size
    val = DataLoader(val_ds, batch_size=batch, shuffle=False)
    calibration = DataLoader(train_ds, batch_size=batch, shuffle=False)
    cell = select_oneshot(model, space, config, val, calibration, spec.seed, train)
    return {p: cell for p in positions}


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
) -> Any:
    """``factory(name, shape)`` that inserts the cell derived for each position (a ``CellSet``).

    ``op_params`` are the space's per-type op options, the ones the supergraph's nodes were
    built with (so the retrained cell has the ops that were searched).
    """
    from attnas.cells import CellSet

    params = None if op_params is None else {t: dict(p) for t, p in op_params.items()}
    return CellSet(dict(cells), op_channel_ratio, params)


__all__ = [
    "AGNOSTIC",
    "MODES",
    "ArchitectureStep",
    "DifferentiableSearchConfig",
    "DifferentiableSearchResult",
    "SupergraphFactory",
    "derived_cell_factory",
    "export_cells",
    "retrain_comparison",
    "run_differentiable_search",
]
