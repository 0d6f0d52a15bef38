"""The base class of attention ops and the ReshapeTo2D views (AttentionNAS Eq. 1–3).

Every op maps ``(B, C_in, T, H, W) -> (B, C_out, T, H, W)`` for the feature shape it was built
for. ``forward_mixed`` returns the output under a weighted mix of activations (the supergraph's
Eq. 5); ops whose attention weights W enter Eq. 3 linearly override it to mix on W and multiply
by the value once, which equals the naive per-activation sum exactly.

ReshapeTo2D, per batch element, with N positions of D features each:

- temporal: ``(T, H*W*C)``: N = T.
- spatiotemporal: ``(T*H*W, C)``: N = T*H*W.
- spatial: one ``(H*W, C)`` map per frame: frames are folded into the batch, N = H*W.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from attnas.space import OpSpec


class AttentionOp(nn.Module):
    """Base class of registered attention ops.

    Args:
        spec: the op's (type, dim, activation).
        c_in: input channels.
        c_out: output channels.
        shape: the input feature shape ``(C, T, H, W)``.
    """

    op_type: ClassVar[str] = ""

    def __init__(self, spec: OpSpec, c_in: int, c_out: int, shape: tuple[int, int, int, int]):
        super().__init__()
        self.spec = spec
        self.c_in = c_in
        self.c_out = c_out
        self.shape = tuple(shape)

    @property
    def dim(self) -> str:
        return self.spec.dim

    @property
    def activation(self) -> str:
        return self.spec.activation

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` is not ``(B, *self.shape)``."""
        if x.dim() != 5 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"{type(self).__name__} ({self.spec}) was built for input (B, C, T, H, W) = "
                f"(B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_mixed(x, None, (self.spec.activation,))

    def forward_mixed(
        self,
        x: torch.Tensor,
        weights: torch.Tensor | None,
        activations: Sequence[str],
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``Σ_a weights[a] · op_a(x)`` over ``activations`` (``weights=None``: one activation).

        The generic version runs the op once per activation; subclasses mix cheaper.
        ``value`` is an optional precomputed value projection (ops that have one).
        """
        check_mix(weights, activations)
        if weights is None:
            return self._forward_single(x, activations[0])
        return sum(w * self._forward_single(x, a) for w, a in zip(weights, activations))

    def _forward_single(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.spec}, c_in={self.c_in}, c_out={self.c_out}, shape={self.shape}"


def check_mix(weights: torch.Tensor | None, activations: Sequence[str]) -> None:
    """One activation without weights, or one weight per activation."""
    if weights is None:
        if len(activations) != 1:
            raise ValueError("forward_mixed needs weights when given several activations")
    elif len(weights) != len(activations):
        raise ValueError(
            f"forward_mixed got {len(weights)} weights for {len(activations)} activations"
        )


def to_2d(x: torch.Tensor, dim: str) -> torch.Tensor:
    """ReshapeTo2D: ``(B, C, T, H, W) -> (B', N, D)`` for attention dimension ``dim``."""
    if dim == "temporal":
        return rearrange(x, "b c t h w -> b t (h w c)")  # (B, T, H*W*C)
    if dim == "spatiotemporal":
        return rearrange(x, "b c t h w -> b (t h w) c")  # (B, T*H*W, C)
    if dim == "spatial":
        return rearrange(x, "b c t h w -> (b t) (h w) c")  # (B*T, H*W, C)
    raise ValueError(f"unknown attention dim {dim!r}")


def from_2d(y: torch.Tensor, dim: str, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of ``to_2d`` for a feature map of ``shape = (C, T, H, W)``."""
    c, t, h, w = shape
    if dim == "temporal":
        return rearrange(y, "b t (h w c) -> b c t h w", h=h, w=w, c=c)  # (B, C, T, H, W)
    if dim == "spatiotemporal":
        return rearrange(y, "b (t h w) c -> b c t h w", t=t, h=h, w=w)  # (B, C, T, H, W)
    if dim == "spatial":
        return rearrange(y, "(b t) (h w) c -> b c t h w", t=t, h=h, w=w)  # (B, C, T, H, W)
    raise ValueError(f"unknown attention dim {dim!r}")


def positions_and_features(dim: str, shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """``(N, D)`` of ReshapeTo2D for one feature map of ``shape = (C, T, H, W)``."""
    c, t, h, w = shape
    if dim == "temporal":
        return t, h * w * c
    if dim == "spatiotemporal":
        return t * h * w, c
    if dim == "spatial":
        return h * w, c
    raise ValueError(f"unknown attention dim {dim!r}")


def per_position_linear(
    x: torch.Tensor, dim: str, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """A kernel-1 1D conv over ReshapeTo2D(x): ``(B, C, T, H, W) -> (B', N, C')``.

    For spatial and spatiotemporal dims the per-position features are the channels, so the
    linear map is applied as a 1×1×1 convolution before reshaping (fewer bytes moved).
    """
    if dim == "temporal":
        return nn.functional.linear(to_2d(x, dim), weight, bias)  # (B, T, C')
    y = nn.functional.conv3d(x, weight[:, :, None, None, None], bias)  # (B, C', T, H, W)
    return to_2d(y, dim)  # (B', N, C')


class MatrixAttention(AttentionOp):
    """Ops of the form of Eq. 3: ``f_out = ReshapeTo2D⁻¹(W · ReshapeTo2D(G3(f_in)))``.

    Subclasses compute the attention weights and apply them to the value in ``attend``; this
    class owns G3 (a 1×1×1 conv C_in -> C_out with bias) and the reshapes. Because Eq. 3 is
    linear in W, a mix of activations is taken on W before the single product with the value.
    """

    def __init__(self, spec: OpSpec, c_in: int, c_out: int, shape: tuple[int, int, int, int]):
        super().__init__(spec, c_in, c_out, shape)
        self.g3 = nn.Conv3d(c_in, c_out, kernel_size=1)

    def forward_mixed(
        self,
        x: torch.Tensor,
        weights: torch.Tensor | None,
        activations: Sequence[str],
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_input(x)
        check_mix(weights, activations)
        if value is None:
            value = self.g3(x)  # (B, C_out, T, H, W)
        v2 = to_2d(value, self.spec.dim)  # (B', N, D_out)
        out = self.attend(x, v2, weights, activations)  # (B', N, D_out)
        _, t, h, w = self.shape
        return from_2d(out, self.spec.dim, (self.c_out, t, h, w))  # (B, C_out, T, H, W)

    def attend(
        self,
        x: torch.Tensor,
        v2: torch.Tensor,
        weights: torch.Tensor | None,
        activations: Sequence[str],
    ) -> torch.Tensor:
        """Apply the (mixed) attention weights computed from ``x`` to the value ``v2``.

        Shape:
            x: ``(B, C_in, T, H, W)``; v2 and the result: ``(B', N, D_out)``.
        """
        raise NotImplementedError
