"""Shrinking temporal attention (STA) as a searchable attention op.

``(B, C_in, T, H, W) -> (B, C_out, T, H, W)`` through the same ``STAttention`` core module as
``attnas.blocks.STA`` (its value projection maps C_in -> C_out, so the op needs no other
projection); no residual: the cell owns it.

- dim: ``spatial`` = current attention only (each frame's tokens attend their own frame);
  ``temporal`` = long-term attention only (every token attends the class tokens of all frames);
  ``spatiotemporal`` = current + short-term + long-term, one softmax over the concatenated keys
  (STA Eq. 7–8).
- activation: STA attends with softmax, the single activation the type declares.
- Defaults: C' (query/key width) = C_out, t_o = 3 (the paper's window for its shortest clips,
  T = 16), short-term keys pooled by 2 in H and W, learned class tokens (the paper's choice
  over spatial average pooling, its Table 3).
"""

from __future__ import annotations

import torch

from attnas.blocks.sta import STAttention
from attnas.ops.base import AttentionOp
from attnas.ops.registry import register_op
from attnas.space import DIMS, OpSpec


@register_op("sta", dims=DIMS, activations=("softmax",))
class ShrinkingTemporalAttention(AttentionOp):
    """STA over the op's dim.

    Args:
        spec: ``OpSpec("sta", dim, "softmax")``.
        c_in: input channels.
        c_out: output channels (the value channels).
        shape: input feature shape ``(C, T, H, W)``.
        inner_channels: C', query/key channels (default ``c_out``).
        t_o: short-term window in frames (current frame excluded).
        pool: short-term keys/values are average-pooled by this factor in H and W.
        class_token: ``learned`` or ``mean``.

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
        t_o: int = 3,
        pool: int = 2,
        class_token: str = "learned",
    ):
        super().__init__(spec, c_in, c_out, shape)
        if spec.activation != "softmax":
            raise ValueError(f"sta has only the activation 'softmax', got {spec}")
        self.attention = STAttention(
            c_in,
            c_out,
            inner_channels=inner_channels,
            t_o=t_o,
            pool=pool,
            class_token=class_token,
            dim=spec.dim,
        )

    def _forward_single(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        self.check_input(x)
        if activation != "softmax":
            raise ValueError(f"sta has no activation {activation!r}; it supports ['softmax']")
        return self.attention(x)  # (B, C_out, T, H, W)
