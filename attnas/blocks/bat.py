"""Bilinear attentional transform (BAT), video version, as the authors' code defines it.

``BATransform`` is the core C' -> C' transform (transformation predictor, block-based P/Q per
channel group and frame, optional temporal transform T, closing CBR); ``BATBlock`` wraps it in the
authors' block (1×1×1 reduction CBR, transform, 1×1×1 expansion CBR, Dropout3d, residual).
Parameter names equal the official ``models/non_local.py`` ones, so an official state_dict maps
onto ``BATBlock`` under the identity (REFERENCE_OPS.md, kind ``bat_video.BATBlock``).

Design choices where the spec is silent:

- ``dim`` selects which matrices exist: ``spatial`` = P·X·Q per frame (the authors' 2D BAT,
  ``tk=0``), ``temporal`` = T only, ``spatiotemporal`` = both (the authors' 3D BAT). For the
  temporal-only transform the predictor features still come from ``conv1`` (k channels).
- ``normalization='sigmoid'`` is the image version (BAT paper Eq. 2): sigmoid, then L1
  normalisation of P's rows and Q's columns; T (absent from the image version) is normalised like
  P, by rows, which is the axis the official video code's softmax uses for T.
- The block-diagonal expansion kron(P, I_{H/s}) is never materialised: the product with u is
  taken by splitting H into (s, H/s) and contracting the s axis, which is equal and costs
  O(s) instead of O(H) per output element.
- The official code has an undocumented fallback for H = n·(s+1) (averaged overlapping windows
  with a hard-coded window count of 2) and fails for every other H that is not a multiple of s;
  we accept only H and W that are positive multiples of s and T a positive multiple of ts, and
  raise a ValueError naming the shape otherwise. H ≠ W is accepted, as the official code is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

_DIMS = ("spatial", "temporal", "spatiotemporal")
_NORMALIZATIONS = ("softmax", "sigmoid")


def _cbr(c_in: int, c_out: int) -> nn.Sequential:
    """1×1×1 Conv3d (with bias), BatchNorm3d, ReLU; named ``0``, ``1``, ``2`` as officially."""
    return nn.Sequential(nn.Conv3d(c_in, c_out, 1), nn.BatchNorm3d(c_out), nn.ReLU())


def _normalize(logits: torch.Tensor, dim: int, normalization: str) -> torch.Tensor:
    """Softmax, or sigmoid followed by L1 normalisation, along ``dim``."""
    if normalization == "softmax":
        return logits.softmax(dim=dim)
    pos = torch.sigmoid(logits)
    return pos / pos.sum(dim=dim, keepdim=True)


class BATransform(nn.Module):
    """The bilinear attentional transform, mapping C' channels to C' channels.

    Args:
        in_channels: C', channels of the input and of the output.
        s: block count of P (H×H) and Q (W×W): they are predicted as s×s and expanded to
            kron(·, I_{H/s}).
        ts: block count of T (T×T), predicted as ts×ts.
        k: predictor channels and number of spatial channel groups (one P, Q per group).
        tk: number of temporal channel groups (one T per group); used when ``dim`` has time.
        dim: ``spatial`` (P·X·Q per frame), ``temporal`` (T only) or ``spatiotemporal``.
        normalization: ``softmax`` (official video code) or ``sigmoid`` (image version, Eq. 2).

    Shape:
        - Input: ``(B, C', T, H, W)`` with H, W multiples of s and T a multiple of ts.
        - Output: ``(B, C', T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        s: int = 7,
        ts: int = 4,
        k: int = 4,
        tk: int = 1,
        dim: str = "spatiotemporal",
        normalization: str = "softmax",
    ) -> None:
        super().__init__()
        if dim not in _DIMS:
            raise ValueError(f"BATransform: dim must be one of {_DIMS}, got {dim!r}")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"BATransform: normalization must be one of {_NORMALIZATIONS}, got "
                f"{normalization!r}"
            )
        self.spatial = dim in ("spatial", "spatiotemporal")
        self.temporal = dim in ("temporal", "spatiotemporal")
        if k < 1:
            raise ValueError(f"BATransform: k must be >= 1, got {k}")
        if self.spatial and (s < 1 or in_channels % k):
            raise ValueError(
                f"BATransform: need s >= 1 and in_channels ({in_channels}) divisible by k ({k}); "
                f"got s={s}"
            )
        if self.temporal and (tk < 1 or ts < 1 or in_channels % tk):
            raise ValueError(
                f"BATransform: a temporal transform needs tk >= 1, ts >= 1 and in_channels "
                f"({in_channels}) divisible by tk; got tk={tk}, ts={ts}"
            )
        self.in_channels, self.s, self.ts, self.k, self.tk = in_channels, s, ts, k, tk
        self.dim, self.normalization = dim, normalization
        self.conv1 = _cbr(in_channels, k)
        if self.spatial:
            self.conv_p = nn.Conv3d(k, s * s * k, (1, s, 1))
            self.conv_q = nn.Conv3d(k, s * s * k, (1, 1, s))
        if self.temporal:
            self.conv_t = nn.Conv3d(k, ts * ts * tk, (ts, 1, 1))
        self.conv2 = _cbr(in_channels, in_channels)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, s={self.s}, ts={self.ts}, k={self.k}, "
            f"tk={self.tk}, dim={self.dim!r}, normalization={self.normalization!r}"
        )

    def _check_shape(self, u: torch.Tensor) -> None:
        if u.dim() != 5 or u.shape[1] != self.in_channels:
            raise ValueError(
                f"BATransform: expected input (B, {self.in_channels}, T, H, W), got "
                f"{tuple(u.shape)}"
            )
        _, _, t, h, w = u.shape
        if self.spatial and (h < self.s or w < self.s or h % self.s or w % self.s):
            raise ValueError(
                f"BATransform: H and W must be positive multiples of s={self.s} (the official "
                f"code cannot run otherwise); got input shape {tuple(u.shape)}"
            )
        if self.temporal and (t < self.ts or t % self.ts):
            raise ValueError(
                f"BATransform: T must be a positive multiple of ts={self.ts} (the official "
                f"code cannot run otherwise); got input shape {tuple(u.shape)}"
            )

    def matrices(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict the normalised block matrices for input ``u``.

        Returns:
            ``{"P": (B, k, T, s, s), "Q": (B, k, T, s, s)}`` when spatial (P rows and Q columns
            sum to one) and ``{"T": (B, tk, ts, ts)}`` when temporal (rows sum to one).
        """
        self._check_shape(u)
        f = self.conv1(u)  # (B, k, T, H, W)
        t = f.shape[2]
        out: dict[str, torch.Tensor] = {}
        if self.spatial:
            s = self.s
            rows = F.adaptive_max_pool3d(f, (t, s, 1))  # (B, k, T, s, 1)
            cols = F.adaptive_max_pool3d(f, (t, 1, s))  # (B, k, T, 1, s)
            p = rearrange(self.conv_p(rows), "b (g i j) t 1 1 -> b g t i j", i=s, j=s)
            q = rearrange(self.conv_q(cols), "b (g i j) t 1 1 -> b g t i j", i=s, j=s)
            out["P"] = _normalize(p, -1, self.normalization)  # rows sum to 1
            out["Q"] = _normalize(q, -2, self.normalization)  # columns sum to 1
        if self.temporal:
            pooled = F.adaptive_avg_pool3d(f, (self.ts, 1, 1))  # (B, k, ts, 1, 1)
            tm = rearrange(self.conv_t(pooled), "b (g i j) 1 1 1 -> b g i j", i=self.ts, j=self.ts)
            out["T"] = _normalize(tm, -1, self.normalization)  # (B, tk, ts, ts)
        return out

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Apply P·u·Q per frame and group, then T along time, then the closing CBR."""
        mats = self.matrices(u)
        y = u
        if self.spatial:
            s = self.s
            # kron(P, I_r) · u  ==  contract P with the block index of H = (s, r).
            y = rearrange(y, "b (g c) t (j a) w -> b g c t j a w", g=self.k, j=s)
            y = torch.einsum("bgtij,bgctjaw->bgctiaw", mats["P"], y)
            y = rearrange(y, "b g c t i a (j e) -> b g c t (i a) j e", j=s)
            # u · kron(Q, I_r)  ==  contract Q's row index with the block index of W.
            y = torch.einsum("bgcthje,bgtjl->bgcthle", y, mats["Q"])
            y = rearrange(y, "b g c t h l e -> b (g c) t h (l e)")  # (B, C', T, H, W)
        if self.temporal:
            y = rearrange(y, "b (g c) (j a) h w -> b g c j a h w", g=self.tk, j=self.ts)
            y = torch.einsum("bgij,bgcjahw->bgciahw", mats["T"], y)
            y = rearrange(y, "b g c i a h w -> b (g c) (i a) h w")  # (B, C', T, H, W)
        return self.conv2(y)


class BATBlock(nn.Module):
    """The authors' video BAT block: ``x + Dropout3d(conv2(batransform(conv1(x))))``.

    Args:
        in_channels: C, channels of the input and output.
        r: channel reduction, C' = C // r.
        s, ts, k, tk: see ``BATransform``; ``tk = 0`` gives the 2D (spatial-only) block.
        dropout: Dropout3d rate on the branch.
        normalization: ``softmax`` (official) or ``sigmoid`` (image version, Eq. 2).

    Shape:
        - Input: ``(B, C, T, H, W)``; Output: ``(B, C, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        r: int = 2,
        s: int = 7,
        ts: int = 4,
        k: int = 4,
        tk: int = 1,
        dropout: float = 0.2,
        normalization: str = "softmax",
    ) -> None:
        super().__init__()
        inner = in_channels // r
        if inner < 1:
            raise ValueError(f"BATBlock: in_channels // r must be >= 1, got {in_channels}//{r}")
        if tk < 0:
            raise ValueError(f"BATBlock: tk must be >= 0, got {tk}")
        self.conv1 = _cbr(in_channels, inner)
        self.batransform = BATransform(
            inner,
            s,
            ts,
            k,
            tk,
            dim="spatiotemporal" if tk > 0 else "spatial",
            normalization=normalization,
        )
        self.conv2 = _cbr(inner, in_channels)
        self.dropout = nn.Dropout3d(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.batransform(self.conv1(x)))  # (B, C, T, H, W)
        return x + self.dropout(y)
