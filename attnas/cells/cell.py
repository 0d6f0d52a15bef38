"""The discrete attention cell (AttentionNAS Sec. 3.2).

Wiring, for a ``CellSpec`` and an input f0 of C channels:

- op k's input is the weighted sum of the nodes in its ``inputs``, with one learnable scalar
  per input, initialised to ``1 / len(inputs)``. A node that reads a single node takes it as it
  is (a scalar there would only rescale the op's input; softmax attention is not
  scale-invariant, so we keep the single-input path free of it, which also makes a one-op cell
  exactly the non-local block).
- Ops output C_op channels. An op reading f0 alone takes its C channels; when f0 is summed with
  op outputs it first goes through one 1×1×1 projection C -> C_op shared by every such sum.
- The output nodes are concatenated on channels, a 1×1×1 conv (with bias) and a BatchNorm bring
  them back to C, and f0 is added. The BatchNorm's weight starts at zero (as in the non-local
  block), so at initialisation the cell is exactly the identity map.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnas.ops import build_op
from attnas.space import CellSpec


class AttentionCell(nn.Module):
    """A discrete attention cell built for feature maps of ``shape = (C, T, H, W)``.

    Args:
        spec: the cell's graph.
        channels: C, the cell's input and output channels.
        op_channels: C_op, every op's output channels.
        shape: the feature shape ``(C, T, H, W)`` the cell is built for.
        op_params: optional per-type options passed to ``build_op`` (e.g. a space file's
            ``op_types.<type>.params``).

    Shape:
        ``(B, C, T, H, W) -> (B, C, T, H, W)``.
    """

    def __init__(
        self,
        spec: CellSpec,
        channels: int,
        op_channels: int,
        shape: tuple[int, int, int, int],
        op_params: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if shape[0] != channels:
            raise ValueError(
                f"AttentionCell: shape {shape} has C={shape[0]} but channels={channels}"
            )
        self.spec = spec
        self.channels = channels
        self.op_channels = op_channels
        self.shape = shape
        op_params = op_params or {}
        _, t, h, w = shape
        self.ops = nn.ModuleList()
        # one learnable scalar per input, for ops that read several nodes (keyed by node index)
        self.input_weights = nn.ParameterDict()
        needs_projection = False
        for k, node in enumerate(spec.ops, start=1):
            c_in = channels if node.inputs == (0,) else op_channels
            needs_projection |= 0 in node.inputs and len(node.inputs) > 1
            op_shape = (c_in, t, h, w)
            self.ops.append(
                build_op(
                    node.op, c_in, op_channels, op_shape, **dict(op_params.get(node.op.type, {}))
                )
            )
            n = len(node.inputs)
            if n > 1:
                self.input_weights[str(k)] = nn.Parameter(torch.full((n,), 1.0 / n))
        self.input_proj = (
            nn.Conv3d(channels, op_channels, kernel_size=1) if needs_projection else None
        )
        self.out_conv = nn.Conv3d(op_channels * len(spec.outputs), channels, kernel_size=1)
        self.out_norm = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.out_norm.weight)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        channels: int,
        op_channels: int,
        shape: tuple[int, int, int, int],
        **kwargs: Any,
    ) -> AttentionCell:
        """Build the cell described by a YAML/JSON cell file."""
        return cls(CellSpec.load(path), channels, op_channels, shape, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"AttentionCell was built for (B, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}: the shape is part of the ops (G1 of the temporal and "
                "map ops reads H·W·C features), so a cell runs on the (C, T, H, W) it was built "
                f"for; build it again with shape={tuple(x.shape[1:])} for this input"
            )
        feats: list[torch.Tensor | None] = [x]
        projected: torch.Tensor | None = None
        for k, (node, op) in enumerate(zip(self.spec.ops, self.ops), start=1):
            if len(node.inputs) == 1:
                inp = feats[node.inputs[0]]
            else:
                terms = []
                for w, i in zip(self.input_weights[str(k)], node.inputs):
                    if i == 0:
                        if projected is None:
                            projected = self.input_proj(x)  # (B, C_op, T, H, W)
                        terms.append(w * projected)
                    else:
                        terms.append(w * feats[i])
                inp = torch.stack(terms).sum(0)  # (B, C_op, T, H, W)
            feats.append(op(inp))  # (B, C_op, T, H, W)
        out = torch.cat([feats[o] for o in self.spec.outputs], dim=1)  # (B, C_op * |out|, T, H, W)
        return x + self.out_norm(self.out_conv(out))  # (B, C, T, H, W)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, op_channels={self.op_channels}, shape={self.shape}"
