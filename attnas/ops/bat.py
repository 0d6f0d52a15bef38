"""The bilinear attentional transform (BAT) as a searchable attention op.

``(B, C_in, T, H, W) -> (B, C_out, T, H, W)``, no residual (the cell owns it):

    x --proj_in (1×1×1 conv C_in -> C')--> u --BATransform(C')--> z [--proj_out (C' -> C_out)-->]

``BATransform`` is the same core module as ``attnas.blocks.BATBlock`` uses (transformation
predictor CBR to k channels, row/column max pooling, block-based P, Q per channel group and
frame, temporal transform T, closing CBR C' -> C'). ``proj_in`` / ``proj_out`` play the roles of
the block's reduction / expansion convs but are plain 1×1×1 convs, like the G3 of the paper's
map/dot ops; ``proj_out`` exists only when C' ≠ C_out, so with the default C' = C_out the op
ends in the core's ReLU, as the authors' branch does. ``proj_in`` has no bias: P's rows, Q's
columns and T's rows sum to one, so a per-channel constant passes the transform unchanged and
is then removed by the BatchNorm of the closing CBR (and of the predictor CBR): in training a
bias there would have no effect on the output and never receive a gradient. (The core's own
convs before BatchNorm keep their biases, as the authors' weights have them; their gradients are
zero up to rounding in training mode for the same reason.)

- dim: ``spatial`` = P·X·Q per frame (the authors' 2D BAT); ``temporal`` = T only;
  ``spatiotemporal`` = both (the authors' 3D BAT).
- activation = the normalisation of the predicted matrices: ``softmax`` is the official video
  code's; ``sigmoid`` is the image version (paper Eq. 2: sigmoid, then L1 row/column
  normalisation). Outputs are bilinear in (P, Q) and pass the closing CBR (BatchNorm, ReLU), so a
  mix of the two is not a mix of matrices: ``forward_mixed`` shares ``proj_in`` and runs the core
  once per activation (switching the core's ``normalization`` for the call), which is exactly the
  per-activation sum. In training mode each such call updates the core's BatchNorm statistics,
  as separate calls would.

Defaults derived from the feature shape (C, T, H, W) when not given (the authors' s = 7,
ts = 4 need H, W multiples of 7 and T of 4, which CPU-sized maps are not):

- ``s``: the largest divisor of both H and W in 2..7 (H = W = 8 -> 4; 14 -> 7; 7 -> 7).
- ``ts``: the largest divisor of T in 2..4 (T = 4 -> 4, i.e. no block trick along time, as in
  the paper's 3D experiments; T = 8 -> 4).
- ``k``: the largest divisor of C' that is <= 4 (the paper's experiments use k = C' = 4).
- ``tk``: 1, the official constructor's default.

When no such s (or ts) exists (e.g. H = W = 1 or 11, T = 1 or 5) the op raises a ValueError
naming the shape: a 1×1 P or T would be the identity whatever the input. Explicitly given
values are checked against the shape at construction (the core would only fail at forward).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from attnas.blocks.bat import BATransform
from attnas.ops.base import AttentionOp, check_mix
from attnas.ops.flops import bat_transform_macs
from attnas.ops.registry import register_op
from attnas.space import DIMS, OpSpec

_NORMALIZATIONS = ("softmax", "sigmoid")


def _largest_divisor(n: int, low: int, high: int) -> int | None:
    """The largest divisor of ``n`` in ``low..high``, or None."""
    return next((d for d in range(high, low - 1, -1) if n % d == 0), None)


@contextmanager
def _normalization(transform: BATransform, name: str) -> Iterator[None]:
    """Run ``transform`` with normalisation ``name`` for the duration of the block."""
    previous = transform.normalization
    transform.normalization = name
    try:
        yield
    finally:
        transform.normalization = previous


@register_op("bat", dims=DIMS, activations=_NORMALIZATIONS)
class BATAttention(AttentionOp):
    """BAT over the op's dim (P·X·Q per frame, T along time, or both).

    Args:
        spec: ``OpSpec("bat", dim, activation)`` with activation ``softmax`` or ``sigmoid``.
        c_in: input channels.
        c_out: output channels.
        shape: input feature shape ``(C, T, H, W)``.
        inner_channels: C', the channels the transform works on (default ``c_out``).
        s: block count of P and Q (default: largest divisor of H and W in 2..7).
        ts: block count of T (default: largest divisor of T in 2..4).
        k: predictor channels = spatial channel groups (default: largest divisor of C' <= 4).
        tk: temporal channel groups (default 1).

    Shape:
        ``(B, C_in, T, H, W) -> (B, C_out, T, H, W)``.
    """

    def __init__(
        self,
        spec: OpSpec,
        c_in: int,
        c_out: int,
        shape: tuple[int, int, int, int],
        inner_channels: int | None = None,
        s: int | None = None,
        ts: int | None = None,
        k: int | None = None,
        tk: int = 1,
    ):
        super().__init__(spec, c_in, c_out, shape)
        if spec.activation not in _NORMALIZATIONS:
            raise ValueError(f"bat: activation must be one of {_NORMALIZATIONS}, got {spec}")
        inner = inner_channels or c_out
        _, t, h, w = self.shape
        spatial = spec.dim in ("spatial", "spatiotemporal")
        temporal = spec.dim in ("temporal", "spatiotemporal")
        if spatial:
            s = self._block_count("s", s, math.gcd(h, w), 7, "H and W")
        if temporal:
            ts = self._block_count("ts", ts, t, 4, "T")
        if k is None:
            k = _largest_divisor(inner, 1, 4)
        self.inner_channels = inner
        self.proj_in = nn.Conv3d(c_in, inner, kernel_size=1, bias=False)
        self.transform = BATransform(
            inner,
            s=s or 1,
            ts=ts or 1,
            k=k,
            tk=tk,
            dim=spec.dim,
            normalization=spec.activation,
        )
        self.proj_out = nn.Conv3d(inner, c_out, kernel_size=1) if inner != c_out else None

    def _block_count(self, name: str, given: int | None, n: int, high: int, axes: str) -> int:
        """Check a given block count against the shape, or derive the default."""
        if given is not None:
            if given < 1 or n % given:
                raise ValueError(
                    f"bat ({self.spec}): {name}={given} must divide {axes} of the feature shape "
                    f"(C, T, H, W) = {self.shape}"
                )
            return given
        found = _largest_divisor(n, 2, high)
        if found is None:
            raise ValueError(
                f"bat ({self.spec}): no block count {name} in 2..{high} divides {axes} of the "
                f"feature shape (C, T, H, W) = {self.shape}; pass {name} explicitly (op_types.bat."
                f"params) or leave this dim out of the space for this shape"
            )
        return found

    def forward_mixed(
        self,
        x: torch.Tensor,
        weights: torch.Tensor | None,
        activations: Sequence[str],
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``Σ_a weights[a] · op_a(x)``, sharing ``proj_in`` across the activations."""
        self.check_input(x)
        check_mix(weights, activations)
        u = self.proj_in(x)  # (B, C', T, H, W)
        if weights is None:
            return self._transform(u, activations[0])
        return sum(wa * self._transform(u, a) for wa, a in zip(weights, activations))

    def _forward_single(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        self.check_input(x)
        return self._transform(self.proj_in(x), activation)

    def _transform(self, u: torch.Tensor, activation: str) -> torch.Tensor:
        """Core transform with normalisation ``activation``, then ``proj_out`` if present."""
        if activation not in _NORMALIZATIONS:
            raise ValueError(
                f"bat has no activation {activation!r}; it supports {list(_NORMALIZATIONS)}"
            )
        with _normalization(self.transform, activation):
            z = self.transform(u)  # (B, C', T, H, W)
        return z if self.proj_out is None else self.proj_out(z)  # (B, C_out, T, H, W)

    def macs(self) -> int:
        """Multiply-accumulates of one forward on one sample (``attnas.ops.flops``)."""
        _, t, h, w = self.shape
        tr = self.transform
        inner = self.inner_channels
        macs = self.c_in * inner * t * h * w  # proj_in
        macs += bat_transform_macs(inner, t, h, w, tr.s, tr.ts, tr.k, tr.tk, self.spec.dim)
        if self.proj_out is not None:
            macs += inner * self.c_out * t * h * w
        return macs

    def matrices(self, x: torch.Tensor, activation: str | None = None) -> dict[str, torch.Tensor]:
        """The normalised P, Q (and/or T) the op applies to ``x`` (see ``BATransform.matrices``)."""
        self.check_input(x)
        with _normalization(self.transform, activation or self.spec.activation):
            return self.transform.matrices(self.proj_in(x))
