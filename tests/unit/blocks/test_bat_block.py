"""BATBlock / BATransform against an explicit-kron restatement of the official function.

``naive_bat`` restates REFERENCE_OPS.md's video BAT block from a state_dict with functional ops,
building the full block matrices kron(P, I_{H/s}) with ``torch.kron`` and mixing time with
kron(T, I_{T/ts}) in a loop over channels; it is checked against the oracle file, and our module
against it over a grid of configurations.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnas.blocks.bat import BATBlock, BATransform

ORACLE = "bat_video_block_T4_H8_s4_ts2_k4_tk2.pt"


def _cbr(x, sd, prefix, train):
    y = F.conv3d(x, sd[f"{prefix}.0.weight"], sd[f"{prefix}.0.bias"])
    y = F.batch_norm(
        y,
        sd[f"{prefix}.1.running_mean"].clone(),
        sd[f"{prefix}.1.running_var"].clone(),
        sd[f"{prefix}.1.weight"],
        sd[f"{prefix}.1.bias"],
        training=train,
        eps=1e-5,
    )
    return F.relu(y)


def _norm(a, dim, normalization):
    if normalization == "softmax":
        return torch.softmax(a, dim=dim)
    a = torch.sigmoid(a)
    return a / a.sum(dim=dim, keepdim=True)


def naive_transform(
    u,
    sd,
    s,
    ts,
    k,
    tk,
    train,
    spatial=True,
    temporal=True,
    normalization="softmax",
    prefix="batransform",
):
    """The official BATransform, full-size matrices built with torch.kron, loops over (b, c, t)."""
    f = _cbr(u, sd, f"{prefix}.conv1", train)
    b, c, t, h, w = u.shape
    y = u.clone()
    if spatial:
        rp = F.adaptive_max_pool3d(f, (t, s, 1))
        cp = F.adaptive_max_pool3d(f, (t, 1, s))
        p = F.conv3d(rp, sd[f"{prefix}.conv_p.weight"], sd[f"{prefix}.conv_p.bias"]).reshape(
            b, k, s, s, t
        )
        q = F.conv3d(cp, sd[f"{prefix}.conv_q.weight"], sd[f"{prefix}.conv_q.bias"]).reshape(
            b, k, s, s, t
        )
        p, q = _norm(p, 3, normalization), _norm(q, 2, normalization)
        for bi in range(b):
            for ci in range(c):
                g = ci // (c // k)
                for ti in range(t):
                    p_big = torch.kron(p[bi, g, :, :, ti], torch.eye(h // s, dtype=u.dtype))
                    q_big = torch.kron(q[bi, g, :, :, ti], torch.eye(w // s, dtype=u.dtype))
                    y[bi, ci, ti] = p_big @ u[bi, ci, ti] @ q_big
    if temporal:
        tp = F.adaptive_avg_pool3d(f, (ts, 1, 1))
        tm = F.conv3d(tp, sd[f"{prefix}.conv_t.weight"], sd[f"{prefix}.conv_t.bias"]).reshape(
            b, tk, ts, ts
        )
        tm = _norm(tm, 3, normalization)
        z = torch.empty_like(y)
        for bi in range(b):
            for ci in range(c):
                t_big = torch.kron(tm[bi, ci // (c // tk)], torch.eye(t // ts, dtype=u.dtype))
                z[bi, ci] = torch.einsum("ij,jhw->ihw", t_big, y[bi, ci])
        y = z
    return _cbr(y, sd, f"{prefix}.conv2", train)


def naive_bat(x, sd, s, ts, k, tk, train=False, normalization="softmax"):
    """The official BATBlock (dropout 0)."""
    u = _cbr(x, sd, "conv1", train)
    z = naive_transform(u, sd, s, ts, k, tk, train, temporal=tk > 0, normalization=normalization)
    return x + _cbr(z, sd, "conv2", train)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in module.state_dict().items():
            if not buf.dtype.is_floating_point:
                continue
            val = torch.randn(buf.shape, generator=gen, dtype=buf.dtype)
            buf.copy_(val.abs() + 0.5 if name.endswith("running_var") else val * 0.5)


def test_naive_restatement_matches_oracle(load_oracle):
    case = load_oracle(ORACLE)
    c = case["ctor"]
    for train, key in ((False, "output_eval"), (True, "output_train")):
        ref = naive_bat(case["input"], case["state_dict"], c["s"], c["ts"], c["k"], c["tk"], train)
        torch.testing.assert_close(ref, case[key], rtol=0, atol=1e-10)


GRID = [
    # C, r, s, ts, k, tk, (T, H, W)
    (16, 2, 4, 2, 4, 2, (4, 8, 8)),
    (8, 2, 2, 4, 2, 0, (3, 4, 6)),  # 2D BAT (tk = 0), H != W, T free
    (6, 1, 3, 1, 1, 1, (2, 6, 6)),
    (8, 2, 2, 4, 4, 4, (4, 2, 2)),  # s == H, ts == T
    (12, 3, 2, 2, 2, 1, (6, 4, 8)),
    (8, 1, 1, 3, 8, 2, (3, 3, 3)),  # s = 1: P, Q are scalars per group
]


@pytest.mark.parametrize("cfg", GRID, ids=lambda c: f"C{c[0]}-s{c[2]}-ts{c[3]}-k{c[4]}-tk{c[5]}")
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_block_matches_naive_restatement(cfg, train):
    c, r, s, ts, k, tk, (t, h, w) = cfg
    block = BATBlock(c, r=r, s=s, ts=ts, k=k, tk=tk, dropout=0.0).double()
    _randomize(block, seed=c + s + k)
    block.train(train)
    x = torch.randn(2, c, t, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = naive_bat(x, block.state_dict(), s, ts, k, tk, train)
    torch.testing.assert_close(block(x), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dim", ["spatial", "temporal", "spatiotemporal"])
@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_transform_dims_and_normalizations(dim, normalization):
    core = BATransform(8, s=2, ts=2, k=4, tk=2, dim=dim, normalization=normalization).double()
    _randomize(core, seed=7)
    core.eval()
    u = torch.randn(2, 8, 4, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = naive_transform(
        u,
        {f"t.{k}": v for k, v in core.state_dict().items()},
        2,
        2,
        4,
        2,
        False,
        spatial=dim != "temporal",
        temporal=dim != "spatial",
        normalization=normalization,
        prefix="t",
    )
    torch.testing.assert_close(core(u), ref, rtol=0, atol=1e-10)
    has = {name.split(".")[0] for name in core.state_dict()}
    assert ("conv_p" in has) == ("conv_q" in has) == (dim != "temporal")
    assert ("conv_t" in has) == (dim != "spatial")


def test_sigmoid_matrices_are_l1_normalised():
    core = BATransform(8, s=2, ts=2, k=2, tk=2, normalization="sigmoid").double().eval()
    mats = core.matrices(torch.randn(1, 8, 2, 4, 4, dtype=torch.float64))
    ones = torch.ones((), dtype=torch.float64)
    torch.testing.assert_close(mats["P"].sum(-1), ones.expand_as(mats["P"].sum(-1)))
    torch.testing.assert_close(mats["Q"].sum(-2), ones.expand_as(mats["Q"].sum(-2)))
    torch.testing.assert_close(mats["T"].sum(-1), ones.expand_as(mats["T"].sum(-1)))
    assert all(bool((m > 0).all()) for m in mats.values())


def test_parameter_names_are_the_official_ones():
    names = set(BATBlock(16, r=2, s=4, ts=2, k=4, tk=2).state_dict())
    assert "batransform.conv_t.weight" in names and "conv2.1.running_var" in names
    assert "batransform.conv_t.weight" not in BATBlock(16, s=4, k=4, tk=0).state_dict()


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 16, 4, 9, 9), r"H and W must be positive multiples of s=4 .* \(1, 8, 4, 9, 9\)"),
        ((1, 16, 4, 8, 10), r"multiples of s=4 .* \(1, 8, 4, 8, 10\)"),
        ((1, 16, 4, 2, 2), r"multiples of s=4"),
        ((1, 16, 3, 8, 8), r"T must be a positive multiple of ts=2 .* \(1, 8, 3, 8, 8\)"),
    ],
)
def test_shapes_the_official_code_cannot_run(shape, match):
    block = BATBlock(16, r=2, s=4, ts=2, k=4, tk=2).eval()
    with pytest.raises(ValueError, match=match):
        block(torch.randn(shape))


def test_bad_channel_groups_rejected():
    with pytest.raises(ValueError, match=r"in_channels \(6\) divisible by k \(4\)"):
        BATBlock(12, r=2, k=4)
    with pytest.raises(ValueError, match=r"divisible by tk; got tk=4"):
        BATBlock(12, r=2, k=2, tk=4)
