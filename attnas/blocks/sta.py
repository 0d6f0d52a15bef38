"""Shrinking temporal attention (STA, AAAI 2022) adapted to CNN feature maps.

No public code exists; this follows the paper's "Shrinking Temporal Attention Module" (Eq. 1–8)
and DESIGN.md. ``STAttention`` is the core C_in -> C_out attention with no residual (a searchable
op wraps it); ``STA`` is the block: core (C -> inner), 1×1×1 conv back to C, BatchNorm with its
weight initialised to zero, residual.

For a query token at frame i, position j, the attended key set is the concatenation (Eq. 7) of

- current attention (CA): the H·W tokens of frame i;
- short-term attention (SA): the pooled tokens of frames i−⌊t_o/2⌋ … i+⌊t_o/2⌋ except frame i;
- long-term attention (LA): the class tokens of all T frames (frame i's included),

and the output is softmax(q Kᵀ / √C') V over that set (Eq. 8). ``dim='spatial'`` keeps CA only,
``'temporal'`` LA only, ``'spatiotemporal'`` all three.

Design choices where the paper and DESIGN.md are silent:

- Queries are the H·W tokens of each frame; the class tokens serve as keys/values only (the
  class tokens' own outputs have no place in a ``(B, C_out, T, H, W)`` map and are dropped).
- Class token of frame i, ``class_token='learned'``: one learned vector c0 (C_in) attends the
  frame's tokens through the layer's own query/key projections, cls_i = Σ_j softmax_j(F_q(c0) ·
  F_k(x_ij) / √C') x_ij, so it lives in the input space; ``'mean'``: the spatial mean of x_i.
  Either is then projected by F_k and F_v like any token.
- CA attends the unpooled tokens (CNN feature maps are small, so the paper's pooling of CA keys,
  which only saves compute, is the identity here); SA keys/values are the CA ones average-pooled
  per frame to ⌈H/pool⌉ × ⌈W/pool⌉ (adaptive average pooling, so any H, W work).
- Frames outside the clip are absent, not padded: at the clip borders SA has fewer frames.
- F_q, F_k are 1×1×1 convs C_in -> C' (with bias), F_v is C_in -> C_out, so the core needs no
  output projection; the scale is 1/√C'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

_DIMS = ("spatial", "temporal", "spatiotemporal")
_CLASS_TOKENS = ("learned", "mean")


class STAttention(nn.Module):
    """Shrinking temporal attention core, C_in -> C_out, no residual.

    Args:
        in_channels: C_in.
        out_channels: C_out (value channels).
        inner_channels: C', query/key channels (default ``out_channels``).
        t_o: short-term window (frames i−⌊t_o/2⌋ … i+⌊t_o/2⌋, excluding i).
        pool: short-term keys/values are average-pooled by this factor in H and W.
        class_token: ``learned`` (a learned token attends each frame) or ``mean``.
        dim: ``spatial`` (CA), ``temporal`` (LA) or ``spatiotemporal`` (CA + SA + LA).

    Shape:
        - Input: ``(B, C_in, T, H, W)``; Output: ``(B, C_out, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        inner_channels: int | None = None,
        t_o: int = 3,
        pool: int = 2,
        class_token: str = "learned",
        dim: str = "spatiotemporal",
    ) -> None:
        super().__init__()
        if dim not in _DIMS:
            raise ValueError(f"STAttention: dim must be one of {_DIMS}, got {dim!r}")
        if class_token not in _CLASS_TOKENS:
            raise ValueError(
                f"STAttention: class_token must be one of {_CLASS_TOKENS}, got {class_token!r}"
            )
        if t_o < 1 or pool < 1:
            raise ValueError(f"STAttention: t_o and pool must be >= 1, got t_o={t_o}, pool={pool}")
        inner = out_channels if inner_channels is None else inner_channels
        self.in_channels, self.out_channels, self.inner_channels = in_channels, out_channels, inner
        self.t_o, self.pool, self.class_token, self.dim = t_o, pool, class_token, dim
        self.use_current = dim in ("spatial", "spatiotemporal")
        self.use_short = dim == "spatiotemporal"
        self.use_long = dim in ("temporal", "spatiotemporal")
        self.query = nn.Conv3d(in_channels, inner, 1)
        self.key = nn.Conv3d(in_channels, inner, 1)
        self.value = nn.Conv3d(in_channels, out_channels, 1)
        if self.use_long and class_token == "learned":
            self.cls = nn.Parameter(torch.randn(in_channels) * 0.02)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"inner_channels={self.inner_channels}, t_o={self.t_o}, pool={self.pool}, "
            f"class_token={self.class_token!r}, dim={self.dim!r}"
        )

    def _linear(self, conv: nn.Conv3d, tokens: torch.Tensor) -> torch.Tensor:
        """Apply a 1×1×1 conv to channel-last tokens ``(..., C_in)``."""
        return F.linear(tokens, conv.weight.flatten(1), conv.bias)

    def class_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame class tokens in the input space, ``(B, T, C_in)``."""
        if self.class_token == "mean":
            return x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, C_in)
        tokens = rearrange(x, "b c t h w -> b t (h w) c")
        q0 = self._linear(self.query, self.cls)  # (C',)
        k = self._linear(self.key, tokens)  # (B, T, HW, C')
        attn = (k @ q0 / math.sqrt(self.inner_channels)).softmax(dim=-1)  # (B, T, HW)
        return torch.einsum("btn,btnc->btc", attn, tokens)  # (B, T, C_in)

    def _short_term_mask(self, t: int, device: torch.device) -> torch.Tensor:
        """(T, T) bool: frame s is in frame i's short-term window (s ≠ i)."""
        idx = torch.arange(t, device=device)
        dist = (idx[:, None] - idx[None, :]).abs()
        return (dist <= self.t_o // 2) & (dist > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"STAttention: expected input (B, {self.in_channels}, T, H, W), got "
                f"{tuple(x.shape)}"
            )
        b, _, t, h, w = x.shape
        scale = 1.0 / math.sqrt(self.inner_channels)
        q = rearrange(self.query(x), "b c t h w -> b t (h w) c")  # (B, T, N, C')
        logits: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        if self.use_current or self.use_short:
            k = self.key(x)  # (B, C', T, H, W)
            v = self.value(x)  # (B, C_out, T, H, W)
        if self.use_current:
            kc = rearrange(k, "b c t h w -> b t (h w) c")
            logits.append(torch.einsum("btnc,btmc->btnm", q, kc) * scale)  # (B, T, N, N)
            values.append(rearrange(v, "b c t h w -> b t (h w) c"))
        if self.use_short:
            size = (math.ceil(h / self.pool), math.ceil(w / self.pool))
            ks = F.adaptive_avg_pool2d(rearrange(k, "b c t h w -> (b t) c h w"), size)
            vs = F.adaptive_avg_pool2d(rearrange(v, "b c t h w -> (b t) c h w"), size)
            ks = rearrange(ks, "(b t) c h w -> b t (h w) c", b=b)  # (B, T, N', C')
            vs = rearrange(vs, "(b t) c h w -> b t (h w) c", b=b)  # (B, T, N', C_out)
            ls = torch.einsum("btnc,bsmc->btnsm", q, ks) * scale  # (B, T, N, T, N')
            mask = self._short_term_mask(t, x.device)[None, :, None, :, None]
            ls = ls.masked_fill(~mask, float("-inf"))
            logits.append(rearrange(ls, "b t n s m -> b t n (s m)"))  # (B, T, N, T·N')
            values.append(vs)
        if self.use_long:
            cls = self.class_tokens(x)  # (B, T, C_in)
            kl = self._linear(self.key, cls)  # (B, T, C')
            vl = self._linear(self.value, cls)  # (B, T, C_out)
            logits.append(torch.einsum("btnc,bsc->btns", q, kl) * scale)  # (B, T, N, T)
            values.append(vl)
        attn = torch.cat(logits, dim=-1).softmax(dim=-1)  # (B, T, N, keys)
        sizes = [lg.shape[-1] for lg in logits]
        out = 0
        for a, val, kind in zip(attn.split(sizes, dim=-1), values, self._parts(), strict=True):
            if kind == "current":
                out = out + torch.einsum("btnm,btmc->btnc", a, val)
            elif kind == "short":
                a = rearrange(a, "b t n (s m) -> b t n s m", s=t)
                out = out + torch.einsum("btnsm,bsmc->btnc", a, val)
            else:
                out = out + torch.einsum("btns,bsc->btnc", a, val)
        return rearrange(out, "b t (h w) c -> b c t h w", h=h)  # (B, C_out, T, H, W)

    def _parts(self) -> list[str]:
        return [
            kind
            for kind, used in (
                ("current", self.use_current),
                ("short", self.use_short),
                ("long", self.use_long),
            )
            if used
        ]


class STA(nn.Module):
    """STA block: ``x + BN(conv(STAttention(x)))`` with the BatchNorm weight starting at zero.

    Args:
        channels: C, input and output channels.
        inner_channels: attention width (query, key and value channels; default C // 2).
        t_o, pool, class_token, dim: see ``STAttention``.

    Shape:
        - Input: ``(B, C, T, H, W)``; Output: ``(B, C, T, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        inner_channels: int | None = None,
        t_o: int = 3,
        pool: int = 2,
        class_token: str = "learned",
        dim: str = "spatiotemporal",
    ) -> None:
        super().__init__()
        inner = max(channels // 2, 1) if inner_channels is None else inner_channels
        self.attention = STAttention(
            channels, inner, inner, t_o=t_o, pool=pool, class_token=class_token, dim=dim
        )
        self.proj = nn.Conv3d(inner, channels, 1)
        self.norm = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.proj(self.attention(x)))  # (B, C, T, H, W)
