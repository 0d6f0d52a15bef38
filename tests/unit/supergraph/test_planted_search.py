"""A planted task on which one node of the supergraph is needed and the other is useless: the
search hook's connection weights must move toward the needed node within a small budget.

The task: clips ``x`` of shape ``(C, T=2, H, W)`` of i.i.d. normal values; the label is whether
the mean of frame 0 is positive. The model is one supergraph (one level, nodes dot/spatial and
dot/temporal) followed by a linear head that reads only frame 1 of its output. Frame 1 of the
residual carries nothing about frame 0, and a spatial op treats frames independently, so the
spatial node's contribution to frame 1 is uncorrelated with the label: only the temporal node
can move frame 0's content to where the head reads. No tuning: the demo's arch learning rate
(0.01) with the other search defaults (weight decay 1e-3, the sink BatchNorm at 0), the
trainer's usual AdamW, two epochs.

The threshold is set by what Adam can do, not by what a run reached: each logit moves by at
most about ``lr`` per step, so after ``s`` steps the two sink logits differ by at most
``2 · lr · s`` and the temporal node's probability is at most ``σ(2 · lr · s)``. The test asks
for a quarter of that move; gradients of random sign (the demo's failure) would give a random
walk of about ``σ(± 2 · lr · √s)``, a sixth of the required move at ``s = 32``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnas.space import SearchSpace
from attnas.supergraph.search import ArchitectureStep, DifferentiableSearchConfig, SupergraphFactory
from attnas.train import TrainConfig, Trainer

SPACE = SearchSpace.from_dict(
    {
        "name": "planted",
        "num_ops": 1,
        "op_types": {"dot": {"dims": ["spatial", "temporal"], "activations": ["none", "softmax"]}},
        "op_channel_ratio": 1.0,
        "supergraph": {"levels": 1, "nodes": "all"},
        "derivation": {"alpha": 1, "beta": 1},
    }
)
SHAPE = (4, 2, 2, 2)  # (C, T, H, W)


class _FrameZeroSign(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, *SHAPE, generator=g)  # (N, C, T, H, W)
        self.y = (self.x[:, :, 0].mean(dim=(1, 2, 3)) > 0).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


class _LastFrameReadout(nn.Module):
    def __init__(self, factory: SupergraphFactory) -> None:
        super().__init__()
        self.cell = factory("cell", SHAPE)
        c, _, h, w = SHAPE
        self.head = nn.Linear(c * h * w, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cell(x)[:, :, -1]  # (B, C, H, W): frame 1 only
        return self.head(out.flatten(1))  # (B, 2)


def test_connection_weights_move_toward_the_needed_node():
    torch.manual_seed(0)
    assert SPACE.supergraph.nodes == (("dot", "spatial"), ("dot", "temporal"))
    factory = SupergraphFactory(SPACE, position_specific=False)
    model = _LastFrameReadout(factory)
    arch = factory.attach(model)
    config = DifferentiableSearchConfig(arch_lr=0.01)
    hook = ArchitectureStep(factory, config, alpha=1, beta=1)
    train = TrainConfig(epochs=2, batch_size=32, optimizer="adamw", lr=1e-2, device="cpu",
                        progress=False, checkpoint_every=0)  # fmt: skip
    trainer = Trainer(model, _FrameZeroSign(512, 0), None, train, exclude_parameters=arch,
                      hooks=[hook])  # fmt: skip
    trainer.fit()
    steps = hook.steps
    assert steps == 32
    reachable = 1 / (1 + math.exp(-2 * config.arch_lr * steps))  # σ(2 · lr · s)
    p_temporal = float(factory.weights["all"].sink_probs().detach()[1])
    assert p_temporal > 0.5 + 0.25 * (reachable - 0.5), (p_temporal, reachable)
