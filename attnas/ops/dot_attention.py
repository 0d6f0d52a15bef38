"""Dot-product attention (AttentionNAS Eq. 2–3).

``W = φ(G1(f') G2(f')ᵀ · C'^-1/2)`` with G1, G2 kernel-1 1D convs (with bias) from the
per-position feature size D to C' (default C' = C_out, so that the op with
(spatiotemporal, softmax) is the non-local block's embedded-Gaussian attention with θ = G1,
φ = G2, g = G3). The C'^-1/2 scale is the one the non-local block's official code uses. For
``none`` and ``relu`` the product is also divided by N, the number of attended positions (the
non-local paper's dot-product normalisation), so the output scale does not grow with N.
``softmax`` normalises each row (over the attended positions), ``sigmoid`` is elementwise.

A single softmax goes through ``torch.nn.functional.scaled_dot_product_attention`` (a fused
kernel that never materialises the N×N weights where the backend allows); every other
activation, and any mix of them, forms W explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from attnas.ops.base import MatrixAttention, per_position_linear, positions_and_features
from attnas.ops.registry import register_op
from attnas.space import OpSpec


@register_op("dot")
class DotAttention(MatrixAttention):
    """Dot-product attention over the op's dim.

    Args:
        spec: ``OpSpec("dot", dim, activation)``.
        c_in: input channels.
        c_out: output channels (G3's).
        shape: input feature shape ``(C, T, H, W)``.
        inner_channels: C', the width of G1 and G2 (default: ``c_out``).
    """

    def __init__(
        self,
        spec: OpSpec,
        c_in: int,
        c_out: int,
        shape: tuple[int, int, int, int],
        inner_channels: int | None = None,
    ):
        super().__init__(spec, c_in, c_out, shape)
        self.inner_channels = inner_channels or c_out
        self.num_positions, features = positions_and_features(spec.dim, self.shape)
        self.g1 = nn.Linear(features, self.inner_channels)
        self.g2 = nn.Linear(features, self.inner_channels)

    def attend(
        self,
        x: torch.Tensor,
        v2: torch.Tensor,
        weights: torch.Tensor | None,
        activations: Sequence[str],
    ) -> torch.Tensor:
        q = per_position_linear(x, self.spec.dim, self.g1.weight, self.g1.bias)  # (B', N, C')
        k = per_position_linear(x, self.spec.dim, self.g2.weight, self.g2.bias)  # (B', N, C')
        scale = self.inner_channels**-0.5
        if weights is None and activations[0] == "softmax":
            # contiguous (B', 1, N, d) inputs let PyTorch pick its fused flash kernel on CPU
            # (a 3-D or strided input falls back to the math path, which forms the N×N matrix)
            q, k, v2 = (t.contiguous()[:, None] for t in (q, k, v2))  # (B', 1, N, d)
            return F.scaled_dot_product_attention(q, k, v2, scale=scale)[:, 0]  # (B', N, D_out)
        sim = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B', N, N)
        if weights is None:
            attn = self.activate(sim, activations[0])
        else:
            attn = self.mix(sim, weights, activations)
        return torch.matmul(attn, v2)  # (B', N, D_out)

    def mix(
        self, sim: torch.Tensor, weights: torch.Tensor, activations: Sequence[str]
    ) -> torch.Tensor:
        """``Σ_a w_a φ_a(sim)`` accumulated with fused multiply-adds over ``(B', N, N)``.

        Equals the plain sum (up to rounding) with one pass per activation plus one
        ``addcmul`` each, instead of separate scale, multiply and add passes.
        """
        out: torch.Tensor | None = None
        for wa, a in zip(weights, activations):
            if a in ("none", "relu"):
                term, coef = (sim if a == "none" else sim.relu()), wa / self.num_positions
            else:
                term, coef = self.activate(sim, a), wa
            out = term * coef if out is None else torch.addcmul(out, term, coef)
        assert out is not None
        return out

    def activate(self, sim: torch.Tensor, activation: str) -> torch.Tensor:
        """φ applied to the scaled similarity matrix ``(B', N, N)``."""
        if activation == "softmax":
            return sim.softmax(dim=-1)
        if activation == "sigmoid":
            return sim.sigmoid()
        if activation == "relu":
            return sim.relu() / self.num_positions
        if activation == "none":
            return sim / self.num_positions
        raise ValueError(f"dot attention has no activation {activation!r}")
