"""STA against a naive per-query restatement that builds each query's key set in loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnas.blocks.sta import STA, STAttention


def naive_sta(x, core: STAttention):
    """Per query (b, i, position): list its keys/values explicitly, softmax(q·k/√C') v."""
    wq, bq = core.query.weight.flatten(1), core.query.bias
    wk, bk = core.key.weight.flatten(1), core.key.bias
    wv, bv = core.value.weight.flatten(1), core.value.bias
    b, _, t, h, w = x.shape
    scale = math.sqrt(core.inner_channels)
    half = core.t_o // 2
    size = (math.ceil(h / core.pool), math.ceil(w / core.pool))
    out = torch.zeros(b, core.out_channels, t, h, w, dtype=x.dtype)
    for bi in range(b):
        frames = [x[bi, :, i].reshape(x.shape[1], -1).T for i in range(t)]  # (HW, C_in) each
        pooled = [
            F.adaptive_avg_pool2d(x[bi, :, i], size).reshape(x.shape[1], -1).T for i in range(t)
        ]
        cls = []
        for i in range(t if core.use_long else 0):
            if core.class_token == "mean":
                cls.append(frames[i].mean(0))
            else:
                q0 = wq @ core.cls + bq
                a = torch.softmax(
                    torch.stack([q0 @ (wk @ tok + bk) for tok in frames[i]]) / scale, 0
                )
                cls.append(sum(a[j] * frames[i][j] for j in range(h * w)))
        for i in range(t):
            tokens = []  # input-space tokens forming this frame's key set
            if core.use_current:
                tokens += list(frames[i])
            if core.use_short:
                for s in range(i - half, i + half + 1):
                    if s != i and 0 <= s < t:
                        tokens += list(pooled[s])
            if core.use_long:
                tokens += cls
            keys = torch.stack([wk @ tok + bk for tok in tokens])
            vals = torch.stack([wv @ tok + bv for tok in tokens])
            for n in range(h * w):
                q = wq @ frames[i][n] + bq
                a = torch.softmax(keys @ q / scale, 0)
                out[bi, :, i, n // w, n % w] = a @ vals
    return out


@pytest.mark.parametrize("dim", ["spatial", "temporal", "spatiotemporal"])
@pytest.mark.parametrize("class_token", ["learned", "mean"])
@pytest.mark.parametrize(("t_o", "pool"), [(3, 2), (5, 3), (1, 1)])
def test_matches_naive_per_query_restatement(dim, class_token, t_o, pool):
    torch.manual_seed(0)
    core = STAttention(
        3, 5, inner_channels=4, t_o=t_o, pool=pool, class_token=class_token, dim=dim
    ).double()
    if class_token == "learned" and core.use_long:
        with torch.no_grad():
            core.cls.normal_()
    x = torch.randn(2, 3, 4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(core(x), naive_sta(x, core), rtol=0, atol=1e-10)


def test_key_set_sizes():
    """Short-term: the t_o - 1 neighbouring frames (fewer at the borders), never frame i."""
    core = STAttention(2, 2, t_o=3, pool=2, dim="spatiotemporal")
    mask = core._short_term_mask(5, torch.device("cpu"))
    assert mask.sum(1).tolist() == [1, 2, 2, 2, 1]
    assert not mask.diagonal().any()


def test_block_starts_as_identity_and_learns():
    block = STA(8, t_o=3).double()
    x = torch.randn(2, 8, 4, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    block(x).square().sum().backward()
    assert block.norm.weight.grad.abs().sum() > 0
    assert block.attention.value.weight.grad is not None


def test_unknown_options_named():
    with pytest.raises(ValueError, match="dim must be one of"):
        STAttention(4, 4, dim="time")
    with pytest.raises(ValueError, match="class_token must be one of"):
        STAttention(4, 4, class_token="cls")
    with pytest.raises(
        ValueError, match=r"expected input \(B, 4, T, H, W\), got \(1, 3, 2, 2, 2\)"
    ):
        STAttention(4, 4)(torch.randn(1, 3, 2, 2, 2))
