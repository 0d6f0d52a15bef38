"""Relational self-attention (RSA, Kim et al. NeurIPS 2021), as the authors' code defines it.

``RSA`` computes REFERENCE_OPS.md's function (kind ``rsa.RSA``) in the paper's efficient form
(Eq. 11–12): every aggregation over the kt×kh×kw context is a depthwise 3D convolution, so the
activations held per position are O(dk·dd + dv·dd + dv·dv) — independent of the context size
M = kt·kh·kw — and only the weights grow (linearly) with M. No M-vector kernel and no M×M
self-correlation is ever formed:

- relational kernel (Eq. 10): ``X^K ⊛ r(H1)`` is a grouped conv of k with H1 (dk groups, dd
  filters each), giving (dk, dd) per position; κ_h = q̂_h (X^K ⊛ r(H1) [+ P1]).
- basic context through H2 (Eq. 12, ``H2^T X^V``): each v channel convolved with the dd filters
  of H2, giving F_V (dv, dd) per position.
- relational context (Eq. 11–12, ``(X^V)^T G``): each v channel convolved with the dv filters of
  G, giving (dv, dv) per position, [+ I]; F = ((X^V)^T G [+ I])^T F_V.
- out[w, h] = Σ_d κ_h[d] F[w, d], output channel w·nh + h (the authors' channel order).

Parameter names and shapes equal the official ``ops/rsa.py`` ones (``projection``, ``H1``,
``H2``, ``G``, ``P1``, ``I``), so an official state_dict maps under the identity.

Configurations the official code cannot run raise a ValueError at construction: a 'V' kernel
with dk ≠ dd (q̂ is used as the kernel over the dd latent dims), a 'VplusR' feature with
dk ∉ {dv, 1} (the official I is eye(dk), added to a dv×dv matrix; dk = 1 broadcasts and is
accepted, as the official code accepts it), and even kernel sizes (the official "same" padding
k//2 changes the output size). As officially, the output has nh·dv channels (which is d_out when
nh divides d_out and dv is derived) and any stride > 1 means the fixed AvgPool3d((1,3,3),
(1,2,2), (0,1,1)) on the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

_TYPES = ("V", "R", "VplusR")
_EPS = 1e-6


def _l2normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / sqrt(Σ x² + 1e-6) along ``dim`` (the official normalisation, eps inside the sqrt)."""
    return x / (x.pow(2).sum(dim=dim, keepdim=True) + _EPS).sqrt()


def _depthwise_bank(x: torch.Tensor, bank: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
    """Convolve every channel of ``x`` with every filter of a single-channel filter bank.

    Args:
        x: ``(B, c, T, H, W)``.
        bank: ``(f, 1, kt, kh, kw)``.
        padding: zero padding per axis.

    Returns:
        ``(B, c·f, T, H, W)`` with channel ``i·f + j`` = x_i ⊛ bank_j.
    """
    c = x.shape[1]
    weight = bank.repeat(c, 1, 1, 1, 1)  # (c·f, 1, kt, kh, kw)
    return F.conv3d(x, weight, padding=padding, groups=c)  # (B, c·f, T, H, W)


class RSA(nn.Module):
    """Relational self-attention layer, maps d_in channels to nh·dv channels.

    Args:
        d_in: input channels.
        d_out: output channels; dv = d_out // nh when ``dv`` is 0.
        nh: number of queries L (multi-query: they share one key and one value context).
        dk: query/key channels per head (0 -> dv).
        dv: value channels (0 -> d_out // nh).
        dd: latent dimension D of H1/H2 (0 -> dk).
        kernel_size: context window (kt, kh, kw), odd sizes.
        stride: any entry > 1 downsamples the output by AvgPool3d((1,3,3), (1,2,2), (0,1,1)).
        kernel_type: ``V`` (basic), ``R`` (relational) or ``VplusR``.
        feat_type: ``V`` (basic context), ``R`` (relational) or ``VplusR``.

    Shape:
        - Input: ``(B, d_in, T, H, W)``.
        - Output: ``(B, nh·dv, T, H', W')`` (H' = H, W' = W unless strided).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        nh: int = 1,
        dk: int = 16,
        dv: int = 0,
        dd: int = 0,
        kernel_size: tuple[int, int, int] = (3, 7, 7),
        stride: tuple[int, int, int] = (1, 1, 1),
        kernel_type: str = "VplusR",
        feat_type: str = "VplusR",
    ) -> None:
        super().__init__()
        if kernel_type not in _TYPES:
            raise ValueError(f"RSA: kernel_type must be one of {_TYPES}, got {kernel_type!r}")
        if feat_type not in _TYPES:
            raise ValueError(f"RSA: feat_type must be one of {_TYPES}, got {feat_type!r}")
        kernel_size = tuple(int(k) for k in kernel_size)
        if len(kernel_size) != 3 or any(k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(
                f"RSA: kernel_size must be three odd sizes (the official 'same' padding k//2 "
                f"changes the output size for even ones), got {kernel_size}"
            )
        dv = d_out // nh if dv == 0 else dv
        dk = dv if dk == 0 else dk
        dd = dk if dd == 0 else dd
        if min(nh, dk, dv, dd) < 1:
            raise ValueError(f"RSA: derived sizes must be >= 1, got nh={nh}, dk={dk}, dv={dv}")
        if kernel_type == "V" and dk != dd:
            raise ValueError(
                f"RSA: kernel_type 'V' uses the query as the kernel over the dd latent dims, so "
                f"it needs dk == dd; got dk={dk}, dd={dd}"
            )
        if feat_type == "VplusR" and dk not in (dv, 1):
            raise ValueError(
                f"RSA: feat_type 'VplusR' adds the official I = eye(dk) to a dv×dv matrix, so it "
                f"needs dk == dv (or dk == 1); got dk={dk}, dv={dv}"
            )
        self.d_in, self.nh, self.dk, self.dv, self.dd = d_in, nh, dk, dv, dd
        self.out_channels = nh * dv
        self.kernel_size, self.stride = kernel_size, tuple(stride)
        self.kernel_type, self.feat_type = kernel_type, feat_type
        self.padding = tuple(k // 2 for k in kernel_size)
        m = math.prod(kernel_size)

        d_key = 0 if kernel_type == "V" else dk
        self.projection = nn.Conv3d(d_in, nh * dk + d_key + dv, 1, bias=False)
        if kernel_type != "V":
            self.H1 = nn.Conv3d(
                dk, dk * dd, kernel_size, padding=self.padding, groups=dk, bias=False
            )
        self.H2 = nn.Conv3d(1, dd, kernel_size, padding=self.padding, bias=False)
        if kernel_type == "VplusR":
            self.P1 = nn.Parameter(torch.randn(1, dk, dd) * math.sqrt(1.0 / (m * dd)))
        if feat_type != "V":
            self.G = nn.Conv3d(1, dv, kernel_size, padding=self.padding, bias=False)
        if feat_type == "VplusR":
            self.I = nn.Parameter(torch.eye(dk).unsqueeze(0))
        self.avgpool = (
            nn.AvgPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)) if max(self.stride) > 1 else None
        )

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, nh={self.nh}, dk={self.dk}, dv={self.dv}, dd={self.dd}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, "
            f"kernel_type={self.kernel_type!r}, feat_type={self.feat_type!r}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.d_in:
            raise ValueError(f"RSA: expected input (B, {self.d_in}, T, H, W), got {tuple(x.shape)}")
        nh, dk, dv = self.nh, self.dk, self.dv
        d_key = 0 if self.kernel_type == "V" else dk
        q, key, v = torch.split(self.projection(x), [nh * dk, d_key, dv], dim=1)
        q = _l2normalize(rearrange(q, "b (n c) t h w -> b n c t h w", n=nh), dim=2)
        v = _l2normalize(v, dim=1)  # (B, dv, T, H, W)

        # Kernel κ (B, nh, dd, T, H, W).
        if self.kernel_type == "V":
            kernel = q
        else:
            key = _l2normalize(key, dim=1)
            # X^K ⊛ r(H1): channel c·dd + d reads key channel c (grouped conv).
            corr = rearrange(self.H1(key), "b (c d) t h w -> b c d t h w", c=dk)
            if self.kernel_type == "VplusR":
                corr = corr + self.P1[0][None, :, :, None, None, None]
            kernel = torch.einsum("bnctxy,bcdtxy->bndtxy", q, corr)  # (B, nh, dd, T, H, W)

        # Basic context H2^T X^V: (B, dv, dd, T, H, W).
        feat = rearrange(
            _depthwise_bank(v, self.H2.weight, self.padding), "b (v d) t h w -> b v d t h w", v=dv
        )
        if self.feat_type != "V":
            # (X^V)^T G [+ I]: (B, dv, dv', T, H, W), entry [v, w] = v-channel ⊛ G_w.
            rel = rearrange(
                _depthwise_bank(v, self.G.weight, self.padding),
                "b (v u) t h w -> b v u t h w",
                v=dv,
            )
            if self.feat_type == "VplusR":
                rel = rel + self.I[0][:, :, None, None, None]
            feat = torch.einsum("bvutxy,bvdtxy->budtxy", rel, feat)  # (B, dv, dd, T, H, W)

        out = torch.einsum("bndtxy,bvdtxy->bvntxy", kernel, feat)  # (B, dv, nh, T, H, W)
        out = rearrange(out, "b v n t h w -> b (v n) t h w")  # (B, dv·nh, T, H, W)
        if self.avgpool is not None:
            out = self.avgpool(out)  # (B, dv·nh, T, H', W')
        return out
