"""Map-based attention (AttentionNAS Eq. 1 and 3).

``W = Diag(φ(G2(AvgPool(G1(f')))))``: G1 is a kernel-1 1D conv from the per-position feature
size D to C' (default C' = C_out); AvgPool averages each position's C' features, giving an
N-vector; G2 is an MLP N -> N (one hidden layer of ``max(8, N // 4)`` units with ReLU, the
SE-style reduction; the paper only says "multilayer perceptron"); φ turns the N scores into N
weights (softmax over the N positions). W is diagonal, so Eq. 3 is a per-position scaling of
G3's output and the N×N matrix is never formed. G1 and G2 depend on the feature shape (D and N),
so the op only accepts the shape it was built for. In the spatial case every frame gets its own
weights from the same G1, G2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnas.ops.base import MatrixAttention, per_position_linear, positions_and_features
from attnas.ops.registry import register_op
from attnas.space import OpSpec


@register_op("map")
class MapAttention(MatrixAttention):
    """Map-based attention over the op's dim.

    Args:
        spec: ``OpSpec("map", dim, activation)``.
        c_in: input channels.
        c_out: output channels (G3's).
        shape: input feature shape ``(C, T, H, W)``.
        inner_channels: C', G1's width (default: ``c_out``).
        hidden: G2's hidden width (default: ``max(8, N // 4)``).
    """

    def __init__(
        self,
        spec: OpSpec,
        c_in: int,
        c_out: int,
        shape: tuple[int, int, int, int],
        inner_channels: int | None = None,
        hidden: int | None = None,
    ):
        super().__init__(spec, c_in, c_out, shape)
        self.inner_channels = inner_channels or c_out
        self.num_positions, features = positions_and_features(spec.dim, self.shape)
        n = self.num_positions
        self.g1 = nn.Linear(features, self.inner_channels)
        self.g2 = nn.Sequential(
            nn.Linear(n, hidden or max(8, n // 4)),
            nn.ReLU(inplace=True),
            nn.Linear(hidden or max(8, n // 4), n),
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``G2(AvgPool(G1(f')))``: ``(B, C_in, T, H, W) -> (B', N)``."""
        g1 = per_position_linear(x, self.spec.dim, self.g1.weight, self.g1.bias)  # (B', N, C')
        return self.g2(g1.mean(dim=-1))  # (B', N)

    def attend(
        self,
        x: torch.Tensor,
        v2: torch.Tensor,
        weights: torch.Tensor | None,
        activations: Sequence[str],
    ) -> torch.Tensor:
        s = self.scores(x)  # (B', N)
        if weights is None:
            diag = self.activate(s, activations[0])
        else:
            diag = sum(wa * self.activate(s, a) for wa, a in zip(weights, activations))
        return diag.unsqueeze(-1) * v2  # (B', N, D_out)

    @staticmethod
    def activate(s: torch.Tensor, activation: str) -> torch.Tensor:
        """φ applied to the N scores ``(B', N)``."""
        if activation == "softmax":
            return s.softmax(dim=-1)
        if activation == "sigmoid":
            return s.sigmoid()
        if activation == "relu":
            return s.relu()
        if activation == "none":
            return s
        raise ValueError(f"map attention has no activation {activation!r}")
