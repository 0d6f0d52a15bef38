"""The sink-normalisation probe: inside ``normalized_sink`` a node's share of the sink is set by
its mixing weight alone (rescaling the node's sink kernel changes nothing), the sink logits get
a gradient the sink convolutions no longer fix, and ``SuperGraph`` is itself again afterwards."""

from __future__ import annotations

import torch

from attnas.space import load_space
from attnas.supergraph import SuperGraph
from experiments.sink_norm_probe import normalized_sink

SHAPE = (16, 4, 4, 4)
ACTS4 = ("none", "relu", "sigmoid", "softmax")
NODES6 = list(load_space("attention_nas").supergraph.nodes)


def _built(seed: int) -> SuperGraph:
    torch.manual_seed(seed)
    sg = SuperGraph(2, NODES6, 16, 4, SHAPE, [ACTS4] * 6).double()
    sg.arch_weights.double()
    with torch.no_grad():
        sg.out_norm.weight.fill_(1.0)
        sg.arch_weights.w_sink.normal_()
    return sg


def test_a_node_cannot_rescale_its_own_term_inside_the_probe():
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    with normalized_sink():
        sg = _built(0)
        before = sg(x)
        with torch.no_grad():
            sg.sink_convs[3].weight.mul_(5.0)
        torch.testing.assert_close(sg(x), before, rtol=0, atol=1e-10)
        with torch.no_grad():
            sg.arch_weights.w_sink[3] += 1.0
        assert (sg(x) - before).abs().max() > 1e-3  # the mixing weight still acts
    plain = _built(0)
    out = plain(x)
    with torch.no_grad():
        plain.sink_convs[3].weight.mul_(5.0)
    assert (plain(x) - out).abs().max() > 1e-3  # outside the probe the kernel's scale acts
    assert not hasattr(plain, "_probe_norm")


def test_the_sink_logits_gradient_is_no_longer_the_convolutions_scale_gradient():
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    with normalized_sink():
        sg = _built(1)
        sg(x).sin().sum().backward()
    s = torch.stack([(c.weight * c.weight.grad).sum() for c in sg.sink_convs])
    torch.testing.assert_close(s, torch.zeros_like(s), rtol=0, atol=1e-10)  # scale-free kernels
    assert sg.arch_weights.w_sink.grad.abs().max() > 1e-4  # while the logits still learn
