"""One-shot evaluation: cells scored by the weights they inherit from a trained supergraph.

A supergraph trained once holds a weight for every op of every cell of its space. A cell is
scored without training by restricting the supergraph to it and measuring validation top-1
and loss. That gives a ranking of hundreds of cells for the price of a few forward passes
each (the one-shot ranking, and a cheap fidelity for a searcher).

**Which weights a cell inherits.** Op k of the cell sits at level ``d_k`` = its depth (1 for
an op reading the cell input f0 alone, ``1 + max`` depth of its inputs otherwise), on the
node of its (type, dim); it takes that node's weights (G1, G2, G3) with the cell's own
activation. The connection weights are restricted to the cell: the softmax of each choice is
taken over the cell's entries only, so an activation or a single predecessor gets weight 1;
several predecessors and the output nodes share the trained probabilities renormalised over
them. The sink's 1×1×1 convs, scaled by those output weights, become the cell's output
projection, and the output BatchNorm is copied (``inherited_cell``).

**Cells the supergraph expresses.** When every op at level ``d >= 2`` reads only ops at level
``d - 1`` and no two ops sit on the same node, the supergraph with the restricted connection
weights (``restricted_weights``) computes exactly what the inherited cell computes
(``expresses``). Two other kinds of cells still get a score, by documented rules:

- two ops on one node (e.g. two ``dot/spatial`` ops reading f0 with different activations)
  share that node's weights, each with its own activation;
- an input with no edge in the supergraph (f0 read by an op at level 2 next to op 1, or an op
  two levels down) has no trained weights: its term is left out (its input weight and the
  cell's f0 projection are zero), so ``{f0, op 1}`` is scored like ``{op 1}``.

**BatchNorm.** The running statistics of the supergraph (its output BatchNorm, and those of
the layers after it, e.g. the readout) were accumulated under the full mixture of nodes, not
under one cell. ``evaluate_cells`` offers both common choices: ``batchnorm="keep"`` evaluates
with those statistics as they are; ``batchnorm="recalibrate"`` re-estimates every trainable
BatchNorm's statistics as the plain average over the same first ``calibration_batches``
batches of a training loader, for each cell (no gradient, no weight changes), and restores
the model's own statistics afterwards. BatchNorms of frozen modules (in eval mode while the
model trains) are left alone.

Public names: ``cell_nodes``, ``expresses``, ``restricted_weights``, ``inherited_cell``,
``cell_in_place``, ``recalibrate_batchnorm``, ``evaluate``, ``evaluate_recalibrated``,
``Evaluation``, ``evaluate_cells``, ``OneShotScore``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attnas.cells import AttentionCell
from attnas.space import CellSpec
from attnas.supergraph.graph import SuperGraph
from attnas.supergraph.weights import ArchitectureWeights

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BATCHNORM_MODES = ("keep", "recalibrate")
VIA = ("cell", "supergraph")


def _depths(cell: CellSpec) -> list[int]:
    """Depth of every node of the cell (index 0 is f0, at depth 0)."""
    depth = [0]
    for node in cell.ops:
        depth.append(1 + max(depth[i] for i in node.inputs))
    return depth


def cell_nodes(weights: ArchitectureWeights, cell: CellSpec) -> list[tuple[int, int]]:
    """The supergraph node ``(level, j)`` (1-based level) behind each op of ``cell``.

    Raises:
        ValueError: If an op is deeper than the supergraph's levels, or its (type, dim) or
            activation is not one of the supergraph's nodes.
    """
    depth = _depths(cell)
    nodes = []
    for k, node in enumerate(cell.ops, start=1):
        op = node.op
        if (op.type, op.dim) not in weights.nodes:
            raise ValueError(f"op {k} ({op}): the supergraph has no {op.type}/{op.dim} node")
        j = weights.nodes.index((op.type, op.dim))
        if op.activation not in weights.activations[j]:
            raise ValueError(f"op {k} ({op}): node {op.type}/{op.dim} lacks {op.activation}")
        if depth[k] > weights.levels:
            raise ValueError(
                f"op {k} ({op}) is at depth {depth[k]}; the supergraph has {weights.levels} levels"
            )
        nodes.append((depth[k], j))
    return nodes


def expresses(weights: ArchitectureWeights, cell: CellSpec) -> bool:
    """Whether the supergraph restricted to ``cell`` computes exactly that cell (see module)."""
    try:
        nodes = cell_nodes(weights, cell)
    except ValueError:
        return False
    depth = _depths(cell)
    edges_only = all(
        depth[i] == depth[k] - 1 for k, node in enumerate(cell.ops, start=1) for i in node.inputs
    )
    return edges_only and len(set(nodes)) == len(nodes)


def _restricted_logits(weights: ArchitectureWeights, cell: CellSpec) -> dict[str, torch.Tensor]:
    """``w_level``, ``w_act`` and ``w_sink`` with ``-inf`` off the cell's choices.

    Rows of nodes the cell does not use keep their logits (their outputs get sink weight 0),
    so no softmax is taken over ``-inf`` alone.
    """
    nodes = cell_nodes(weights, cell)
    depth = _depths(cell)
    n = weights.num_nodes
    off = float("-inf")
    level, act, sink = (
        w.detach().clone() for w in (weights.w_level, weights.w_act, weights.w_sink)
    )
    for k, node in enumerate(cell.ops, start=1):
        lv, j = nodes[k - 1]
        a = weights.activations[j].index(node.op.activation)
        act[lv - 1, j] = torch.where(
            torch.arange(act.shape[-1], device=act.device) == a, act[lv - 1, j], off
        )
        if lv >= 2:
            preds = [nodes[i - 1][1] for i in node.inputs if i > 0 and depth[i] == lv - 1]
            keep = torch.zeros(n, dtype=torch.bool, device=level.device)
            keep[preds] = True
            level[lv - 2, j] = level[lv - 2, j].masked_fill(~keep, off)
    keep = torch.zeros(weights.levels * n, dtype=torch.bool, device=sink.device)
    for o in cell.outputs:
        lv, j = nodes[o - 1]
        keep[(lv - 1) * n + j] = True
    return {"w_level": level, "w_act": act, "w_sink": sink.masked_fill(~keep, off)}


def restricted_weights(weights: ArchitectureWeights, cell: CellSpec) -> ArchitectureWeights:
    """A copy of ``weights`` whose softmaxes put all their mass on ``cell``'s choices.

    Each chosen entry keeps its trained logit, every other entry of the same softmax is
    ``-inf``: one activation per used node, the cell's predecessors per level-``>= 2`` node,
    the cell's output nodes in the sink. A supergraph run with them computes ``cell`` when it
    ``expresses`` it.
    """
    out = copy.deepcopy(weights)
    with torch.no_grad():
        for name, value in _restricted_logits(weights, cell).items():
            getattr(out, name).copy_(value)
    return out


def inherited_cell(supergraph: SuperGraph, cell: CellSpec) -> AttentionCell:
    """The ``AttentionCell`` of ``cell`` holding the weights it inherits from ``supergraph``.

    Args:
        supergraph: A trained ``SuperGraph`` (its ``arch_weights`` give the input and output
            weights, restricted to the cell as the module docstring says).
        cell: Any cell whose ops' (type, dim, activation) the supergraph's nodes have, at most
            ``levels`` deep.

    Returns:
        The cell, on the supergraph's device and dtype, in training mode like a new module.
    """
    aw = supergraph.arch_weights
    nodes = cell_nodes(aw, cell)
    depth = _depths(cell)
    result = AttentionCell(
        cell,
        supergraph.channels,
        supergraph.op_channels,
        supergraph.shape,
        op_params=getattr(supergraph, "op_params", None),
    )
    ref = next(supergraph.parameters())
    result.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for k, node in enumerate(cell.ops, start=1):
            lv, j = nodes[k - 1]
            result.ops[k - 1].load_state_dict(supergraph.node(lv, j).state_dict())
            if len(node.inputs) > 1:
                edges = [i for i in node.inputs if i > 0 and depth[i] == lv - 1]
                logits = torch.stack([aw.w_level[lv - 2, j, nodes[i - 1][1]] for i in edges])
                probs = dict(zip(edges, aw.mix(logits)))
                zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
                result.input_weights[str(k)].copy_(
                    torch.stack([probs.get(i, zero) for i in node.inputs])
                )
        if result.input_proj is not None:  # f0 next to an op: no trained counterpart
            nn.init.zeros_(result.input_proj.weight)
            nn.init.zeros_(result.input_proj.bias)
        sink_index = [(lv - 1) * aw.num_nodes + j for lv, j in (nodes[o - 1] for o in cell.outputs)]
        q = aw.mix(aw.w_sink[sink_index])  # (|outputs|,)
        convs = [supergraph.sink_conv(*nodes[o - 1]) for o in cell.outputs]
        result.out_conv.weight.copy_(torch.cat([p * c.weight for p, c in zip(q, convs)], dim=1))
        result.out_conv.bias.copy_(sum(p * c.bias for p, c in zip(q, convs)))
        result.out_norm.load_state_dict(supergraph.out_norm.state_dict())
    return result


def _supergraphs(model: nn.Module) -> dict[str, SuperGraph]:
    inserted = getattr(model, "inserted", {})
    found = {pos: m for pos, m in inserted.items() if isinstance(m, SuperGraph)}
    if not found:
        raise ValueError("the model holds no SuperGraph in model.inserted")
    return found


@contextmanager
def cell_in_place(model: nn.Module, cell: CellSpec, via: str = "cell") -> Iterator[nn.Module]:
    """The model restricted to ``cell`` for the duration of the ``with`` block.

    Args:
        model: A backbone with ``SuperGraph`` modules in ``model.inserted``.
        cell: The cell (the same at every position; a position-specific model restricts each
            position's own connection weights).
        via: ``"cell"`` swaps in each position's ``inherited_cell`` (cheap: only the cell's ops
            run); ``"supergraph"`` writes the ``restricted_weights`` logits into the
            connection weights in place (every node still runs; exact only for cells the
            supergraph ``expresses``).

    Yields:
        ``model`` itself; on exit its supergraphs and connection weights are restored.
    """
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}, got {via!r}")
    supergraphs = _supergraphs(model)
    if via == "cell":
        for pos, sg in supergraphs.items():
            model.inserted[pos] = inherited_cell(sg, cell).train(sg.training)
        try:
            yield model
        finally:
            for pos, sg in supergraphs.items():
                model.inserted[pos] = sg
        return
    distinct = {id(sg.arch_weights): sg.arch_weights for sg in supergraphs.values()}.values()
    saved = [
        {k: getattr(w, k).detach().clone() for k in ("w_level", "w_act", "w_sink")}
        for w in distinct
    ]
    try:
        with torch.no_grad():
            for w in distinct:
                for name, value in _restricted_logits(w, cell).items():
                    getattr(w, name).copy_(value)
        yield model
    finally:
        with torch.no_grad():
            for w, state in zip(distinct, saved):
                for name, value in state.items():
                    getattr(w, name).copy_(value)


def _trainable_norms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorms that train with the model (frozen modules keep theirs in eval mode)."""
    was_training = model.training
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.training]
    model.train(was_training)
    return norms


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable[Any], batches: int) -> int:
    """Re-estimate the running statistics of the model's trainable BatchNorms.

    The statistics are reset and set to the plain average over the first ``batches`` batches
    of ``loader`` (``momentum=None``), with every other module in eval mode and no weight
    changed. The model is left in eval mode.

    Returns:
        The number of batches used.
    """
    norms = _trainable_norms(model)
    model.eval()
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    try:
        for x, _ in islice(loader, batches):
            model(x.to(device))
            used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return used


@dataclass(frozen=True)
class Evaluation:
    """Top-1 and mean cross-entropy over a loader.

    Attributes:
        top1: Share of clips whose largest logit is the label (a clip with non-finite logits
            counts as an error).
        loss: Mean cross-entropy over the clips with finite logits (NaN if none).
        clips: Clips seen.
        nonfinite: Clips with non-finite logits.
    """

    top1: float
    loss: float
    clips: int
    nonfinite: int


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any]) -> Evaluation:
    """Evaluate ``model`` in eval mode over ``(x, y)`` batches (mode restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = loss = 0.0
    clips = nonfinite = 0
    try:
        for x, y in loader:
            y = y.to(device)
            logits = model(x.to(device)).double()  # (B, K)
            finite = torch.isfinite(logits).all(dim=1)  # (B,)
            hits += float(((logits.argmax(dim=1) == y) & finite).sum())
            if finite.any():
                loss += float(F.cross_entropy(logits[finite], y[finite], reduction="sum"))
            clips += int(y.numel())
            nonfinite += int((~finite).sum())
    finally:
        model.train(was_training)
    counted = clips - nonfinite
    return Evaluation(
        hits / clips if clips else math.nan,
        loss / counted if counted else math.nan,
        clips,
        nonfinite,
    )


@contextmanager
def _norms_restored(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm's state (running statistics included) as it was, after the block."""
    saved = {
        name: copy.deepcopy(m.state_dict())
        for name, m in model.named_modules()
        if isinstance(m, _NORMS)
    }
    try:
        yield
    finally:
        modules = dict(model.named_modules())
        for name, state in saved.items():
            modules[name].load_state_dict(state)


def evaluate_recalibrated(
    model: nn.Module,
    loader: Iterable[Any],
    calibration: Iterable[Any],
    calibration_batches: int = 4,
) -> Evaluation:
    """``evaluate`` with the trainable BatchNorms' statistics re-estimated first on
    ``calibration`` (``recalibrate_batchnorm``); the model's own statistics and mode are
    restored afterwards."""
    was_training = model.training
    try:
        with _norms_restored(model):
            recalibrate_batchnorm(model, calibration, calibration_batches)
            return evaluate(model, loader)
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class OneShotScore:
    """A cell's one-shot evaluation.

    Attributes:
        cell: The cell.
        top1: Validation top-1 with the inherited weights.
        loss: Validation loss.
        clips: Validation clips.
        nonfinite: Clips with non-finite logits.
        expressed: Whether the supergraph expresses the cell exactly (``expresses``).
    """

    cell: CellSpec
    top1: float
    loss: float
    clips: int
    nonfinite: int
    expressed: bool


def evaluate_cells(
    model: nn.Module,
    cells: Iterable[CellSpec],
    loader: Iterable[Any],
    *,
    batchnorm: str = "keep",
    calibration: Iterable[Any] | None = None,
    calibration_batches: int = 4,
    via: str = "cell",
    progress: Callable[[int, OneShotScore], None] | None = None,
) -> list[OneShotScore]:
    """Score every cell by the weights it inherits from the model's trained supergraphs.

    Args:
        model: A backbone with trained ``SuperGraph`` modules in ``model.inserted``.
        cells: The cells to score.
        loader: Validation ``(x, y)`` batches (the same for every cell).
        batchnorm: ``"keep"`` the trained running statistics, or ``"recalibrate"`` them per
            cell on ``calibration`` (see the module docstring).
        calibration: Training ``(x, y)`` batches, iterated afresh for every cell (a
            ``DataLoader`` without shuffling gives every cell the same batches).
        calibration_batches: Batches of ``calibration`` per cell.
        via: ``"cell"`` or ``"supergraph"`` (``cell_in_place``).
        progress: Called with the index and score of each cell as it is done.

    Returns:
        One ``OneShotScore`` per cell, in order. The model's weights, running statistics and
        mode are as they were.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    if batchnorm == "recalibrate" and calibration is None:
        raise ValueError('batchnorm="recalibrate" needs a calibration loader')
    weights = next(iter(_supergraphs(model).values())).arch_weights
    was_training = model.training
    scores = []
    try:
        for index, cell in enumerate(cells):
            with cell_in_place(model, cell, via):
                if batchnorm == "recalibrate":
                    assert calibration is not None
                    result = evaluate_recalibrated(model, loader, calibration, calibration_batches)
                else:
                    result = evaluate(model, loader)
            score = OneShotScore(
                cell, result.top1, result.loss, result.clips, result.nonfinite,
                expresses(weights, cell),
            )  # fmt: skip
            scores.append(score)
            if progress is not None:
                progress(index, score)
    finally:
        model.train(was_training)
    return scores


__all__ = [
    "BATCHNORM_MODES",
    "Evaluation",
    "OneShotScore",
    "cell_in_place",
    "cell_nodes",
    "evaluate",
    "evaluate_cells",
    "evaluate_recalibrated",
    "expresses",
    "inherited_cell",
    "recalibrate_batchnorm",
    "restricted_weights",
]
