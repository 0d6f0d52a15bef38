"""The I3D head's average pool: ``separable_avg_pool3d`` equals ``F.avg_pool3d`` (values and
gradients, float64), and the head keeps ``DeterministicAvgPool3d`` through the frame-wise control.

On CUDA with deterministic algorithms on, ``avg_pool3d``'s backward raises; the head then takes
the separable route (exercised for real in ``tests/gpu/test_cuda_determinism.py``).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from attnas.backbones import build_backbone
from attnas.backbones.i3d import DeterministicAvgPool3d, separable_avg_pool3d
from attnas.train import set_temporal_kernels_to_one


@pytest.mark.parametrize(
    ("shape", "kernel", "stride"),
    [
        ((2, 5, 4, 7, 7), (2, 7, 7), (1, 1, 1)),  # the I3D head at 64x224^2 (T = 8 there)
        ((1, 3, 6, 9, 8), (2, 3, 3), (1, 2, 2)),
        ((2, 2, 5, 6, 6), (3, 2, 2), (2, 2, 2)),
        ((1, 4, 3, 5, 5), (1, 5, 5), (1, 1, 1)),
    ],
)
def test_separable_pool_equals_avg_pool3d(shape, kernel, stride) -> None:
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    want = F.avg_pool3d(x, kernel, stride)
    got = separable_avg_pool3d(x, kernel, stride)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    g = torch.randn_like(want)
    (grad_want,) = torch.autograd.grad(want, x, g)
    (grad_got,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(grad_got, grad_want, rtol=0, atol=1e-12)


def test_head_uses_the_deterministic_pool_and_the_frame_wise_control_keeps_it() -> None:
    model = build_backbone("i3d_tiny", 4, (3, 8, 32, 32))
    pools = [m for m in model.modules() if isinstance(m, DeterministicAvgPool3d)]
    assert len(pools) == 1 and pools[0].kernel_size[0] == 2
    set_temporal_kernels_to_one(model)
    pools = [m for m in model.modules() if isinstance(m, DeterministicAvgPool3d)]
    assert len(pools) == 1 and pools[0].kernel_size[0] == 1


def test_cpu_forward_is_the_plain_pool_even_in_deterministic_mode() -> None:
    x = torch.randn(2, 3, 4, 5, 5, dtype=torch.float64)
    pool = DeterministicAvgPool3d((2, 5, 5), stride=1)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(pool(x), F.avg_pool3d(x, (2, 5, 5), 1))
    finally:
        torch.use_deterministic_algorithms(previous)
