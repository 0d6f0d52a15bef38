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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class ArchitectureWeights(nn.Module):
    """The supergraph's connection weights (logits) and their softmax probabilities.

    Args:
        levels: m, the number of levels.
        nodes: the n ``(type, dim)`` nodes of every level.
        activations: the activations of each node (same order as ``nodes``).
        temperature: softmax temperature τ (probabilities are ``softmax(w / τ)``).
    """

    def __init__(
        self,
        levels: int,
        nodes: Sequence[tuple[str, str]],
        activations: Sequence[Sequence[str]],
        temperature: float = 1.0,
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

    def level_probs(self) -> torch.Tensor:
        """``(m-1, n, n)``: row ``[i-2, j]`` is node j's distribution over level i-1."""
        return torch.softmax(self.w_level / self.temperature, dim=-1)

    def act_probs(self) -> torch.Tensor:
        """``(m, n, A)`` activation probabilities (zero where a node lacks the activation)."""
        logits = self.w_act.masked_fill(~self.act_mask, float("-inf"))
        return torch.softmax(logits / self.temperature, dim=-1)

    def sink_probs(self) -> torch.Tensor:
        """``(m * n,)`` sink probabilities, level-major."""
        return torch.softmax(self.w_sink / self.temperature, dim=-1)

    def node_name(self, level: int, j: int) -> str:
        """``"L{level}.{type}/{dim}"`` with 1-based levels."""
        t, d = self.nodes[j]
        return f"L{level}.{t}/{d}"

    def entropies(self) -> dict[str, float]:
        """Mean entropy (nats) of each kind of softmax: a measure of how decided the search is."""

        def ent(p: torch.Tensor) -> float:
            p = p.detach()
            return float(-(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean())

        out = {"entropy/sink": ent(self.sink_probs()), "entropy/act": ent(self.act_probs())}
        if self.levels > 1:
            out["entropy/level"] = ent(self.level_probs())
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (logits, node list, temperature) for JSON files and checkpoints."""
        return {
            "levels": self.levels,
            "nodes": [list(n) for n in self.nodes],
            "activations": [list(a) for a in self.activations],
            "temperature": self.temperature,
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
        )
        with torch.no_grad():
            for key in ("w_level", "w_act", "w_sink"):
                value = torch.tensor(data[key], dtype=torch.float32)
                getattr(weights, key).copy_(value.reshape(getattr(weights, key).shape))
        return weights

    def extra_repr(self) -> str:
        return f"levels={self.levels}, nodes={len(self.nodes)}, temperature={self.temperature}"
