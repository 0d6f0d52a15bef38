"""The supergraph (AttentionNAS Sec. 4.2, Fig. 2): every cell of a space as one network.

m levels of the same n nodes, each a fixed (type, dim) attention op. Level 1 reads f0; node j at
level i >= 2 reads ``Σ_k p_level[i, j, k] · out[i-1, k]`` (Eq. 4); each node returns
``Σ_a p_act[i, j, a] · op_a(input)`` (Eq. 5) through the ops' multi-activation path (G1, G2,
G3 and the similarity computed once per node, one product with the value); the sink is
``Σ p_sink[i, j] · G_ij(out[i, j])`` (Eq. 6) with G_ij a 1×1×1 conv C_op -> C, then a
BatchNorm whose weight starts at zero, and the residual: at initialisation the supergraph is
the identity map.

Work shared across nodes, so that search costs about one training run:

- every level-1 node reads f0, so their value projections G3 run as one convolution
  (their weights concatenated; each node keeps its own G3, which a derived cell inherits);
- the sink's n·m convolutions and the weighted sum are one convolution over the weighted
  concatenation of node outputs (Σ_ij p_ij (W_ij o_ij + b_ij) = [W_ij] · [p_ij o_ij] + Σ p_ij b_ij).

The connection weights are not parameters of this module's own: an ``ArchitectureWeights`` is
passed in (shared by all supergraphs of a backbone for position-agnostic search, one per
position for position-specific search) and registered as a non-owned reference, so network
optimisers built from ``network_parameters()`` never see it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attnas.ops import AttentionOp, MatrixAttention, build_op
from attnas.space import OpSpec, SearchSpace
from attnas.supergraph.weights import ArchitectureWeights


class SuperGraph(nn.Module):
    """Supergraph for feature maps of ``shape = (C, T, H, W)``.

    Args:
        levels: m.
        nodes: the n ``(type, dim)`` nodes of each level.
        channels: C.
        op_channels: C_op, every node's output channels.
        shape: ``(C, T, H, W)``.
        activations: each node's activations (same order as ``nodes``).
        arch_weights: the connection weights to use (shared or per position); a new one is
            made when omitted.
        op_params: per-type options for ``build_op``.

    Shape:
        ``(B, C, T, H, W) -> (B, C, T, H, W)``.
    """

    def __init__(
        self,
        levels: int,
        nodes: Sequence[tuple[str, str]],
        channels: int,
        op_channels: int,
        shape: tuple[int, int, int, int],
        activations: Sequence[Sequence[str]],
        arch_weights: ArchitectureWeights | None = None,
        op_params: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if shape[0] != channels:
            raise ValueError(f"SuperGraph: shape {shape} has C={shape[0]} but channels={channels}")
        self.levels = levels
        self.node_types = [tuple(n) for n in nodes]
        self.node_activations = [tuple(a) for a in activations]
        self.channels = channels
        self.op_channels = op_channels
        self.shape = shape
        if arch_weights is None:
            arch_weights = ArchitectureWeights(levels, self.node_types, self.node_activations)
        if (arch_weights.levels, arch_weights.nodes, arch_weights.activations) != (
            levels,
            self.node_types,
            self.node_activations,
        ):
            raise ValueError("SuperGraph: arch_weights were made for another supergraph shape")
        # Stored outside _modules: the weights belong to the search, not to this network.
        object.__setattr__(self, "arch_weights", arch_weights)
        op_params = {ty: dict(params) for ty, params in (op_params or {}).items()}
        # kept so that a derived cell is built with the same op options (cell_from_supergraph)
        self.op_params = op_params
        _, t, h, w = shape
        self.nodes = nn.ModuleList()
        for level in range(levels):
            c_in = channels if level == 0 else op_channels
            row = nn.ModuleList(
                build_op(
                    OpSpec(ty, dim, acts[0]),
                    c_in,
                    op_channels,
                    (c_in, t, h, w),
                    **dict(op_params.get(ty, {})),
                )
                for (ty, dim), acts in zip(self.node_types, self.node_activations)
            )
            self.nodes.append(row)
        n_total = levels * len(self.node_types)
        self.sink_convs = nn.ModuleList(
            nn.Conv3d(op_channels, channels, kernel_size=1) for _ in range(n_total)
        )
        self.out_norm = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.out_norm.weight)

    @classmethod
    def from_space(
        cls,
        space: SearchSpace,
        channels: int,
        shape: tuple[int, int, int, int],
        arch_weights: ArchitectureWeights | None = None,
    ) -> SuperGraph:
        """The supergraph a search space describes (its nodes, levels and activations)."""
        nodes = list(space.supergraph.nodes)
        return cls(
            space.supergraph.levels,
            nodes,
            channels,
            space.op_channels(channels),
            shape,
            [space.activations_for(t) for t, _ in nodes],
            arch_weights=arch_weights,
            op_params={t: space.op_params(t) for t in space.op_types},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"SuperGraph was built for (B, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}"
            )
        aw = self.arch_weights
        act_p = aw.act_probs()  # (m, n, A)
        level_p = aw.level_probs() if self.levels > 1 else None  # (m-1, n, n)
        sink_p = aw.sink_probs()  # (m*n,)
        outs: list[torch.Tensor] = []
        prev: torch.Tensor | None = None
        for level, row in enumerate(self.nodes):
            values = self._shared_values(row, x) if level == 0 else {}
            level_outs = []
            for j, op in enumerate(row):
                if level == 0:
                    inp = x
                else:
                    inp = torch.einsum("k,kbcthw->bcthw", level_p[level - 1, j], prev)
                acts = self.node_activations[j]
                weights = act_p[level, j, : len(acts)]
                level_outs.append(op.forward_mixed(inp, weights, acts, value=values.get(j)))
            prev = torch.stack(level_outs)  # (n, B, C_op, T, H, W)
            outs.extend(level_outs)
        weighted = torch.cat([p * o for p, o in zip(sink_p, outs)], dim=1)  # (B, m*n*C_op, T, H, W)
        weight = torch.cat([conv.weight for conv in self.sink_convs], dim=1)  # (C, m*n*C_op, 1,1,1)
        bias = torch.stack([conv.bias for conv in self.sink_convs]).T @ sink_p  # (C,)
        fused = F.conv3d(weighted, weight, bias)  # (B, C, T, H, W)
        return x + self.out_norm(fused)

    def _shared_values(self, row: nn.ModuleList, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """G3 of every level-1 op with a value projection, computed as one convolution."""
        idx = [j for j, op in enumerate(row) if isinstance(op, MatrixAttention)]
        if not idx:
            return {}
        weight = torch.cat([row[j].g3.weight for j in idx])  # (k*C_op, C, 1, 1, 1)
        bias = torch.cat([row[j].g3.bias for j in idx])
        values = F.conv3d(x, weight, bias).split(self.op_channels, dim=1)  # k x (B, C_op, ...)
        return dict(zip(idx, values))

    def node(self, level: int, j: int) -> AttentionOp:
        """The op at 1-based ``level`` and 0-based index ``j``."""
        return self.nodes[level - 1][j]

    def sink_conv(self, level: int, j: int) -> nn.Conv3d:
        return self.sink_convs[(level - 1) * len(self.node_types) + j]

    def network_parameters(self) -> list[nn.Parameter]:
        """This module's own (network) parameters; never the connection weights."""
        return list(self.parameters())

    def extra_repr(self) -> str:
        return (
            f"levels={self.levels}, nodes={['/'.join(n) for n in self.node_types]}, "
            f"channels={self.channels}, op_channels={self.op_channels}, shape={self.shape}"
        )
