"""Parameter and FLOP counts of a model (with whatever cells are inserted).

FLOPs come from PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts the
matrix products and convolutions (2 FLOPs per multiply-accumulate) and ignores elementwise work
(BatchNorm, ReLU, pooling, softmax). Papers often quote multiply-accumulates as "FLOPs"; halve our
number to compare with those.

The count runs the forward pass on a ``meta``-device copy of the model by default: no arithmetic
and no memory for activations, so counting the full I3D at 64×224×224 takes well under a second.
A module that cannot run on the meta device can be counted on the CPU with ``device="cpu"``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode


def _register_cpu_flash_attention() -> None:
    """Count PyTorch's CPU flash-attention kernels as its CUDA ones are counted.

    ``FlopCounterMode`` has formulas for the CUDA fused attention ops only, so on the CPU,
    where ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``,
    the attention's two matrix products counted nothing; on the meta device the op decomposes
    into counted ``bmm``s. Registered here so both devices give the same count.
    """
    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is None or forward in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward, get_raw=True)
    def _forward(query, key, value, *args, out_val=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    if backward is not None and backward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward, get_raw=True)
        def _backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
            return flop_counter.sdpa_backward_flop_count(
                grad_out.shape, query.shape, key.shape, value.shape
            )


_register_cpu_flash_attention()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and are not counted).

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The count.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    batch: int = 1,
    device: str | torch.device = "meta",
) -> int:
    """FLOPs of one forward pass (inference mode) for a batch of clips.

    Args:
        model: The model; its ``input_shape`` attribute is used when ``input_shape`` is None.
        input_shape: ``(3, T, H, W)`` of one clip.
        batch: Clips per forward pass.
        device: Where to run the counting pass: ``"meta"`` (a copy, no arithmetic) or a real
            device (the model itself, in eval mode, restored afterwards).

    Returns:
        FLOPs as counted by ``FlopCounterMode`` (2 per multiply-accumulate).
    """
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError(f"{type(model).__name__} has no input_shape; pass input_shape")
    device = torch.device(device)
    counted = copy.deepcopy(model).to(device) if device.type == "meta" else model
    was_training = counted.training
    counted.eval()
    x = torch.zeros((batch, *input_shape), device=device)  # (B, 3, T, H, W)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            counted(x)
    finally:
        counted.train(was_training)
    return int(counter.get_total_flops())
