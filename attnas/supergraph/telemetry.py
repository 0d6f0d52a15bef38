"""What the connection weights did during a search: gradient telemetry and a collapse monitor.

Two instruments, both plain data so that a report can be written from ``telemetry.jsonl`` alone:

- ``GradientMeter`` accumulates, over the steps of one epoch, the L2 norm of the gradient that
  reaches each kind of connection weight (``sink``, ``level``, ``act``) and of the network
  weights, the *coherence* of the connection-weight gradients (``‖Σ_t g_t‖ / Σ_t ‖g_t‖``: 1
  when every step pushes the same way, about ``1/√steps`` when the directions are random), and
  the largest change of any logit in one step. With Adam the size of a gradient hardly matters
  (each logit moves by about the learning rate per step whatever the scale), so coherence is
  what decides how far the logits travel: ``steps × lr`` when coherent, ``√steps × lr`` when
  not.
- ``collapse_summary`` reads the per-epoch records and says whether the search decided
  anything: the entropies of each softmax per epoch against uniform mixing, the sink
  probability of the top node, how many of the last epochs derived the same cell, and
  warnings.

Warning thresholds (module constants, arguments of ``collapse_summary``):

- ``MIN_ENTROPY_DROP = 0.1``: a softmax whose final entropy is above 90 % of the uniform
  entropy has not decided. For the 12-way sink of the paper's space that is a spread of the
  logits of about 0.7 (standard deviation), at which the top node weighs about twice the
  average; below it derivation is set by noise and tie-breaks. (The search-quality goal of
  issue 14 is far stricter, 0.7 × uniform; the warning only flags a search that learnt
  nothing.)
- ``STABLE_FRACTION = 0.2``: the derived cell should have stayed the same over the last 20 %
  of the epochs (at least the last two): otherwise a longer search could have derived another
  cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnas.supergraph.weights import ArchitectureWeights

GROUPS = {"sink": "w_sink", "level": "w_level", "act": "w_act"}
KINDS = ("sink", "level", "act")
MIN_ENTROPY_DROP = 0.1
STABLE_FRACTION = 0.2


def _norm(tensors: Iterable[torch.Tensor]) -> float:
    grads = [t.detach().float() for t in tensors]
    if not grads:
        return 0.0
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )


class GradientMeter:
    """Per-epoch gradient and update statistics of the connection weights and the network.

    Call ``add_weights`` once per step for every ``ArchitectureWeights`` (after unscaling, before
    the optimiser step), ``add_update`` after the step, ``add_norm`` for any other parameter
    set, then ``summary`` at the end of the epoch and ``reset``.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self._norm_sum: dict[str, float] = {}
        self._grad_sum: dict[str, torch.Tensor] = {}
        self._update_max: dict[str, float] = {}

    def add_weights(self, key: str, weights: ArchitectureWeights) -> None:
        """Record the current gradients of ``weights`` under ``key`` (a position)."""
        for kind, attr in GROUPS.items():
            param = getattr(weights, attr)
            if param.numel() == 0:
                continue
            g = torch.zeros_like(param) if param.grad is None else param.grad.detach()
            name = f"{key}/{kind}"
            self._norm_sum[name] = self._norm_sum.get(name, 0.0) + _norm([g])
            g = g.float().cpu()
            self._grad_sum[name] = self._grad_sum[name] + g if name in self._grad_sum else g

    def add_update(
        self, key: str, before: Mapping[str, torch.Tensor], weights: ArchitectureWeights
    ):
        """Record the largest one-step change of any logit, from ``before`` (``snapshot``)."""
        for kind, attr in GROUPS.items():
            param = getattr(weights, attr)
            if param.numel() == 0:
                continue
            change = float((param.detach() - before[kind]).abs().max())
            name = f"{key}/{kind}"
            self._update_max[name] = max(self._update_max.get(name, 0.0), change)

    def add_norm(self, name: str, tensors: Iterable[torch.Tensor | None]) -> None:
        """Record the L2 norm of a set of gradients (``None`` entries are skipped)."""
        norm = _norm(t for t in tensors if t is not None)
        self._norm_sum[name] = self._norm_sum.get(name, 0.0) + norm

    def step(self) -> None:
        """Close one training step."""
        self.steps += 1

    def summary(self) -> dict[str, float]:
        """``grad_norm/<name>`` (mean per-step L2 norm), ``grad_coherence/<key>/<kind>`` and
        ``max_step_update/<key>/<kind>`` of the steps since ``reset``."""
        if self.steps == 0:
            return {}
        out = {f"grad_norm/{k}": v / self.steps for k, v in self._norm_sum.items()}
        for name, total in self._grad_sum.items():
            norm_sum = self._norm_sum[name]
            coherence = float(torch.linalg.vector_norm(total)) / norm_sum if norm_sum > 0 else 0.0
            out[f"grad_coherence/{name}"] = coherence
        out.update({f"max_step_update/{k}": v for k, v in self._update_max.items()})
        return out


def snapshot(weights: ArchitectureWeights) -> dict[str, torch.Tensor]:
    """A copy of the logits of each kind (``sink``, ``level``, ``act``)."""
    return {kind: getattr(weights, attr).detach().clone() for kind, attr in GROUPS.items()}


def logit_stats(
    weights: ArchitectureWeights, start: Mapping[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """``logits/<kind>``: ``[min, max]`` of each kind's logits (the activation logits a node's
    type lacks are left out); ``epoch_update/<kind>``: the largest change of a logit since
    ``start``."""
    out: dict[str, Any] = {}
    for kind, attr in GROUPS.items():
        param = getattr(weights, attr).detach()
        if param.numel() == 0:
            continue
        values = param[:, weights.act_mask] if kind == "act" else param
        out[f"logits/{kind}"] = [float(values.min()), float(values.max())]
        if start is not None:
            out[f"epoch_update/{kind}"] = float((param - start[kind]).abs().max())
    return out


@dataclass(frozen=True)
class CollapseSummary:
    """Whether the connection weights of one position (``"all"``: position-agnostic) decided.

    Attributes:
        position: The weights' key.
        epochs: The recorded epochs (1-based).
        entropy: ``{kind: per-epoch mean entropy}`` for ``sink``, ``level``, ``act``.
        uniform: ``{kind: entropy of uniform mixing}`` (empty for records that lack it).
        top_sink_share: Per-epoch sink probability of the top node.
        cells: Per-epoch derived cell (canonical form).
        stable_epochs: How many of the last epochs derived the final cell.
        warnings: Human-readable warnings (empty: the search decided and settled).
    """

    position: str
    epochs: tuple[int, ...]
    entropy: dict[str, tuple[float, ...]]
    uniform: dict[str, float]
    top_sink_share: tuple[float, ...]
    cells: tuple[str, ...]
    stable_epochs: int
    warnings: tuple[str, ...]

    def entropy_ratio(self, kind: str) -> float | None:
        """Final entropy ÷ uniform entropy (1: learnt nothing; None when unknown)."""
        values, top = self.entropy.get(kind), self.uniform.get(kind)
        if not values or not top:
            return None
        return values[-1] / top


def collapse_summary(
    records: Sequence[Mapping[str, Any]],
    min_entropy_drop: float = MIN_ENTROPY_DROP,
    stable_fraction: float = STABLE_FRACTION,
) -> dict[str, CollapseSummary]:
    """The collapse monitor of every position in a search's per-epoch telemetry records.

    Args:
        records: ``telemetry.jsonl``'s lines, one per epoch, in order.
        min_entropy_drop: Warn when a softmax's final entropy fell by less than this fraction of
            the uniform entropy.
        stable_fraction: Warn when the derived cell changed within this last fraction of the
            epochs (at least the last two epochs must agree).

    Returns:
        ``{position: CollapseSummary}`` (empty for no records).
    """
    if not records:
        return {}
    out: dict[str, CollapseSummary] = {}
    epochs = tuple(int(r["epoch"]) for r in records)
    for key in records[-1]["positions"]:
        rows = [r["positions"][key] for r in records if key in r["positions"]]
        entropy = {
            kind: tuple(float(row[f"entropy/{kind}"]) for row in rows)
            for kind in KINDS
            if f"entropy/{kind}" in rows[-1]
        }
        uniform = {
            kind: float(rows[-1][f"entropy_max/{kind}"])
            for kind in entropy
            if f"entropy_max/{kind}" in rows[-1]
        }
        cells = tuple(str(row["cell"]) for row in rows)
        stable = 1
        while stable < len(cells) and cells[-stable - 1] == cells[-1]:
            stable += 1
        share = tuple(
            float(row.get("top_sink_share", max(row["top_sink"].values()))) for row in rows
        )
        warnings: list[str] = []
        for kind, values in entropy.items():
            if kind in uniform and uniform[kind] > 0:
                drop = 1 - values[-1] / uniform[kind]
                if drop < min_entropy_drop:
                    warnings.append(
                        f"{kind} entropy {values[-1]:.3f} is {100 * drop:.1f} % below uniform "
                        f"({uniform[kind]:.3f}), less than {100 * min_entropy_drop:.0f} %: the "
                        f"{kind} weights barely moved, so the derivation is set by noise and "
                        "tie-breaks"
                    )
        need = max(2, math.ceil(stable_fraction * len(cells)))
        if len(cells) < 2:
            warnings.append("only one epoch was recorded: the derived cell's stability is unknown")
        elif stable < need:
            warnings.append(
                f"the derived cell was still changing at the end: the final cell held for "
                f"{stable} of {len(cells)} epochs, fewer than the last {need} "
                f"({100 * stable_fraction:.0f} %, at least 2)"
            )
        out[key] = CollapseSummary(
            key, epochs[-len(rows) :], entropy, uniform, share, cells, stable, tuple(warnings)
        )
    return out
