"""Deriving a discrete cell from learned connection weights (AttentionNAS Sec. 4.2).

The paper's rule: the top-α nodes by sink weight form S; for every node in S at level i >= 2,
its top-β predecessors at level i-1 by level weight join S, recursively down to level 1; each
chosen node takes the activation with the largest weight.

Ties (e.g. at initialisation, where every weight is equal) are broken deterministically: among
equal sink weights the lower level wins, then the lower node index (the order of the space's
``supergraph.nodes``); among equal level weights the lower predecessor index; among equal
activation weights the activation listed first in the space.

The cell's ops are the nodes of S ordered by (level, index); a level-1 node reads f0, a node at
level i >= 2 reads its chosen predecessors; the cell outputs the α sink-chosen nodes. The
returned ``CellSpec.meta`` records α, β, the temperature and the probabilities behind every
choice, so an exported cell file says why it is what it is.

The same rule can rank the choices by other scores than the weights: ``ranking`` gives a score
per sink node, per predecessor and per activation (higher is chosen first; the same ties), e.g.
how much the trained supergraph's validation loss rises without each choice
(``attnas.supergraph.select``). The meta then records those scores beside the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from attnas.space import CellSpec, OpNode, OpSpec
from attnas.supergraph.weights import ArchitectureWeights


def _score(value: torch.Tensor) -> float | None:
    """A ranking score for the meta (None where it was not measured: NaN or -inf)."""
    v = float(value)
    return round(v, 6) if math.isfinite(v) else None


def top_indices(values: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest values; ties go to the lower index."""
    order = sorted(range(values.numel()), key=lambda i: (-float(values[i]), i))
    return order[:k]


RANKED = ("sink", "level", "act")


def derive_cell(
    weights: ArchitectureWeights,
    alpha: int,
    beta: int,
    ranking: Mapping[str, torch.Tensor] | None = None,
    method: str = "weights",
) -> CellSpec:
    """The discrete cell the connection weights select (top-α sink, top-β predecessors).

    Args:
        weights: learned connection weights.
        alpha: number of nodes the sink keeps (1 .. m·n).
        beta: predecessors each kept node at level >= 2 keeps (1 .. n).
        ranking: scores that rank the choices instead of the weights, by kind: ``"sink"``
            ``(m·n,)``, ``"level"`` ``(m-1, n, n)``, ``"act"`` ``(m, n, A)`` (the shapes of
            the probabilities; a kind left out is ranked by its weights). Only the rows the
            rule visits are read.
        method: what ranked the choices, recorded in ``meta`` (``"weights"`` when no ranking).

    Returns:
        The derived ``CellSpec``, with the choices' weights (and scores) in ``meta``.
    """
    m, n = weights.levels, weights.num_nodes
    if not 1 <= alpha <= m * n:
        raise ValueError(f"derive_cell: alpha must be in 1..{m * n}, got {alpha}")
    if not 1 <= beta <= n:
        raise ValueError(f"derive_cell: beta must be in 1..{n}, got {beta}")
    with torch.no_grad():
        sink = weights.sink_probs().cpu()
        level = weights.level_probs().cpu() if m > 1 else None
        act = weights.act_probs().cpu()
    ranking = {k: v.detach().cpu() for k, v in (ranking or {}).items()}
    if set(ranking) - set(RANKED):
        raise ValueError(f"derive_cell: ranking keys must be among {RANKED}, got {sorted(ranking)}")
    for key, probs in (("sink", sink), ("level", level), ("act", act)):
        if key in ranking and (probs is None or ranking[key].shape != probs.shape):
            shape = None if probs is None else tuple(probs.shape)
            raise ValueError(
                f"derive_cell: ranking[{key!r}] has shape {tuple(ranking[key].shape)}, "
                f"the weights' is {shape}"
            )
    rank_sink = ranking.get("sink", sink)
    rank_level = ranking.get("level", level)
    rank_act = ranking.get("act", act)
    chosen_sink = [(i // n + 1, i % n) for i in top_indices(rank_sink, alpha)]  # (level 1-based, j)
    selected: set[tuple[int, int]] = set()
    preds: dict[tuple[int, int], list[tuple[int, int]]] = {}
    stack = list(chosen_sink)
    while stack:
        node = stack.pop()
        if node in selected:
            continue
        selected.add(node)
        lv, j = node
        if lv >= 2:
            preds[node] = [(lv - 1, k) for k in top_indices(rank_level[lv - 2, j], beta)]
            stack.extend(preds[node])
    order = sorted(selected)
    index = {node: k for k, node in enumerate(order, start=1)}
    ops = []
    record: dict[str, Any] = {}
    for node in order:
        lv, j = node
        acts = weights.activations[j]
        a = top_indices(rank_act[lv - 1, j, : len(acts)], 1)[0]
        t, d = weights.nodes[j]
        inputs = (0,) if lv == 1 else tuple(sorted(index[p] for p in preds[node]))
        ops.append(OpNode(OpSpec(t, d, acts[a]), inputs))
        entry: dict[str, Any] = {
            "op": index[node],
            "activation_probs": {
                name: round(float(p), 6) for name, p in zip(acts, act[lv - 1, j, : len(acts)])
            },
        }
        if node in chosen_sink:
            entry["sink_prob"] = round(float(sink[(lv - 1) * n + j]), 6)
        if lv >= 2:
            entry["input_probs"] = {
                weights.node_name(lv - 1, k): round(float(level[lv - 2, j, k]), 6)
                for k, _ in enumerate(weights.nodes)
            }
        if "act" in ranking:
            entry["activation_scores"] = {
                name: _score(v) for name, v in zip(acts, rank_act[lv - 1, j, : len(acts)])
            }
        if "sink" in ranking and node in chosen_sink:
            entry["sink_score"] = _score(rank_sink[(lv - 1) * n + j])
        if "level" in ranking and lv >= 2:
            entry["input_scores"] = {
                weights.node_name(lv - 1, k): _score(rank_level[lv - 2, j, k])
                for k, _ in enumerate(weights.nodes)
            }
        record[weights.node_name(lv, j)] = entry
    outputs = tuple(sorted(index[node] for node in chosen_sink))
    meta = {
        "derivation": {
            "alpha": alpha,
            "beta": beta,
            "temperature": weights.temperature,
            "method": method,
            "sink_probs": {
                weights.node_name(i // n + 1, i % n): round(float(p), 6) for i, p in enumerate(sink)
            },
            "chosen": record,
        }
    }
    if "sink" in ranking:
        meta["derivation"]["sink_scores"] = {
            weights.node_name(i // n + 1, i % n): _score(v) for i, v in enumerate(rank_sink)
        }
    return CellSpec(tuple(ops), outputs, meta=meta)


def cell_from_supergraph(supergraph: Any, spec: CellSpec) -> Any:
    """An ``AttentionCell`` for a derived ``spec`` holding the supergraph's trained weights.

    Each op takes its node's G1/G2/G3; a node reading several predecessors takes their level
    probabilities as its input weights; the output conv is the chosen sink convs scaled by
    their sink probabilities (and their biases summed likewise); the BatchNorm is copied. So
    with one-hot connection weights the cell computes exactly what the supergraph computes.

    Args:
        supergraph: the trained ``SuperGraph`` (its ``arch_weights`` must be the ones that
            derived ``spec``).
        spec: a cell from ``derive_cell`` (its ``meta`` names the node behind every op).
    """
    from attnas.cells import AttentionCell

    chosen = spec.meta["derivation"]["chosen"]
    aw = supergraph.arch_weights
    names = {
        aw.node_name(lv, j): (lv, j) for lv in range(1, aw.levels + 1) for j in range(aw.num_nodes)
    }
    node_of_op = {entry["op"]: names[name] for name, entry in chosen.items()}
    cell = AttentionCell(
        spec,
        supergraph.channels,
        supergraph.op_channels,
        supergraph.shape,
        op_params=getattr(supergraph, "op_params", None),
    )
    ref = next(supergraph.parameters())
    cell.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        sink = aw.sink_probs()
        level = aw.level_probs() if aw.levels > 1 else None
        for k, node in enumerate(spec.ops, start=1):
            lv, j = node_of_op[k]
            src = supergraph.node(lv, j).state_dict()
            cell.ops[k - 1].load_state_dict(src)
            if len(node.inputs) > 1:
                pred_nodes = [node_of_op[i] for i in node.inputs]
                probs = torch.stack([level[lv - 2, j, pj] for _, pj in pred_nodes])
                cell.input_weights[str(k)].copy_(probs)
        weights, bias = [], 0
        for o in spec.outputs:
            lv, j = node_of_op[o]
            p = sink[(lv - 1) * aw.num_nodes + j]
            conv = supergraph.sink_conv(lv, j)
            weights.append(p * conv.weight)
            bias = bias + p * conv.bias
        cell.out_conv.weight.copy_(torch.cat(weights, dim=1))
        cell.out_conv.bias.copy_(bias)
        cell.out_norm.load_state_dict(supergraph.out_norm.state_dict())
    return cell
