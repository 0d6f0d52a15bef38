"""Map and dot attention against an independent restatement of AttentionNAS Eq. 1–3.

The restatement follows DESIGN.md word by word with explicit Python loops over batch elements,
frames and positions: f' = ReshapeTo2D(f_in) is built by indexing (temporal: one row per frame of
H*W*C features, ordered (h, w, c); spatiotemporal: one row of C features per (t, h, w); spatial:
one (H*W, C) map per frame), G1/G2/G3 are applied position by position with the op's own
parameters, W is formed as a full N×N matrix (Diag for map), and Eq. 3 is W · ReshapeTo2D(G3(f)).
It shares no code with the ops (no einops, no batched matmul over positions).
"""

from __future__ import annotations

import math

import pytest
import torch

from attnas.ops import build_op

DIMS = ("spatial", "temporal", "spatiotemporal")
ACTIVATIONS = ("none", "relu", "sigmoid", "softmax")
C_IN, C_OUT, T, H, W = 3, 2, 3, 2, 3
SHAPE = (C_IN, T, H, W)


# ------------------------------------------------------------------------------ restatement
def _groups(dim: str) -> list[list[tuple[int, int, int]]]:
    """The attended position sets: per group (one per frame for spatial), its positions (t, h, w)
    in ReshapeTo2D row order; for temporal a "position" is a whole frame (t, None, None)."""
    if dim == "spatiotemporal":
        return [[(t, h, w) for t in range(T) for h in range(H) for w in range(W)]]
    if dim == "spatial":
        return [[(t, h, w) for h in range(H) for w in range(W)] for t in range(T)]
    return [[(t, -1, -1) for t in range(T)]]


def _row(f: torch.Tensor, dim: str, pos: tuple[int, int, int]) -> torch.Tensor:
    """Row of ReshapeTo2D(f) for one element f (C, T, H, W) at ``pos``, by explicit indexing."""
    t, h, w = pos
    c = f.shape[0]
    if dim != "temporal":
        return torch.stack([f[ci, t, h, w] for ci in range(c)])
    feats = []
    for hi in range(H):
        for wi in range(W):
            for ci in range(c):
                feats.append(f[ci, t, hi, wi])  # (h, w, c) order: index (hi*W + wi)*C + ci
    return torch.stack(feats)


def _write_row(out: torch.Tensor, dim: str, pos: tuple[int, int, int], row: torch.Tensor) -> None:
    """ReshapeTo2D^-1 for one row, into out (C, T, H, W)."""
    t, h, w = pos
    c = out.shape[0]
    if dim != "temporal":
        for ci in range(c):
            out[ci, t, h, w] = row[ci]
        return
    for hi in range(H):
        for wi in range(W):
            for ci in range(c):
                out[ci, t, hi, wi] = row[(hi * W + wi) * c + ci]


def _g3(op, f: torch.Tensor) -> torch.Tensor:
    """G3: a 1×1×1 conv, position by position: (C_in, T, H, W) -> (C_out, T, H, W)."""
    weight = op.g3.weight[:, :, 0, 0, 0]  # (C_out, C_in)
    out = torch.zeros(op.c_out, T, H, W, dtype=f.dtype)
    for t in range(T):
        for h in range(H):
            for w in range(W):
                out[:, t, h, w] = weight @ f[:, t, h, w] + op.g3.bias
    return out


def _phi_matrix(s: torch.Tensor, activation: str, n: int) -> torch.Tensor:
    """φ on dot-product similarities (N, N); softmax over the attended (last) axis."""
    out = torch.zeros_like(s)
    for i in range(n):
        for j in range(n):
            if activation == "softmax":
                out[i, j] = torch.exp(s[i, j] - s[i].max()) / torch.exp(s[i] - s[i].max()).sum()
            elif activation == "sigmoid":
                out[i, j] = 1.0 / (1.0 + torch.exp(-s[i, j]))
            elif activation == "relu":
                out[i, j] = torch.clamp(s[i, j], min=0.0) / n
            else:
                out[i, j] = s[i, j] / n
    return out


def _phi_vector(a: torch.Tensor, activation: str) -> torch.Tensor:
    """φ on the N map scores; softmax over the N weights; no 1/N for map."""
    if activation == "softmax":
        e = torch.exp(a - a.max())
        return e / e.sum()
    if activation == "sigmoid":
        return 1.0 / (1.0 + torch.exp(-a))
    if activation == "relu":
        return torch.clamp(a, min=0.0)
    return a.clone()


def _weights_dot(op, rows: list[torch.Tensor], activation: str) -> torch.Tensor:
    """Eq. 2: W = φ(G1(f') G2(f')ᵀ · C'^-1/2) (and / N for none, relu)."""
    n = len(rows)
    q = [op.g1.weight @ r + op.g1.bias for r in rows]  # N × (C',)
    k = [op.g2.weight @ r + op.g2.bias for r in rows]
    c_inner = op.g1.weight.shape[0]
    s = torch.zeros(n, n, dtype=rows[0].dtype)
    for i in range(n):
        for j in range(n):
            s[i, j] = (q[i] * k[j]).sum() / math.sqrt(c_inner)
    return _phi_matrix(s, activation, n)


def _weights_map(op, rows: list[torch.Tensor], activation: str) -> torch.Tensor:
    """Eq. 1: W = Diag(φ(G2(AvgPool(G1(f'))))): G1 per position, mean over C', MLP N -> N."""
    n = len(rows)
    pooled = torch.stack([(op.g1.weight @ r + op.g1.bias).mean() for r in rows])  # (N,)
    lin1, lin2 = op.g2[0], op.g2[2]
    hidden = torch.clamp(lin1.weight @ pooled + lin1.bias, min=0.0)
    scores = lin2.weight @ hidden + lin2.bias  # (N,)
    weights = _phi_vector(scores, activation)
    diag = torch.zeros(n, n, dtype=rows[0].dtype)
    for i in range(n):
        diag[i, i] = weights[i]
    return diag


def reference(op, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1–3 for every batch element (and frame, for spatial) with explicit loops."""
    dim, activation = op.spec.dim, op.spec.activation
    out = torch.zeros(x.shape[0], op.c_out, T, H, W, dtype=x.dtype)
    for b in range(x.shape[0]):
        value = _g3(op, x[b])  # (C_out, T, H, W)
        for positions in _groups(dim):
            rows = [_row(x[b], dim, p) for p in positions]
            if op.spec.type == "dot":
                attn = _weights_dot(op, rows, activation)
            else:
                attn = _weights_map(op, rows, activation)
            v_rows = [_row(value, dim, p) for p in positions]
            for i, p in enumerate(positions):
                acc = torch.zeros_like(v_rows[0])
                for j in range(len(positions)):
                    acc = acc + attn[i, j] * v_rows[j]
                _write_row(out[b], dim, p, acc)
    return out


# ---------------------------------------------------------------------------------------- tests
def _op_and_input(op_type: str, dim: str, activation: str, seed: int = 0):
    torch.manual_seed(seed)
    op = build_op((op_type, dim, activation), C_IN, C_OUT, SHAPE).double()
    # random (not default-initialised) parameters so no term can hide behind a small init
    with torch.no_grad():
        for p in op.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)  # (B, C, T, H, W)
    return op, x


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("op_type", ["map", "dot"])
def test_op_matches_explicit_restatement(op_type, dim, activation):
    op, x = _op_and_input(op_type, dim, activation)
    with torch.no_grad():
        got = op(x)
        want = reference(op, x)
    assert got.shape == want.shape == (2, C_OUT, T, H, W)
    assert want.abs().max() > 1e-3  # a non-trivial output
    assert (got - want).abs().max() < 1e-10


@pytest.mark.parametrize("op_type", ["map", "dot"])
def test_parameter_shapes_follow_the_reshape(op_type):
    """G1 reads D = C (spatial/spatiotemporal) or H*W*C (temporal); map's G2 is N -> N."""
    n = {"spatial": H * W, "temporal": T, "spatiotemporal": T * H * W}
    d = {"spatial": C_IN, "temporal": H * W * C_IN, "spatiotemporal": C_IN}
    for dim in DIMS:
        op = build_op((op_type, dim, "softmax"), C_IN, C_OUT, SHAPE)
        assert op.g1.weight.shape == (C_OUT, d[dim])  # C' = C_out by default
        assert op.g3.weight.shape == (C_OUT, C_IN, 1, 1, 1)
        if op_type == "dot":
            assert op.g2.weight.shape == (C_OUT, d[dim])
        else:
            assert op.g2[0].in_features == n[dim] and op.g2[2].out_features == n[dim]


def test_dot_inner_channels_sets_the_scale():
    """C' is G1/G2's width and the scale is C'^-1/2 (checked through the restatement)."""
    torch.manual_seed(3)
    op = build_op(
        ("dot", "spatiotemporal", "softmax"), C_IN, C_OUT, SHAPE, inner_channels=5
    ).double()
    assert op.g1.weight.shape == (5, C_IN)
    x = torch.randn(1, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        assert (op(x) - reference(op, x)).abs().max() < 1e-10


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("op_type", ["map", "dot"])
def test_spatial_attention_is_per_frame(op_type, activation):
    op, x = _op_and_input(op_type, "spatial", activation, seed=1)
    with torch.no_grad():
        base = op(x)
        for t in range(T):
            x2 = x.clone()
            x2[:, :, t] += torch.randn_like(x2[:, :, t])
            out = op(x2)
            others = [s for s in range(T) if s != t]
            assert torch.equal(out[:, :, others], base[:, :, others])  # exactly unchanged
            assert (out[:, :, t] - base[:, :, t]).abs().max() > 1e-6  # frame t did change


@pytest.mark.parametrize("dim", ["temporal", "spatiotemporal"])
@pytest.mark.parametrize("op_type", ["map", "dot"])
def test_temporal_dims_mix_frames(op_type, dim):
    """The contrast case: with a temporal extent, changing one frame changes the others."""
    op, x = _op_and_input(op_type, dim, "softmax", seed=1)
    with torch.no_grad():
        base = op(x)
        x2 = x.clone()
        x2[:, :, 0] += 1.0
        out = op(x2)
    assert (out[:, :, 1:] - base[:, :, 1:]).abs().max() > 1e-6


def test_map_weight_is_diagonal_per_position_scaling():
    """Map attention scales G3's output position by position (W is diagonal): for spatiotemporal
    softmax the N weights sum to one, so the output sums to a convex mix of G3's positions."""
    op, x = _op_and_input("map", "spatiotemporal", "softmax", seed=2)
    with torch.no_grad():
        value = op.g3(x)  # (B, C_out, T, H, W)
        ratio = op(x) / value
    # one weight per position, shared by all output channels
    assert torch.allclose(ratio[:, :1].expand_as(ratio), ratio, rtol=0, atol=1e-10)
    assert torch.allclose(
        ratio[:, 0].sum(dim=(1, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-10
    )
