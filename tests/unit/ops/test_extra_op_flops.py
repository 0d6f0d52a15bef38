"""FLOP counts of the bat and rsa ops against their papers' complexity tables.

``FlopCounterMode`` (the project's counter) gives 2 FLOPs per multiply-accumulate and counts only
matrix products and convolutions; ``attnas.ops.flops`` counts MACs of the same computations, and
its docstring maps each term of the papers' formulas onto them. Counting on the meta device
computes nothing, so paper-sized settings stay fast.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnas.blocks.bat import BATBlock
from attnas.blocks.rsa import RSA
from attnas.ops import build_op
from attnas.ops.flops import (
    bat_block_macs,
    bat_table1_macs,
    rsa_macs_per_position,
    rsa_table1_context_macs,
)


def _flops(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(shape, device="meta"))
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------- bat
def test_bat_block_matches_table1_at_full_resolution():
    """2D BAT-Block (tk = 0), C = 16 -> C/2 = 8, C' = k = 4, s = H = W = 4 (block size 1, so the
    block-based product is the table's dense P·X·Q), one frame: 2 × Table 1."""
    c, c_pred, h, w, s, k = 16, 4, 4, 4, 4, 4
    table = bat_table1_macs(c, c_pred, h, w, s, k)
    # 5/4·16²·16 + 1/2·16·16·8 + 1/2·16·4·16 + 2·4·4·64 = 5120 + 1024 + 512 + 2048
    assert table == 8704
    with torch.device("meta"):
        block = BATBlock(c, r=2, s=s, k=k, tk=0)
    assert _flops(block, (1, c, 1, h, w)) == 2 * table == 17408


def test_bat_op_matches_table1_when_shaped_like_the_block():
    """The op with C_in = C_out = C and C' = C/2: proj_in / proj_out are the block's 1×1 convs."""
    c, h, w = 32, 6, 6
    with torch.device("meta"):
        op = build_op(
            ("bat", "spatial", "sigmoid"), c, c, (c, 1, h, w), inner_channels=c // 2, s=6, k=4
        )
    assert op.macs() == bat_table1_macs(c, 4, h, w, 6, 4)
    assert _flops(op, (2, c, 1, h, w)) == 2 * 2 * bat_table1_macs(c, 4, h, w, 6, 4)


def test_bat_block_based_and_video_counts():
    """With s < H the block-based product replaces the table's H + W by 2s; the video block adds
    T frames of the 2D terms plus conv_t (k·tk·ts³) and the temporal product (C/2·THW·ts)."""
    c, t, h, w, s, ts, k, tk = 16, 4, 8, 8, 4, 2, 4, 2
    inner = c // 2
    per_frame_2d = (
        bat_table1_macs(c, k, h, w, s, k) - inner * h * w * (h + w) + inner * h * w * 2 * s
    )
    expected = t * per_frame_2d + k * tk * ts**3 + inner * t * h * w * ts
    assert bat_block_macs(c, t, h, w, r=2, s=s, ts=ts, k=k, tk=tk) == expected
    with torch.device("meta"):
        block = BATBlock(c, r=2, s=s, ts=ts, k=k, tk=tk)
    assert _flops(block, (1, c, t, h, w)) == 2 * expected


@pytest.mark.parametrize("dim", ["spatial", "temporal", "spatiotemporal"])
def test_bat_op_macs_equal_counter(dim):
    shape = (12, 4, 8, 8)
    with torch.device("meta"):
        op = build_op(("bat", dim, "softmax"), 12, 6, shape, inner_channels=8, ts=2, tk=2)
    assert _flops(op, (3, *shape)) == 2 * 3 * op.macs()


# ---------------------------------------------------------------------------------------- rsa
def test_rsa_counter_equals_exact_count():
    """d = 16, L = 2 queries, dk = dv = dd = 8, M = 3×5×5 on a 2×6×6 map (the oracle's setting)."""
    with torch.device("meta"):
        rsa = RSA(16, 16, nh=2, dk=0, kernel_size=(3, 5, 5))
    per_position = rsa_macs_per_position(16, 2, 8, 8, 8, (3, 5, 5))
    # projection 16·(16+8+8) + H1, H2, G 3·8·8·75 + q̂·corr 2·8·8 + rel·F_V 8³ + out 2·8·8
    assert per_position == 512 + 14400 + 128 + 512 + 128
    assert _flops(rsa, (1, 16, 2, 6, 6)) == 2 * 72 * per_position == 2_257_920


@pytest.mark.parametrize("num_queries", [1, 2, 4, 8])
def test_rsa_context_term_is_table1_order(num_queries):
    """Table 1, multi-query efficient RSA: time O(BNMC²/L²). The part of the count that grows with
    the context size is exactly 3·B·N·M·(C/L)² MACs (X^K ⊛ r(H1), H2ᵀX^V and (X^V)ᵀG)."""
    c, b, thw = 64, 2, (8, 14, 14)
    n = math.prod(thw)
    counts = {}
    for kernel in ((5, 7, 7), (3, 5, 5), (1, 1, 1)):
        with torch.device("meta"):
            rsa = RSA(c, c, nh=num_queries, dk=0, kernel_size=kernel)
        counts[math.prod(kernel)] = _flops(rsa, (b, c, *thw))
    for m in (245, 75):
        grown = counts[m] - counts[1]
        assert grown == 2 * b * n * (
            rsa_table1_context_macs(c, num_queries, m) - rsa_table1_context_macs(c, num_queries, 1)
        )
        assert grown == 2 * b * n * 3 * (m - 1) * (c // num_queries) ** 2
    # and the total is the exact count at the paper's default 5×7×7
    d = c // num_queries
    assert counts[245] == 2 * b * n * rsa_macs_per_position(c, num_queries, d, d, d, (5, 7, 7))


@pytest.mark.parametrize("dim", ["spatial", "temporal", "spatiotemporal"])
def test_rsa_op_macs_equal_counter(dim):
    shape = (8, 4, 8, 8)
    with torch.device("meta"):
        op = build_op(("rsa", dim, "none"), 8, 16, shape)
    m = math.prod(op.kernel_size)
    assert m == {"spatial": 49, "temporal": 5, "spatiotemporal": 245}[dim]
    assert _flops(op, (2, *shape)) == 2 * 2 * op.macs()


@pytest.mark.parametrize(("kernel_type", "feat_type"), [("V", "V"), ("R", "V"), ("V", "R")])
def test_rsa_counts_of_other_types(kernel_type, feat_type):
    with torch.device("meta"):
        rsa = RSA(
            8, 8, nh=2, dk=0, kernel_size=(3, 3, 3), kernel_type=kernel_type, feat_type=feat_type
        )
    per_position = rsa_macs_per_position(8, 2, 4, 4, 4, (3, 3, 3), kernel_type, feat_type)
    assert _flops(rsa, (1, 8, 2, 4, 4)) == 2 * 32 * per_position
