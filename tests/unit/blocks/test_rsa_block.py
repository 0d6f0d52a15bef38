"""RSA against an explicit unfolded-context restatement of the official function and the oracle.

``naive_rsa`` restates REFERENCE_OPS.md's RSA in the paper's literal form (Eq. 6–9 with
H = H1 H2ᵀ, P = H2 P1, Eq. 7's M×M self-correlation): it unfolds each position's kt×kh×kw context
explicitly and never uses a convolution for the context. ``experiments/bench/rsa_memory.py``
reuses it for the memory comparison.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnas.blocks.rsa import RSA


def _l2(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(dim=dim, keepdim=True) + 1e-6)


def _unfold_context(x: torch.Tensor, kernel_size: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T·H·W, M, C): each position's zero-padded context, raster order."""
    kt, kh, kw = kernel_size
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt // 2, kt // 2))
    u = xp.unfold(2, kt, 1).unfold(3, kh, 1).unfold(4, kw, 1)  # (B, C, T, H, W, kt, kh, kw)
    b, c = x.shape[:2]
    return u.reshape(b, c, -1, kt * kh * kw).permute(0, 2, 3, 1)


def naive_rsa(
    x: torch.Tensor,
    sd: dict[str, torch.Tensor],
    nh: int,
    dk: int,
    dv: int,
    dd: int,
    kernel_size: tuple[int, int, int],
    stride: tuple[int, int, int],
    kernel_type: str,
    feat_type: str,
) -> torch.Tensor:
    """The official RSA function with the context unfolded and M×M matrices formed explicitly."""
    b, _, t, h, w = x.shape
    m = math.prod(kernel_size)
    proj = F.conv3d(x, sd["projection.weight"])
    d_key = 0 if kernel_type == "V" else dk
    q, key, v = torch.split(proj, [nh * dk, d_key, dv], dim=1)
    q = _l2(q.reshape(b, nh, dk, t, h, w), 2).reshape(b, nh, dk, -1).permute(0, 3, 1, 2)  # B N h c
    v = _l2(v, 1)
    vn = _unfold_context(v, kernel_size)  # (B, N, M, dv)
    h2 = sd["H2.weight"].reshape(dd, m)  # (D, M)
    # Kernel over the M context positions, per head: (B, N, nh, M).
    if kernel_type == "V":
        kappa = q @ h2  # basic kernel x^Q P^T with P = H2 (P1 = I)
    else:
        kn = _unfold_context(_l2(key, 1), kernel_size)  # (B, N, M, dk)
        h1 = sd["H1.weight"].reshape(dk, dd, m).permute(2, 0, 1)  # r(H1): (M, C, D)
        had = q[:, :, :, None, :] * kn[:, :, None, :, :]  # 1 (x^Q)^T ⊙ X^K: (B, N, nh, M, C)
        kappa_d = torch.einsum("bnhmc,mcd->bnhd", had, h1)  # vec(.) H1
        if kernel_type == "VplusR":
            kappa_d = kappa_d + torch.einsum("bnhc,cd->bnhd", q, sd["P1"][0])  # x^Q P1
        kappa = kappa_d @ h2  # (·) H2^T: (B, N, nh, M)
    # Context (B, N, M, dv).
    if feat_type == "V":
        ctx = vn
    else:
        g = sd["G.weight"].reshape(dv, m).T  # (M, dv)
        selfcorr = vn @ vn.transpose(-1, -2)  # X^V (X^V)^T: (B, N, M, M)
        ctx = selfcorr @ g  # X^R
        if feat_type == "VplusR":
            eye = sd["I"][0].expand(dv, dv)  # official I = eye(dk) broadcasts when dk == 1
            ctx = vn @ eye + ctx
    out = torch.einsum("bnhm,bnmv->bnvh", kappa, ctx)  # (B, N, dv, nh)
    out = out.reshape(b, t, h, w, dv * nh).permute(0, 4, 1, 2, 3)  # channel v·nh + h
    if max(stride) > 1:
        out = F.avg_pool3d(out, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    return out


def _randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


GRID = [
    # nh, dk, dv, dd, kernel_size, stride, kernel_type, feat_type, d_in, d_out
    (2, 0, 0, 0, (3, 5, 5), (1, 1, 1), "VplusR", "VplusR", 16, 16),
    (1, 4, 0, 0, (3, 3, 3), (1, 1, 1), "V", "V", 6, 4),
    (2, 3, 0, 0, (1, 3, 3), (1, 1, 1), "V", "R", 5, 6),
    (2, 3, 0, 5, (3, 1, 1), (1, 1, 1), "R", "V", 5, 6),
    (3, 2, 4, 3, (3, 3, 3), (1, 1, 1), "R", "R", 4, 12),
    (2, 0, 0, 2, (1, 3, 3), (1, 2, 2), "VplusR", "VplusR", 6, 8),
    (1, 5, 5, 3, (3, 3, 1), (2, 2, 2), "VplusR", "R", 7, 5),
    (2, 3, 0, 0, (3, 3, 3), (1, 1, 1), "V", "VplusR", 4, 6),
    (1, 1, 3, 0, (3, 3, 3), (1, 1, 1), "R", "VplusR", 3, 3),
]


@pytest.mark.parametrize("cfg", GRID, ids=lambda c: f"{c[6]}-{c[7]}-nh{c[0]}-k{c[4]}-s{c[5][1]}")
def test_rsa_matches_naive_restatement(cfg):
    nh, dk, dv, dd, ks, stride, kt, ft, d_in, d_out = cfg
    module = RSA(
        d_in,
        d_out,
        nh=nh,
        dk=dk,
        dv=dv,
        dd=dd,
        kernel_size=ks,
        stride=stride,
        kernel_type=kt,
        feat_type=ft,
    ).double()
    _randomize(module, seed=sum(ks) + nh)
    x = torch.randn(
        2, d_in, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    ours = module(x)
    ref = naive_rsa(
        x, module.state_dict(), module.nh, module.dk, module.dv, module.dd, ks, stride, kt, ft
    )
    assert ours.shape == ref.shape == (2, nh * module.dv, 3, *ref.shape[-2:])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_naive_restatement_matches_oracle(load_oracle):
    case = load_oracle("rsa_VplusR_VplusR.pt")
    c, d = case["ctor"], case["derived"]
    ref = naive_rsa(
        case["input"],
        case["state_dict"],
        c["nh"],
        d["dk"],
        d["dv"],
        d["dd"],
        c["kernel_size"],
        c["stride"],
        c["kernel_type"],
        c["feat_type"],
    )
    torch.testing.assert_close(ref, case["output_eval"], rtol=0, atol=1e-10)
    module = RSA(**{k: v for k, v in c.items() if k != "cls"}).double()
    module.load_state_dict(case["state_dict"])
    torch.testing.assert_close(module(case["input"]), case["output_eval"], rtol=0, atol=1e-10)


def test_derived_sizes_and_parameter_shapes():
    m = RSA(16, 16, nh=2, dk=0, kernel_size=(3, 5, 5))
    assert (m.dv, m.dk, m.dd) == (8, 8, 8)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "projection.weight": (2 * 8 + 8 + 8, 16, 1, 1, 1),
        "H1.weight": (64, 1, 3, 5, 5),
        "H2.weight": (8, 1, 3, 5, 5),
        "G.weight": (8, 1, 3, 5, 5),
        "P1": (1, 8, 8),
        "I": (1, 8, 8),
    }
    assert set(RSA(4, 4, dk=4, kernel_type="V", feat_type="V").state_dict()) == {
        "projection.weight",
        "H2.weight",
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dk": 4, "dd": 3, "kernel_type": "V"}, "dk == dd; got dk=4, dd=3"),
        ({"dk": 2, "feat_type": "VplusR"}, "dk == dv"),
        ({"kernel_size": (3, 4, 4)}, r"odd sizes .* got \(3, 4, 4\)"),
        ({"kernel_type": "Q"}, "kernel_type must be one of"),
        ({"feat_type": "RR"}, "feat_type must be one of"),
    ],
)
def test_configurations_the_official_code_cannot_run(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RSA(8, 8, **kwargs)


def test_wrong_input_channels_named():
    with pytest.raises(
        ValueError, match=r"expected input \(B, 8, T, H, W\), got \(1, 4, 2, 3, 3\)"
    ):
        RSA(8, 8, dk=0)(torch.randn(1, 4, 2, 3, 3))


def test_gradient_reaches_every_parameter():
    m = RSA(4, 4, nh=2, dk=0, kernel_size=(3, 3, 3)).double()
    m(torch.randn(1, 4, 3, 4, 4, dtype=torch.float64)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
