"""CUDA determinism: two seeded trials with ``TrainConfig.deterministic`` agree bitwise, and the
I3D head's pool (``DeterministicAvgPool3d``) backpropagates under deterministic algorithms
where ``avg_pool3d`` raises."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from attnas.backbones import build_backbone
from attnas.train import deterministic_mode
from experiments import gpu_check

DEVICE = torch.device("cuda")

pytestmark = pytest.mark.gpu


def test_plain_avg_pool3d_raises_and_the_head_pool_does_not() -> None:
    x = torch.randn(2, 8, 4, 7, 7, device="cuda", requires_grad=True)
    with deterministic_mode(True):
        with pytest.raises(RuntimeError, match="deterministic"):
            F.avg_pool3d(x, (2, 7, 7), 1).sum().backward()
        model = build_backbone("i3d_tiny", 4, (3, 8, 32, 32)).to(DEVICE)
        clips = torch.randn(2, 3, 8, 32, 32, device="cuda")
        grads = []
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(clips), torch.tensor([0, 1], device="cuda")).backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.equal(grads[0], grads[1])


def test_two_seeded_trials_are_identical(tmp_path) -> None:
    ctx = gpu_check.CheckContext(torch.device("cuda"), dry_run=True, scratch=tmp_path)
    f = gpu_check.check_determinism(ctx).figures
    assert f["tensors_differing"] == 0 and f["metrics_identical"]
    assert f["top1"][0] == f["top1"][1]
