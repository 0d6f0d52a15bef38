"""Relational self-attention (RSA) as a searchable attention op.

``(B, C_in, T, H, W) -> (B, C_out, T, H, W)`` through the same ``RSA`` core module as
``attnas.blocks.RSA`` (efficient form, Eq. 11–12; its 1×1×1 q/k/v projection C_in -> ... is the
op's input projection and its output has nh·dv = C_out channels, so no other projection is
needed). No residual: the cell owns it.

- dim = the context window M (kt, kh, kw): ``spatial`` 1×m×m (per frame), ``temporal`` m_t×1×1
  (per position, along time), ``spatiotemporal`` m_t×m×m. The paper's default is 5×7×7.
- Defaults for small maps: a window wider than 2n−1 along an axis of n positions only adds
  zero-padded taps that no position can use, so each axis's size is clamped to
  min(paper size, 2n−1), which is odd as RSA needs: H = W = 8 -> 7×7 (the paper's); H = W = 4 ->
  7×7 (every position sees the whole map); H = W = 2 -> 3×3; T = 4 -> m_t = 5 (the paper's);
  T = 2 -> 3; T = 1 -> 1. Explicit ``m`` / ``m_t`` (odd) are used as given.
- Heads: ``nh`` defaults to the largest divisor of C_out that is <= 8 (the authors' nh = 8) and
  leaves dv = C_out / nh >= 4, or 1 when C_out < 8; dk = dd = dv (the authors' 0 = derived),
  kernel and feature types VplusR (the authors' network). ``nh`` must divide C_out.
- activation: RSA has no normalisation of its kernel (no softmax, no scaling); the type
  declares the single activation ``none``.
"""

from __future__ import annotations

import torch

from attnas.blocks.rsa import RSA
from attnas.ops.base import AttentionOp
from attnas.ops.flops import rsa_macs_per_position
from attnas.ops.registry import register_op
from attnas.space import DIMS, OpSpec

PAPER_KERNEL = (5, 7, 7)


def default_heads(c_out: int) -> int:
    """The largest nh <= 8 dividing ``c_out`` with ``c_out / nh >= 4`` (1 if there is none)."""
    return next((n for n in range(8, 0, -1) if c_out % n == 0 and c_out // n >= 4), 1)


def context_window(
    dim: str, t: int, h: int, w: int, m: int | None = None, m_t: int | None = None
) -> tuple[int, int, int]:
    """The RSA context size (kt, kh, kw) of ``dim`` for a ``T×H×W`` map (see module docstring)."""
    kt = m_t if m_t is not None else min(PAPER_KERNEL[0], 2 * t - 1)
    kh = m if m is not None else min(PAPER_KERNEL[1], 2 * h - 1)
    kw = m if m is not None else min(PAPER_KERNEL[2], 2 * w - 1)
    if dim == "spatial":
        return 1, kh, kw
    if dim == "temporal":
        return kt, 1, 1
    if dim == "spatiotemporal":
        return kt, kh, kw
    raise ValueError(f"unknown attention dim {dim!r}")


@register_op("rsa", dims=DIMS, activations=("none",))
class RelationalAttention(AttentionOp):
    """RSA with its context window given by the op's dim.

    Args:
        spec: ``OpSpec("rsa", dim, "none")``.
        c_in: input channels.
        c_out: output channels (= nh·dv).
        shape: input feature shape ``(C, T, H, W)``.
        nh: number of queries L (default: see ``default_heads``).
        dk: query/key channels per head (0: dv).
        dd: latent dimension D (0: dk).
        m: spatial window size (odd; default min(7, 2H−1) × min(7, 2W−1)).
        m_t: temporal window size (odd; default min(5, 2T−1)).
        kernel_type: ``V``, ``R`` or ``VplusR``.
        feat_type: ``V``, ``R`` or ``VplusR``.

    Shape:
        ``(B, C_in, T, H, W) -> (B, C_out, T, H, W)``.
    """

    def __init__(
        self,
        spec: OpSpec,
        c_in: int,
        c_out: int,
        shape: tuple[int, int, int, int],
        nh: int | None = None,
        dk: int = 0,
        dd: int = 0,
        m: int | None = None,
        m_t: int | None = None,
        kernel_type: str = "VplusR",
        feat_type: str = "VplusR",
    ):
        super().__init__(spec, c_in, c_out, shape)
        if spec.activation != "none":
            raise ValueError(f"rsa has only the activation 'none', got {spec}")
        nh = default_heads(c_out) if nh is None else nh
        if nh < 1 or c_out % nh:
            raise ValueError(f"rsa ({spec}): nh={nh} must divide c_out={c_out}")
        _, t, h, w = self.shape
        self.kernel_size = context_window(spec.dim, t, h, w, m, m_t)
        self.rsa = RSA(
            c_in,
            c_out,
            nh=nh,
            dk=dk,
            dv=0,
            dd=dd,
            kernel_size=self.kernel_size,
            kernel_type=kernel_type,
            feat_type=feat_type,
        )

    def _forward_single(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        self.check_input(x)
        if activation != "none":
            raise ValueError(f"rsa has no activation {activation!r}; it supports ['none']")
        return self.rsa(x)  # (B, C_out, T, H, W)

    def macs(self) -> int:
        """Multiply-accumulates of one forward on one sample (``attnas.ops.flops``)."""
        _, t, h, w = self.shape
        r = self.rsa
        per_position = rsa_macs_per_position(
            r.d_in, r.nh, r.dk, r.dv, r.dd, r.kernel_size, r.kernel_type, r.feat_type
        )
        return t * h * w * per_position
