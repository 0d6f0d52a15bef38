"""Connection weights of the supergraph (AttentionNAS Eq. 4–6), kept apart from network weights.

``ArchitectureWeights`` holds, for m levels of the same n (type, dim) nodes:

- ``w_level``: ``(m-1, n, n)``: node j at level i >= 2 mixes the outputs of level i-1 (Eq. 4);
- ``w_act``: ``(m, n, A)``: each node mixes its activations (Eq. 5); entries for activations a
  node's type does not support are masked out (A is the largest activation count);
- ``w_sink``: ``(m * n,)``: the sink's weights over every node (Eq. 6), level-major.

All three are logits; the probabilities are ``softmax(w / temperature)``. They start at zero
(uniform mixing), so derivation ties at initialisation resolve by the documented order.
Position-agnostic search shares one instance among every inserted supergraph;
position-specific search gives each insertion point its own, at the same compute.

The temperature may change during a search (``temperature_at`` gives a schedule's value per
epoch; the search hook sets it with ``set_temperature``): a high τ early keeps the mixture
close to uniform while the network learns, a low τ late makes the supergraph behave more like
the derived cell (SNAS and GDAS anneal it). Derivation reads the logits, so it does not depend
on τ; the entropies do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class ArchitectureWeights(nn.Module):
    """The supergraph's connection weights (logits) and their softmax probabilities.

    Args:
        levels: m, the number of levels.
        nodes: the n ``(type, dim)`` nodes of every level.
        activations: the activations of each node (same order as ``nodes``).
        temperature: softmax temperature τ (probabilities are ``softmax(w / τ)``).
        dirichlet: DrNAS-style mixing (Chen et al. 2021): the mixing weights of each row are a
            sample of ``Dirichlet(elu(w / τ) + 1)`` in a training forward (training mode with
            gradients enabled; reparameterised, so the logits get gradients; a fresh sample per
            call) and its mean otherwise (evaluation, derivation under ``no_grad``). The
            concentration is monotone in ``w``, so derivation reads the logits as before; the
            entropies are those of the mean.
        perturbation: SDARTS random smoothing (Chen & Hsieh 2020, SDARTS-RS): in a training
            forward each mixing weight gets independent uniform noise in ``[-ε, ε]`` (clamped
            at 0, not renormalised), so the network learns under nearby mixtures and the loss
            is smoothed around the weights. The noise is additive, so the gradient reaching
            the logits is that of the perturbed mixture's loss. 0: off.
        gumbel: GDAS-style hard sampling (Dong & Yang 2019): in a training forward each row's
            mixing weights are one-hot, a sample of ``Categorical(softmax(w / τ))`` drawn by
            the Gumbel-max trick, with the straight-through gradient of its Gumbel-softmax
            relaxation ``softmax(w / τ + g)`` (a fresh draw per call). Only the sampled
            choice contributes to the output (every node is still computed), but every
            choice's logit gets a gradient: that of swapping its term in, ``<∂L/∂y, term>``,
            which does not vanish when the network weights settle (as the softmax mixture's
            does, the sink weight's gradient being its convolution's scale gradient). The
            softmax otherwise. Not with ``dirichlet``.
    """

    def __init__(
        self,
        levels: int,
        nodes: Sequence[tuple[str, str]],
        activations: Sequence[Sequence[str]],
        temperature: float = 1.0,
        dirichlet: bool = False,
        perturbation: float = 0.0,
        gumbel: bool = False,
    ):
        super().__init__()
        if levels < 1:
            raise ValueError(f"ArchitectureWeights: levels must be >= 1, got {levels}")
        if len(nodes) != len(activations) or not nodes:
            raise ValueError("ArchitectureWeights: need one activation list per node (n >= 1)")
        self.levels = int(levels)
        self.nodes = [tuple(n) for n in nodes]
        self.activations = [tuple(a) for a in activations]
        self.temperature = float(temperature)
        self.dirichlet = bool(dirichlet)
        self.gumbel = bool(gumbel)
        if self.dirichlet and self.gumbel:
            raise ValueError("ArchitectureWeights: dirichlet and gumbel mixing exclude each other")
        if not perturbation >= 0:
            raise ValueError(f"ArchitectureWeights: perturbation must be >= 0, got {perturbation}")
        self.perturbation = float(perturbation)
        n = len(self.nodes)
        a_max = max(len(a) for a in self.activations)
        self.w_level = nn.Parameter(torch.zeros(max(self.levels - 1, 0), n, n))
        self.w_act = nn.Parameter(torch.zeros(self.levels, n, a_max))
        self.w_sink = nn.Parameter(torch.zeros(self.levels * n))
        mask = torch.zeros(n, a_max, dtype=torch.bool)
        for j, acts in enumerate(self.activations):
            mask[j, : len(acts)] = True
        self.register_buffer("act_mask", mask, persistent=False)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    def _mix(
        self, logits: torch.Tensor, mask: torch.Tensor | None, sample: bool | None
    ) -> torch.Tensor:
        """Mixing weights over the last axis: softmax, Dirichlet sample / mean, or a
        straight-through Gumbel one-hot sample; perturbed in a training forward when
        ``perturbation`` is set."""
        if sample is None:
            sample = self.training and torch.is_grad_enabled()
        probs = self._probs(logits, mask, sample)
        if sample and self.perturbation > 0:
            noise = torch.empty_like(probs).uniform_(-self.perturbation, self.perturbation)
            keep = probs > 0  # a masked or restricted-away entry stays at 0
            probs = torch.where(keep, (probs + noise).clamp_min(0.0), probs)
        return probs

    def _probs(self, logits: torch.Tensor, mask: torch.Tensor | None, sample: bool) -> torch.Tensor:
        if not self.dirichlet:
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            if sample and self.gumbel:  # one-hot forward, Gumbel-softmax backward (tau 1)
                return F.gumbel_softmax(logits / self.temperature, tau=1.0, hard=True, dim=-1)
            return torch.softmax(logits / self.temperature, dim=-1)
        concentration = (F.elu(logits / self.temperature) + 1).clamp_min(1e-6)
        if sample:
            rate = torch.ones_like(concentration)
            gamma = torch.distributions.Gamma(concentration, rate, validate_args=False)
            concentration = gamma.rsample()  # positive by construction: nothing to validate
            concentration = concentration.clamp_min(1e-12)
        # a -inf logit (a restriction to one cell) gets weight 0, as under the softmax
        off = torch.isneginf(logits) if mask is None else torch.isneginf(logits) | ~mask
        concentration = concentration.masked_fill(off, 0.0)
        return concentration / concentration.sum(dim=-1, keepdim=True)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """The evaluation-mode mixing weights of a row of logits (last axis): the softmax, or
        under Dirichlet mixing the Dirichlet mean. E.g. a cell's own edges, renormalised."""
        return self._mix(logits, None, sample=False)

    def level_probs(self, sample: bool | None = None) -> torch.Tensor:
        """``(m-1, n, n)``: row ``[i-2, j]`` is node j's distribution over level i-1.

        ``sample`` (Dirichlet or Gumbel mixing, perturbation): draw a sample (True) or take the
        mean / the softmax (False); None samples in training mode with gradients enabled."""
        return self._mix(self.w_level, None, sample)

    def act_probs(self, sample: bool | None = None) -> torch.Tensor:
        """``(m, n, A)`` activation probabilities (zero where a node lacks the activation)."""
        return self._mix(self.w_act, self.act_mask, sample)

    def sink_probs(self, sample: bool | None = None) -> torch.Tensor:
        """``(m * n,)`` sink probabilities, level-major."""
        return self._mix(self.w_sink, None, sample)

    def node_name(self, level: int, j: int) -> str:
        """``"L{level}.{type}/{dim}"`` with 1-based levels."""
        t, d = self.nodes[j]
        return f"L{level}.{t}/{d}"

    def entropies(self) -> dict[str, float]:
        """Mean entropy (nats) of each kind of softmax: a measure of how decided the search is."""

        def ent(p: torch.Tensor) -> float:
            p = p.detach()
            return float(-(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean())

        out = {
            "entropy/sink": ent(self.sink_probs(sample=False)),
            "entropy/act": ent(self.act_probs(sample=False)),
        }
        if self.levels > 1:
            out["entropy/level"] = ent(self.level_probs(sample=False))
        return out

    def max_entropies(self) -> dict[str, float]:
        """The entropies of uniform mixing (zero logits), keyed like ``entropies``: the values a
        search that learnt nothing ends at."""
        n = self.num_nodes
        out = {
            "entropy/sink": math.log(self.levels * n),
            "entropy/act": sum(math.log(len(a)) for a in self.activations) / n,
        }
        if self.levels > 1:
            out["entropy/level"] = math.log(n)
        return out

    def logsumexp_penalty(self) -> torch.Tensor:
        """β-decay regulariser (Ye et al. 2022): the mean over every softmax row (the sink, each
        node's predecessors, each node's activations) of ``log Σ exp(w)``. Its gradient is the
        row's softmax, so it pulls the largest logits down most: penalising it keeps any one
        choice from running away early (0-d tensor, differentiable in the logits)."""
        rows = [self.w_sink[None, :]]
        if self.levels > 1:
            rows.append(self.w_level.reshape(-1, self.num_nodes))
        act = self.w_act.masked_fill(~self.act_mask, float("-inf"))
        rows.append(act.reshape(-1, act.shape[-1]))
        values = torch.cat([torch.logsumexp(r, dim=-1) for r in rows])
        return values.mean()

    def entropy_penalty(self) -> torch.Tensor:
        """The mean over every row (sink, predecessors, activations) of the entropy (nats) of
        its evaluation-mode mixing weights, those the derivation and evaluation read (0-d
        tensor, differentiable in the logits). Penalising it pushes each row towards one
        choice."""
        rows = [self.sink_probs(sample=False)[None, :]]
        if self.levels > 1:
            rows.append(self.level_probs(sample=False).reshape(-1, self.num_nodes))
        act = self.act_probs(sample=False)
        rows.append(act.reshape(-1, act.shape[-1]))
        return torch.cat([-(r * torch.log(r.clamp_min(1e-30))).sum(-1) for r in rows]).mean()

    def set_temperature(self, temperature: float) -> None:
        """Change τ (e.g. once per epoch from ``temperature_at``)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (logits, node list, temperature) for JSON files and checkpoints."""
        return {
            "levels": self.levels,
            "nodes": [list(n) for n in self.nodes],
            "activations": [list(a) for a in self.activations],
            "temperature": self.temperature,
            "dirichlet": self.dirichlet,
            "perturbation": self.perturbation,
            "gumbel": self.gumbel,
            "w_level": self.w_level.detach().cpu().tolist(),
            "w_act": self.w_act.detach().cpu().tolist(),
            "w_sink": self.w_sink.detach().cpu().tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchitectureWeights:
        weights = cls(
            data["levels"],
            [tuple(n) for n in data["nodes"]],
            [tuple(a) for a in data["activations"]],
            data.get("temperature", 1.0),
            data.get("dirichlet", False),
            data.get("perturbation", 0.0),
            data.get("gumbel", False),
        )
        with torch.no_grad():
            for key in ("w_level", "w_act", "w_sink"):
                value = torch.tensor(data[key], dtype=torch.float32)
                getattr(weights, key).copy_(value.reshape(getattr(weights, key).shape))
        return weights

    def extra_repr(self) -> str:
        return (
            f"levels={self.levels}, nodes={len(self.nodes)}, temperature={self.temperature}, "
            f"dirichlet={self.dirichlet}, perturbation={self.perturbation}, gumbel={self.gumbel}"
        )


TEMPERATURE_SCHEDULES = ("constant", "linear", "exponential")


def temperature_at(
    epoch: int, epochs: int, start: float, end: float | None, schedule: str = "exponential"
) -> float:
    """The softmax temperature of search epoch ``epoch`` (0-based) of ``epochs``.

    ``start`` at the first epoch, ``end`` at the last, in between linearly or geometrically
    (``exponential``: ``start * (end / start) ** (epoch / (epochs - 1))``, the annealing of
    SNAS/GDAS). ``end=None`` or ``schedule="constant"`` keep ``start`` throughout; epochs
    outside ``[0, epochs - 1]`` take the nearer end's value.

    Raises:
        ValueError: For an unknown schedule or a temperature that is not > 0.
    """
    if schedule not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"temperature schedule must be one of {TEMPERATURE_SCHEDULES}")
    if start <= 0 or (end is not None and end <= 0):
        raise ValueError("temperatures must be > 0")
    if end is None or schedule == "constant":
        return float(start)
    progress = min(1.0, max(0.0, epoch / max(1, epochs - 1)))
    if schedule == "linear":
        return float(start + (end - start) * progress)
    return float(start * (end / start) ** progress)
