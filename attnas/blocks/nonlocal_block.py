"""The non-local block (Wang et al. 2018), weight-compatible with pytorchvideo's.

It computes the function of pytorchvideo's ``create_nonlocal`` (REFERENCE_OPS.md), whose
operation order is the original Caffe2 code's: θ = conv_theta(x); the optional max-pool is
applied to x *before* conv_phi and conv_g; A = θᵀφ, then softmax(A · d^-1/2) over the pooled
positions (``instantiation="softmax"``, embedded Gaussian) or A / N' (``"dot_product"``);
out = x + norm(conv_out(A gᵀ)). Parameter names equal the official ones, so an official
state_dict loads as it is. The softmax path runs through PyTorch's fused
``scaled_dot_product_attention``.

The baseline every searched cell is compared with: in the non-local paper's I3D-R50 it sits
after blocks 1 and 3 of res3 and 1, 3, 5 of res4, with ``dim_inner = dim_in / 2`` and the last
BatchNorm's weight initialised to zero, so inserting it leaves a trained network unchanged.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

INSTANTIATIONS = ("softmax", "dot_product")


class NonLocalBlock(nn.Module):
    """Non-local block with residual.

    Args:
        dim_in: input (and output) channels.
        dim_inner: channels of θ, φ, g (the non-local paper uses ``dim_in // 2``).
        pool_size: max-pool kernel (= stride) applied to x before φ and g; ``(1, 1, 1)``: none.
        instantiation: ``"softmax"`` (embedded Gaussian) or ``"dot_product"``.
        norm: whether to apply BatchNorm3d after ``conv_out``.
        norm_eps: BatchNorm epsilon.
        norm_momentum: BatchNorm momentum.
        zero_init_final_norm: start the final BatchNorm's weight at zero (block = identity).

    Shape:
        ``(B, dim_in, T, H, W) -> (B, dim_in, T, H, W)``.
    """

    def __init__(
        self,
        dim_in: int,
        dim_inner: int,
        pool_size: tuple[int, int, int] = (1, 1, 1),
        instantiation: str = "softmax",
        norm: bool = True,
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
        zero_init_final_norm: bool = True,
    ):
        super().__init__()
        if instantiation not in INSTANTIATIONS:
            raise ValueError(
                f"NonLocalBlock: instantiation {instantiation!r} is not one of {INSTANTIATIONS}"
            )
        pool_size = tuple(int(p) for p in pool_size)
        if len(pool_size) != 3 or min(pool_size) < 1:
            raise ValueError(f"NonLocalBlock: pool_size must be 3 positive ints, got {pool_size}")
        self.dim_in = dim_in
        self.dim_inner = dim_inner
        self.instantiation = instantiation
        self.pool_size = pool_size
        self.conv_theta = nn.Conv3d(dim_in, dim_inner, kernel_size=1)
        self.conv_phi = nn.Conv3d(dim_in, dim_inner, kernel_size=1)
        self.conv_g = nn.Conv3d(dim_in, dim_inner, kernel_size=1)
        self.pool = (
            nn.MaxPool3d(kernel_size=pool_size, stride=pool_size)
            if pool_size != (1, 1, 1)
            else None
        )
        self.conv_out = nn.Conv3d(dim_inner, dim_in, kernel_size=1)
        self.norm = nn.BatchNorm3d(dim_in, eps=norm_eps, momentum=norm_momentum) if norm else None
        if self.norm is not None and zero_init_final_norm:
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        theta = self.conv_theta(x)  # (B, d, T, H, W)
        x_p = self.pool(x) if self.pool is not None else x  # (B, C, T', H', W')
        phi = self.conv_phi(x_p)  # (B, d, T', H', W')
        g = self.conv_g(x_p)  # (B, d, T', H', W')
        q = rearrange(theta, "b d t h w -> b (t h w) d")  # (B, THW, d)
        k = rearrange(phi, "b d t h w -> b (t h w) d")  # (B, T'H'W', d)
        v = rearrange(g, "b d t h w -> b (t h w) d")  # (B, T'H'W', d)
        if self.instantiation == "softmax":
            # contiguous (B, 1, N, d) inputs let PyTorch pick its fused flash kernel on CPU
            q, k, v = (t.contiguous()[:, None] for t in (q, k, v))  # (B, 1, N, d)
            y = F.scaled_dot_product_attention(q, k, v, scale=self.dim_inner**-0.5)[:, 0]
        else:
            attn = torch.matmul(q, k.transpose(-1, -2)) / k.shape[1]  # (B, THW, T'H'W')
            y = torch.matmul(attn, v)  # (B, THW, d)
        y = rearrange(y, "b (t h w) d -> b d t h w", t=t, h=h, w=w)  # (B, d, T, H, W)
        p = self.conv_out(y)  # (B, C, T, H, W)
        if self.norm is not None:
            p = self.norm(p)
        return x + p

    def extra_repr(self) -> str:
        return (
            f"dim_in={self.dim_in}, dim_inner={self.dim_inner}, pool_size={self.pool_size}, "
            f"instantiation={self.instantiation!r}"
        )
