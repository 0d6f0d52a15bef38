"""Benchmark 2: a supergraph node mixing 4 activations vs 4 separate ops.

The node is one op run through ``forward_mixed`` with the 4 activations of the space and their
softmax weights (learnable, so the backward reaches them as in the search): G1, G2, G3 and the
similarity are computed once and the mix is taken on W before one product with the value. The
comparison is with the naive node, 4 separate single-activation ops summed with the same
weights, and with one op alone.

"One op" is the mean, over the 4 activations, of a single-activation op's forward + backward
(a single softmax goes through the fused attention, the others form W explicitly), so the goal
``mixed / one op <= 1.5`` asks the mixed node to cost at most half an op more than an average
op. Each row's details give the ratio to every single op and to the 4 separate ops.
Nodes: dot and map attention over the spatiotemporal dim (the largest N), at a res4-like
insertion point with the space's C_op = C / 4.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from attnas.ops import build_op
from experiments.bench import (
    BenchConfig,
    BenchResult,
    interleaved_times,
    ms,
    paired_ratio,
    profile_lines,
    ratio_result,
)

NAME = "activation_mixing"
ACTIVATIONS = ("none", "relu", "sigmoid", "softmax")
NODE_TYPES = ("dot", "map")


def _node_result(cfg: BenchConfig, op_type: str) -> BenchResult:
    b, c, t, hw = cfg.pick((1, 16, 2, 4), (2, 256, 4, 14), (4, 256, 8, 14))
    c_op = c // 4
    dev = cfg.device
    torch.manual_seed(cfg.seed)
    shape = (c, t, hw, hw)
    mixed_op = build_op((op_type, "spatiotemporal", ACTIVATIONS[0]), c, c_op, shape).to(dev)
    singles = nn.ModuleList(
        build_op((op_type, "spatiotemporal", a), c, c_op, shape) for a in ACTIVATIONS
    ).to(dev)
    logits = torch.zeros(len(ACTIVATIONS), device=dev, requires_grad=True)
    x = torch.randn(b, *shape, device=dev, requires_grad=True)  # (B, C, T, H, W)

    def reset() -> None:
        mixed_op.zero_grad(set_to_none=True)
        singles.zero_grad(set_to_none=True)
        logits.grad = None
        x.grad = None

    def mixed() -> None:
        reset()
        weights = logits.softmax(0)
        mixed_op.forward_mixed(x, weights, ACTIVATIONS).sum().backward()

    def separate() -> None:
        reset()
        weights = logits.softmax(0)
        sum(w * op(x) for w, op in zip(weights, singles)).sum().backward()

    def single(op: nn.Module) -> None:
        reset()
        op(x).sum().backward()

    with torch.no_grad():  # the mixed node equals the weighted sum of its single activations
        weights = torch.softmax(torch.randn(len(ACTIVATIONS), device=dev), 0)
        ref = sum(w * mixed_op.forward_mixed(x, None, (a,)) for w, a in zip(weights, ACTIVATIONS))
        torch.testing.assert_close(
            mixed_op.forward_mixed(x, weights, ACTIVATIONS), ref, rtol=1e-4, atol=1e-5
        )
    fns = {"mixed": mixed, "four_separate": separate}
    fns.update({f"single_{a}": (lambda op=op: single(op)) for a, op in zip(ACTIVATIONS, singles)})
    times = interleaved_times(fns, cfg.rounds(7, 9), cfg.warmup, dev)
    one_op = [statistics.mean(r) for r in zip(*(times[f"single_{a}"] for a in ACTIVATIONS))]
    details = {
        "node": f"{op_type}/spatiotemporal",
        "B": b,
        "C": c,
        "C_op": c_op,
        "T": t,
        "H": hw,
        "W": hw,
        "rounds": len(one_op),
        "mixed_ms": ms(times["mixed"]),
        "one_op_mean_ms": ms(one_op),
        "four_separate_ms": ms(times["four_separate"]),
        **{f"single_{a}_ms": ms(times[f"single_{a}"]) for a in ACTIVATIONS},
        "mixed_over_four_separate": round(paired_ratio(times["mixed"], times["four_separate"]), 4),
        **{
            f"mixed_over_single_{a}": round(paired_ratio(times["mixed"], times[f"single_{a}"]), 4)
            for a in ACTIVATIONS
        },
    }
    return ratio_result(
        f"{NAME}/{op_type}_spatiotemporal",
        1.5,
        paired_ratio(times["mixed"], one_op),
        details,
        limit=lambda: profile_lines(mixed, dev),
        goal="4-activation node <= 1.5x one op",
    )


def run(cfg: BenchConfig) -> list[BenchResult]:
    """One row per node type: mixed-node time over one op's."""
    return [_node_result(cfg, op_type) for op_type in NODE_TYPES]
