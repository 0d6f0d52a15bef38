"""Why the sink's connection weights get no lasting signal (issue 14's diagnosis), as an identity.

Node ``k``'s term in the sink is ``p_k (W_k o_k + b_k)``: its mixing weight scales its own
1×1×1 convolution. So the loss's derivative by ``p_k`` is fixed by those of the convolution:
``p_k ∂L/∂p_k = <W_k, ∂L/∂W_k> + <b_k, ∂L/∂b_k>``, and through the softmax the sink logit's
gradient is ``s_k - p_k Σ_l s_l`` with ``s_k`` that right-hand side. Whenever the network's
optimiser has brought the sink convolutions near a stationary point, the sink logits' gradient
is near zero, whatever the node is worth: the network absorbs what the weights would learn.
"""

from __future__ import annotations

import torch

from attnas.space import load_space
from attnas.supergraph import SuperGraph

SHAPE = (16, 4, 4, 4)
ACTS4 = ("none", "relu", "sigmoid", "softmax")
NODES6 = list(load_space("attention_nas").supergraph.nodes)


def _randomised(seed: int) -> SuperGraph:
    gen = torch.Generator().manual_seed(seed)
    sg = SuperGraph(2, NODES6, 16, 4, SHAPE, [ACTS4] * 6).double()
    sg.arch_weights.double()
    with torch.no_grad():
        for p in [*sg.parameters(), *sg.arch_weights.parameters()]:
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return sg


def test_sink_logit_gradient_is_fixed_by_the_sink_convolutions_gradients():
    for seed, fused in ((0, True), (1, False)):
        sg = _randomised(seed)
        sg.fused = fused
        x = torch.randn(3, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        target = torch.randn_like(x)
        (sg(x) - target).square().mean().backward()
        p = sg.arch_weights.sink_probs().detach()
        s = torch.stack(
            [(c.weight * c.weight.grad).sum() + (c.bias * c.bias.grad).sum() for c in sg.sink_convs]
        )
        grad = sg.arch_weights.w_sink.grad
        assert grad.abs().max() > 1e-4  # a real gradient, not a vanishing one
        torch.testing.assert_close(grad, s - p * s.sum(), rtol=0, atol=1e-12)
