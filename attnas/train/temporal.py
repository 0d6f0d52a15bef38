"""A frame-wise control model: every temporal kernel of a 3D network set to 1.

``set_temporal_kernels_to_one(model)`` replaces, in place, every ``Conv3d`` whose temporal
kernel is larger than 1 by a ``1 × k_h × k_w`` convolution, and every ``MaxPool3d`` /
``AvgPool3d`` with a temporal window larger than 1 by a ``1 × k_h × k_w`` pool. Temporal
strides are kept and temporal padding dropped, so with "same" padding (``2 p = k - 1``) and
the even clip lengths used in practice every feature keeps its shape (checked against the
backbone's insertion points). The result processes each frame independently, then subsamples
frames where the original strided in time and averages over time in the head: a per-frame
model with late fusion, the control the embedded motion task is designed to defeat.

The new convolution's weights are the old ones summed over the temporal axis (undoing I3D's
inflation), so converting a freshly built model keeps its initialisation scale.

This lives in ``attnas.train`` because it is an experiment control applied to any backbone,
not a backbone of its own.
"""

from __future__ import annotations

import torch
from torch import nn


def _flat_conv(conv: nn.Conv3d) -> nn.Conv3d:
    _, kh, kw = conv.kernel_size
    _, ph, pw = conv.padding  # type: ignore[misc]
    _, dh, dw = conv.dilation
    new = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        (1, kh, kw),
        stride=conv.stride,
        padding=(0, ph, pw),
        dilation=(1, dh, dw),
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=2, keepdim=True))  # (C_out, C_in/g, 1, kh, kw)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _triple(v: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _flat_pool(pool: nn.MaxPool3d | nn.AvgPool3d) -> nn.Module:
    _, kh, kw = _triple(pool.kernel_size)
    stride = _triple(pool.stride if pool.stride is not None else pool.kernel_size)
    _, ph, pw = _triple(pool.padding)
    if isinstance(pool, nn.MaxPool3d):
        return nn.MaxPool3d(
            (1, kh, kw), stride=stride, padding=(0, ph, pw), ceil_mode=pool.ceil_mode
        )
    return type(pool)(  # keeps a subclass (the I3D head's DeterministicAvgPool3d)
        (1, kh, kw),
        stride=stride,
        padding=(0, ph, pw),
        ceil_mode=pool.ceil_mode,
        count_include_pad=pool.count_include_pad,
    )


def set_temporal_kernels_to_one(model: nn.Module) -> int:
    """Make every 3D convolution and pooling of ``model`` frame-wise (temporal kernel 1).

    Args:
        model: Any module; backbones with ``insertion_points()`` are checked to keep their
            feature shapes.

    Returns:
        The number of layers replaced.

    Raises:
        RuntimeError: If the change alters the feature shape at an insertion point.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new: nn.Module | None = None
            if isinstance(child, nn.Conv3d) and child.kernel_size[0] > 1:
                new = _flat_conv(child)
            elif (
                isinstance(child, nn.MaxPool3d | nn.AvgPool3d) and _triple(child.kernel_size)[0] > 1
            ):
                new = _flat_pool(child)
            if new is not None:
                setattr(parent, name, new)
                replaced += 1
    points = getattr(model, "insertion_points", None)
    stages = getattr(model, "stages", None)
    if callable(points) and isinstance(stages, nn.ModuleDict):
        from attnas.backbones.base import trace_stage_shapes

        traced = trace_stage_shapes(stages, model.input_shape)  # type: ignore[arg-type]
        changed = {n: (s, traced[n]) for n, s in points().items() if traced[n] != s}
        if changed:
            raise RuntimeError(
                "setting temporal kernels to 1 changed feature shapes at insertion points "
                f"(name: (before, after)): {changed}"
            )
    return replaced
