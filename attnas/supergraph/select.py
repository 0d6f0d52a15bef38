"""Perturbation-based selection: the cell chosen by what the trained supergraph needs.

DARTS-PT (Wang et al. 2021, "Rethinking architecture selection in differentiable NAS") found
that the magnitude of a connection weight need not say how much the supernet relies on its
choice, and chose instead by how much the supernet's validation accuracy drops without each
choice. Here the search's own derivation rule (top-α sink nodes, top-β predecessors, one
activation per node; ``attnas.supergraph.derive``) keeps its shape; only what ranks the choices
changes. With ``score`` the trained network's validation loss (lower is better):

1. **Sink.** For each of the m·n nodes, the loss with that node's sink weight removed (its logit
   set to ``-inf``, the rest renormalised) minus the loss as trained: the larger the rise, the
   more the supergraph needs the node. The top-α by rise are kept; the sink is then fixed to
   them (every other sink logit ``-inf``).
2. **Predecessors.** For each kept node at level ≥ 2, the rise when each predecessor's level
   weight is removed; the top-β are kept and the node's row fixed to them. Their predecessors
   follow, level by level, as the derivation recurses.
3. **Activations.** For each node of the cell, the rise when each of its activations is
   removed; the largest is kept and the row fixed to it.

Each decision is fixed before the next is measured (DARTS-PT's progressive discretisation,
without its fine-tuning between decisions), so the later ones are measured on a network that
already looks like the cell: a predecessor of one of α sink nodes carries a share of about
1/α of the output, not 1/(m·n). Ties keep the derivation's order. The connection weights are
restored afterwards: the learned weights stay as they were, and the scores go into the derived
cell's ``meta`` (``derive_cell``'s ``ranking``).

The cost is one evaluation per choice measured: m·n for the sink, n per kept node at level
≥ 2, one per activation of each cell node (about 50 for the default space's α = 3, β = 1),
plus the one as trained. ``supergraph_loss`` is the score the searches use: the validation
loss with the trainable BatchNorms' statistics re-estimated on the first training batches for
every evaluation (as the one-shot scores are; under Dirichlet mixing the trained statistics
are those of sampled weights), the model's own statistics restored after each.

**Pruning** (``selection="pruning"``) is the same ranking with DARTS-PT's re-adaptation put
back: a ``Readaptation`` trains the network (not the connection weights) for one epoch of the
search's own training after every structural decision, so each later rise is measured on a
network that has learned to do without what was removed. The sink is then pruned one node at a
time, the node whose removal raises the loss least first, each removal followed by an epoch,
until α remain (m·n − α epochs and about m·n²/2 evaluations: 9 epochs and 72 evaluations for the
default space's α = 3); each predecessor row fixed is followed by an epoch too; activations are
chosen on the re-adapted network without further epochs. The network's weights and statistics
are restored afterwards (``Readaptation.restored``), so the trained supergraph is as it was.

**One-shot** (``selection="oneshot"``) drops the top-α / top-β rule: every cell of a set of
candidates small enough to enumerate (the search space's cells with ``oneshot_ops`` ops: its
1,452 distinct cells for ``attention_nas`` at 2 ops, the tabular benchmark's space) is scored by
the weights it inherits from the trained supergraph (``attnas.supergraph.oneshot``, BatchNorms
re-estimated per cell), and the best by validation top-1 is the derived cell (ties: the lower
validation loss, then the candidates' order). This is one-shot NAS as Bender et al. (2018,
"Understanding and simplifying one-shot architecture search") and SPOS (Guo et al. 2020) use
the supernet: as a cheap evaluator of whole cells, not a source of per-choice rankings. The
cost is one evaluation per candidate (about 0.4 s each on 2 CPU cores for the benchmark's 512
validation and 256 calibration clips); it picks one cell for every position, so it needs a
position-agnostic search. One-shot scores are noisy (Kendall τ about 0.05 against the table's
standalone means over all 1,452 cells, ``experiments/results/oneshot_ranking.md``) but their
best few are often good; with ``oneshot_retrain`` = k the k best by one-shot top-1 are trained
from scratch with fresh seeds and the best of those is derived, the supernet as a filter.

Public names: ``SELECTIONS``, ``perturbation_ranking``, ``derive_by_perturbation``,
``derive_by_position`` (either rule, a cell per position), ``supergraph_loss``,
``Readaptation``, ``oneshot_candidates``, ``derive_by_oneshot``, ``select_oneshot``,
``oneshot_seeds``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from attnas.space import CellSpec
from attnas.supergraph.derive import derive_cell, top_indices
from attnas.supergraph.weights import ArchitectureWeights

log = logging.getLogger(__name__)

SELECTIONS = ("weights", "perturbation", "pruning", "oneshot")
ONESHOT_LIMIT = 20_000  # candidates one-shot selection scores at most (about 2 CPU hours)
ONESHOT_KEEP = 10  # best candidates recorded in the derived cell's meta
LOGITS = ("w_level", "w_act", "w_sink")


@contextmanager
def _logits_restored(weights: ArchitectureWeights) -> Iterator[None]:
    saved = {k: getattr(weights, k).detach().clone() for k in LOGITS}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, value in saved.items():
                getattr(weights, k).copy_(value)


@contextmanager
def _removed(logits: torch.Tensor, index: tuple[int, ...]) -> Iterator[None]:
    """``logits[index]`` set to ``-inf`` for the duration of the block."""
    value = logits[index].detach().clone()
    with torch.no_grad():
        logits[index] = float("-inf")
    try:
        yield
    finally:
        with torch.no_grad():
            logits[index] = value


def _keep_only(row: torch.Tensor, keep: list[int]) -> None:
    """Fix a row of logits to ``keep`` (every other entry ``-inf``)."""
    off = torch.ones(row.numel(), dtype=torch.bool)
    off[keep] = False
    with torch.no_grad():
        row[off.to(row.device)] = float("-inf")


def perturbation_ranking(
    weights: ArchitectureWeights,
    score: Callable[[], float],
    alpha: int,
    beta: int,
    tune: Callable[[], Any] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rank the derivation's choices by the rise of ``score`` without each (see the module).

    Args:
        weights: The trained connection weights (changed during the call, restored after).
        score: The trained network's loss under the current connection weights (lower is
            better), e.g. ``supergraph_loss``.
        alpha: Sink nodes kept.
        beta: Predecessors kept per node at level ≥ 2.
        tune: Re-adapts the network to the connection weights as they are (e.g. a
            ``Readaptation``; it changes the network, which the caller restores). With it
            the sink is pruned one node at a time and every structural decision is followed
            by a call (the module's pruning); None: no re-adaptation.

    Returns:
        ``(ranking, record)``: the rises as ``derive_cell``'s ``ranking`` (``-inf`` where not
        measured; a pruned sink node ``-inf``, a kept one its rise in the last round), and a
        record of the scores as trained, after each stage, the number of evaluations and of
        re-adaptations, and (pruning) each pruned node with its rise and the loss after its
        re-adaptation.
    """
    m, n = weights.levels, weights.num_nodes
    if not 1 <= alpha <= m * n:
        raise ValueError(f"perturbation_ranking: alpha must be in 1..{m * n}, got {alpha}")
    if not 1 <= beta <= n:
        raise ValueError(f"perturbation_ranking: beta must be in 1..{n}, got {beta}")
    off = float("-inf")
    sink = torch.full((m * n,), off)
    level = torch.full((max(m - 1, 0), n, n), off)
    act = torch.full(tuple(weights.w_act.shape), off)
    evaluations = tunes = 0

    def measure() -> float:
        nonlocal evaluations
        evaluations += 1
        return float(score())

    def readapt() -> float:
        """Re-adapt (when tuning) and return the loss measured afterwards."""
        nonlocal tunes
        if tune is not None:
            tune()
            tunes += 1
        return measure()

    record: dict[str, Any] = {}
    with _logits_restored(weights):
        base = record["loss_as_trained"] = measure()
        alive = list(range(m * n))
        pruned: list[dict[str, Any]] = []
        while True:
            for i in alive:
                with _removed(weights.w_sink, (i,)):
                    sink[i] = measure() - base
            if tune is None or len(alive) <= alpha:
                break
            # the least needed goes; of equal rises the later one (ties keep derivation order)
            drop = min(alive, key=lambda i: (float(sink[i]), -i))
            rise = float(sink[drop])
            with torch.no_grad():
                weights.w_sink[drop] = off
            sink[drop] = off
            alive.remove(drop)
            base = readapt()
            node = weights.node_name(drop // n + 1, drop % n)
            pruned.append({"node": node, "rise": round(rise, 6), "loss_after": round(base, 6)})
            if len(alive) <= alpha:
                break
        kept = top_indices(sink, alpha)
        _keep_only(weights.w_sink, kept)
        nodes = [(i // n + 1, i % n) for i in kept]  # (level 1-based, j)
        if pruned:
            record["pruned"] = pruned
        base = record["loss_sink_fixed"] = measure()
        for lv in range(m, 1, -1):  # deepest first, as the derivation recurses
            for j in sorted({j for node_lv, j in nodes if node_lv == lv}):
                if n == 1:  # one predecessor: nothing to choose
                    level[lv - 2, j, 0] = 0.0
                    continue
                for k in range(n):
                    with _removed(weights.w_level, (lv - 2, j, k)):
                        level[lv - 2, j, k] = measure() - base
                preds = top_indices(level[lv - 2, j], beta)
                _keep_only(weights.w_level[lv - 2, j], preds)
                base = readapt()
                nodes.extend((lv - 1, k) for k in preds)
        record["loss_inputs_fixed"] = base
        for lv, j in sorted(set(nodes)):
            count = len(weights.activations[j])
            if count == 1:
                act[lv - 1, j, 0] = 0.0
                continue
            for a in range(count):
                with _removed(weights.w_act, (lv - 1, j, a)):
                    act[lv - 1, j, a] = measure() - base
            _keep_only(weights.w_act[lv - 1, j], top_indices(act[lv - 1, j, :count], 1))
            base = measure()
        record["loss_cell"] = base
    record["evaluations"] = evaluations
    record["readaptations"] = tunes
    ranking = {"sink": sink, "act": act}
    if m > 1:
        ranking["level"] = level
    return ranking, record


def derive_by_perturbation(
    weights: ArchitectureWeights,
    score: Callable[[], float],
    alpha: int,
    beta: int,
    tune: Callable[[], Any] | None = None,
) -> CellSpec:
    """The top-α / top-β cell with its choices ranked by ``perturbation_ranking`` (with
    ``tune``: pruned, the method ``"pruning"``); its ``meta["derivation"]`` holds the rises and
    ``["selection"]`` the losses behind them."""
    ranking, record = perturbation_ranking(weights, score, alpha, beta, tune)
    method = "perturbation" if tune is None else "pruning"
    cell = derive_cell(weights, alpha, beta, ranking, method=method)
    cell.meta["derivation"]["selection"] = {
        k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()
    }
    return cell


def derive_by_position(
    weights: Mapping[str, ArchitectureWeights],
    positions: Sequence[str],
    alpha: int,
    beta: int,
    score: Callable[[], float] | None = None,
    tune: Readaptation | None = None,
) -> dict[str, CellSpec]:
    """``{position: cell}`` derived with top-α / top-β from a search's connection weights: the
    shared weights' cell at every position (key ``"all"``), or each position's own. With
    ``score`` (the trained network's loss) the choices are ranked by perturbation
    (``derive_by_perturbation``) instead of by the weights, and with ``tune`` too by pruning,
    the network restored after each position's; position-specific weights are perturbed one
    position at a time, the others as learned."""
    from attnas.supergraph.export import AGNOSTIC

    if tune is not None and score is None:
        raise ValueError("derive_by_position: tune (pruning) needs a score")

    def derive(w: ArchitectureWeights) -> CellSpec:
        if score is None:
            return derive_cell(w, alpha, beta)
        if tune is None:
            return derive_by_perturbation(w, score, alpha, beta)
        with tune.restored():
            return derive_by_perturbation(w, score, alpha, beta, tune)

    derived = {key: derive(w) for key, w in weights.items()}
    return {p: derived[AGNOSTIC if AGNOSTIC in derived else p] for p in positions}


class Readaptation:
    """``tune()``: one epoch of the search network's own training with the connection weights as
    they are (fixed: they are left out of the optimiser), the pruning's re-adaptation.

    Each call builds a fresh ``Trainer`` for one epoch of ``config`` (no warm-up: the cosine
    schedule from the configured learning rate to its floor over the epoch), its data order
    seeded by ``(seed, call)``; the network's training-mode mixing is the search's own (a
    Dirichlet sample per forward under Dirichlet mixing). ``restored()`` puts the network's
    weights and statistics back as they were when the block began.

    Args:
        model: The trained search network (its connection weights as ``model.architecture``).
        train_data: The training clips the network was trained on.
        config: The search's ``TrainConfig`` (its seed is replaced by each call's).
        exclude: The connection weights, left out of the optimiser (None: the parameters of
            ``model.architecture``).
        seed: Seed of the data orders.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Any,
        config: Any,
        exclude: Sequence[nn.Parameter] | None = None,
        seed: int = 0,
    ) -> None:
        if exclude is None:
            exclude = list(model.architecture.parameters())
        self.model, self.train_data, self.config = model, train_data, config
        self.exclude, self.seed, self.calls = list(exclude), int(seed), 0

    def __call__(self) -> float:
        """One epoch; returns its training loss."""
        from attnas.train import derive_seed
        from attnas.train.trainer import Trainer

        self.calls += 1
        seed = derive_seed(self.seed, "readaptation", self.calls)
        config = self.config.replace(epochs=1, warmup_epochs=0, seed=seed)
        trainer = Trainer(
            self.model, self.train_data, None, config, exclude_parameters=self.exclude, seed=seed
        )
        return float(trainer.fit()[-1]["train_loss"])

    @contextmanager
    def restored(self) -> Iterator[None]:
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        mode = self.model.training
        try:
            yield
        finally:
            self.model.load_state_dict(saved)
            self.model.train(mode)


def supergraph_loss(
    model: nn.Module,
    loader: Iterable[Any],
    calibration: Iterable[Any],
    calibration_batches: int = 4,
) -> Callable[[], float]:
    """``score()``: the model's validation loss over ``loader`` with its trainable BatchNorms'
    statistics re-estimated on the first ``calibration_batches`` of ``calibration`` (iterated
    afresh each time: unshuffled, every evaluation sees the same batches); the model's own
    statistics, mode and weights are as they were after every call."""
    from attnas.supergraph.oneshot import evaluate_recalibrated

    def score() -> float:
        return evaluate_recalibrated(model, loader, calibration, calibration_batches).loss

    return score


def _compact(cell: CellSpec) -> str:
    """``"dot/spatial/relu(0); map/temporal/none(0,1)"``: each op and the nodes it reads."""
    return "; ".join(f"{n.op}({','.join(map(str, n.inputs))})" for n in cell.ops)


def oneshot_candidates(space: Any, num_ops: int, limit: int = ONESHOT_LIMIT) -> list[CellSpec]:
    """The distinct cells (one per canonical hash, in enumeration order) of ``space`` with
    ``num_ops`` ops: what ``selection="oneshot"`` scores.

    Raises:
        ValueError: When there are more than ``limit`` cell vectors (naming ``oneshot_ops``).
    """
    from attnas.benchmark.build import distinct_cells

    if num_ops < 1:
        raise ValueError(f"oneshot_ops must be >= 1, got {num_ops}")
    candidates = dataclasses.replace(space, num_ops=num_ops)
    if candidates.size() > limit:
        raise ValueError(
            f"oneshot_ops={num_ops}: space {space.name!r} has {candidates.size():,} cells with "
            f"{num_ops} ops, more than the {limit:,} one-shot selection scores"
        )
    return distinct_cells(candidates)


def derive_by_oneshot(
    model: nn.Module,
    candidates: Sequence[CellSpec],
    loader: Iterable[Any],
    calibration: Iterable[Any],
    calibration_batches: int = 4,
    keep: int = ONESHOT_KEEP,
    retrain: Callable[[CellSpec], Sequence[float | None]] | None = None,
    retrain_top: int = 0,
) -> CellSpec:
    """The candidate that scores best by the weights it inherits from ``model``'s trained
    supergraph (position-agnostic): the highest validation top-1 over ``loader`` with the
    trainable BatchNorms re-estimated on the first ``calibration_batches`` of ``calibration``
    per cell (``oneshot.evaluate_cells``); ties go to the lower loss, then the earlier
    candidate. With ``retrain`` and ``retrain_top`` > 0, the ``retrain_top`` best of them are
    trained from scratch (``retrain(cell)``: the validation top-1 of each of its trials, None
    for a failed one) and the one with the best mean is derived (ties: the one-shot order; a
    candidate with a failed trial is out). Its ``meta["derivation"]`` (method
    ``"oneshot"``) holds the number of candidates, the supergraph node behind each op, the best
    ``keep`` candidates' scores and, when retrained, each retrained candidate's mean
    (``"retrained"``). The model is as it was afterwards."""
    from attnas.supergraph.oneshot import _supergraphs, cell_nodes, evaluate_cells

    supergraphs = _supergraphs(model)
    if len({id(sg.arch_weights) for sg in supergraphs.values()}) > 1:
        raise ValueError("one-shot selection picks one cell for every position: it needs a "
                         "position-agnostic search (position_specific: false)")  # fmt: skip
    if not candidates:
        raise ValueError("one-shot selection: no candidate cells")
    every = max(1, len(candidates) // 10)

    def progress(index: int, score: Any) -> None:
        if (index + 1) % every == 0 or index + 1 == len(candidates):
            log.info("one-shot selection: scored %d of %d cells", index + 1, len(candidates))

    scores = evaluate_cells(
        model,
        candidates,
        loader,
        batchnorm="recalibrate",
        calibration=calibration,
        calibration_batches=calibration_batches,
        progress=progress,
    )

    def key(i: int) -> tuple[float, float, int]:
        s = scores[i]
        top1 = s.top1 if math.isfinite(s.top1) else -math.inf
        return -top1, s.loss if math.isfinite(s.loss) else math.inf, i

    order = sorted(range(len(scores)), key=key)
    retrained: list[dict[str, Any]] = []
    if retrain is not None and retrain_top > 0:
        for i in order[:retrain_top]:
            trials = list(retrain(scores[i].cell))
            ok = trials and all(t is not None for t in trials)
            mean = sum(trials) / len(trials) if ok else math.nan  # type: ignore[arg-type]
            retrained.append(
                {"index": i, "hash": scores[i].cell.hash(), "retrained": mean, "trials": trials}
            )
            log.info(
                "one-shot selection: retrained candidate %d of %d (one-shot top-1 %.4f): "
                "mean top-1 %.4f", len(retrained), retrain_top, scores[i].top1, mean,
            )  # fmt: skip
        finite = [r for r in retrained if math.isfinite(r["retrained"])]
        if not finite:
            raise RuntimeError("one-shot selection: every retrained candidate failed")
        best = scores[max(finite, key=lambda r: r["retrained"])["index"]].cell  # first of ties
    else:
        best = scores[order[0]].cell
    weights = next(iter(supergraphs.values())).arch_weights
    nodes = {k: weights.node_name(lv, j) for k, (lv, j) in enumerate(cell_nodes(weights, best), 1)}
    meta = {
        "derivation": {
            "method": "oneshot",
            "candidates": len(scores),
            "temperature": weights.temperature,
            "nodes": nodes,
            "ranked": [
                {
                    "hash": scores[i].cell.hash(),
                    "cell": _compact(scores[i].cell),
                    "top1": round(scores[i].top1, 6),
                    "loss": round(scores[i].loss, 6),
                }
                for i in order[:keep]
            ],
        }
    }
    if retrained:
        meta["derivation"]["retrained"] = [
            {"hash": r["hash"], "top1": round(r["retrained"], 6), "trials": r["trials"]}
            for r in retrained
        ]
    return dataclasses.replace(best, meta=meta)


def select_oneshot(
    model: nn.Module,
    space: Any,
    config: Any,
    loader: Iterable[Any],
    calibration: Iterable[Any],
    seed: int,
    train: Callable[[CellSpec, list[int]], Sequence[float | None]] | None = None,
) -> CellSpec:
    """``derive_by_oneshot`` as a search configures it (``DifferentiableSearchConfig``): the
    space's cells with ``config.oneshot_ops`` ops, and with ``config.oneshot_retrain`` that many
    of the best trained by ``train(cell, seeds)`` (each seed's val top-1, None for a failed
    trial) with ``config.oneshot_retrain_seeds`` seeds derived from the search ``seed``."""
    seeds = oneshot_seeds(seed, config.oneshot_retrain_seeds)
    return derive_by_oneshot(
        model,
        oneshot_candidates(space, config.oneshot_ops),
        loader,
        calibration,
        retrain=None if train is None else lambda cell: train(cell, seeds),
        retrain_top=config.oneshot_retrain,
    )


def oneshot_seeds(seed: int, n: int) -> list[int]:
    """The ``n`` training seeds of the candidates one-shot selection retrains, derived from the
    search seed (so neither the table's small seeds nor a run's own retraining seeds)."""
    from attnas.train import derive_seed

    return [derive_seed(seed, "oneshot_retrain", i) for i in range(n)]


__all__ = [
    "ONESHOT_LIMIT",
    "SELECTIONS",
    "Readaptation",
    "derive_by_oneshot",
    "derive_by_perturbation",
    "derive_by_position",
    "oneshot_candidates",
    "oneshot_seeds",
    "perturbation_ranking",
    "select_oneshot",
    "supergraph_loss",
]
