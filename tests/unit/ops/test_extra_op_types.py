"""The bat, rsa and sta op types: agreement with the standalone cores, defaults, dim semantics,
and the ``attention_nas_plus`` search space.

The generic op contract (shapes, gradients, float64, forward_mixed) runs over these types in
``test_op_contract.py``; here are the type-specific facts.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnas.blocks.bat import BATransform
from attnas.blocks.rsa import RSA
from attnas.blocks.sta import STAttention
from attnas.cells import AttentionCell
from attnas.interop import load_official
from attnas.ops import build_op
from attnas.ops.rsa import context_window, default_heads
from attnas.space import CellSpec, OpNode, OpSpec, SpecError, load_space
from attnas.space.search_space import SearchSpace
from attnas.supergraph.graph import SuperGraph

DIMS = ("spatial", "temporal", "spatiotemporal")
F64 = torch.float64


def _x(shape, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g, dtype=F64)


def _build(spec, c_in, c_out, shape, seed=0, **params):
    torch.manual_seed(seed)
    return build_op(spec, c_in, c_out, shape, **params).to(F64)


# ---------------------------------------------------------------------------------------- bat
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dim", DIMS)
def test_bat_with_identity_projection_is_the_core(dim, activation, train):
    shape = (8, 4, 8, 8)
    op = _build(("bat", dim, activation), 8, 8, shape, s=4, ts=2, k=4, tk=2)
    assert op.proj_out is None
    with torch.no_grad():
        op.proj_in.weight.copy_(torch.eye(8, dtype=F64)[:, :, None, None, None])
    core = BATransform(8, s=4, ts=2, k=4, tk=2, dim=dim, normalization=activation).to(F64)
    core.load_state_dict(op.transform.state_dict())  # the op's core has the block's names
    op.train(train)
    core.train(train)
    x = _x(shape)
    assert (op(x) - core(x)).abs().max() < 1e-12


def test_bat_with_projections_composes_proj_in_core_proj_out():
    shape = (6, 4, 8, 8)
    op = _build(("bat", "spatiotemporal", "sigmoid"), 6, 4, shape, inner_channels=8)
    op.eval()
    assert op.proj_out is not None and op.proj_in.bias is None
    x = _x(shape)
    u = F.conv3d(x, op.proj_in.weight)
    expected = F.conv3d(op.transform(u), op.proj_out.weight, op.proj_out.bias)
    assert (op(x) - expected).abs().max() < 1e-12


def test_bat_core_is_the_official_transform(load_oracle):
    """The op (identity proj_in) inside the authors' block reproduces the official output."""
    case = load_oracle("bat_video_block_T4_H8_s4_ts2_k4_tk2.pt")
    sd, x = case["state_dict"], case["input"]
    c = case["ctor"]
    inner = c["in_channels"] // c.get("r", 2)
    shape = (inner, *x.shape[2:])
    op = _build(
        ("bat", "spatiotemporal", "softmax"),
        inner,
        inner,
        shape,
        s=c["s"],
        ts=c["ts"],
        k=c["k"],
        tk=c["tk"],
    )
    with torch.no_grad():
        op.proj_in.weight.copy_(torch.eye(inner, dtype=F64)[:, :, None, None, None])
    prefix = "batransform."
    op.transform.load_state_dict(
        {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    )
    op.eval()

    def cbr(inp, name):
        y = F.conv3d(inp, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"])
        y = F.batch_norm(
            y,
            sd[f"{name}.1.running_mean"],
            sd[f"{name}.1.running_var"],
            sd[f"{name}.1.weight"],
            sd[f"{name}.1.bias"],
            training=False,
        )
        return y.relu()

    out = x + cbr(op(cbr(x, "conv1")), "conv2")
    assert (out - case["output_eval"]).abs().max() < 1e-10


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((8, 4, 8, 8), {"s": 4, "ts": 4, "k": 4}),
        ((8, 8, 14, 14), {"s": 7, "ts": 4, "k": 4}),
        ((8, 2, 6, 12), {"s": 6, "ts": 2, "k": 4}),
        ((8, 6, 4, 4), {"s": 4, "ts": 3, "k": 3}),  # C' = c_out = 6: k = 3
    ],
)
def test_bat_defaults_from_shape(shape, expected):
    c_out = 6 if shape[1] == 6 else 8
    op = build_op(("bat", "spatiotemporal", "softmax"), shape[0], c_out, shape)
    tr = op.transform
    assert {"s": tr.s, "ts": tr.ts, "k": tr.k} == expected
    assert tr.tk == 1 and tr.in_channels == c_out


@pytest.mark.parametrize(
    ("dim", "shape", "name"),
    [
        ("spatial", (8, 4, 11, 11), "s"),
        ("spatiotemporal", (8, 4, 1, 1), "s"),
        ("temporal", (8, 1, 8, 8), "ts"),
        ("spatiotemporal", (8, 5, 8, 8), "ts"),
    ],
)
def test_bat_impossible_default_names_the_shape(dim, shape, name):
    with pytest.raises(ValueError, match=rf"no block count {name} in 2\.\.\d") as info:
        build_op(("bat", dim, "softmax"), 8, 8, shape)
    assert f"(C, T, H, W) = {shape}" in str(info.value)


def test_bat_defaults_only_constrain_the_dims_used():
    # H = W = 11 has no s, but a temporal-only BAT needs none; T = 1 is fine for spatial BAT.
    build_op(("bat", "temporal", "softmax"), 8, 8, (8, 4, 11, 11))
    build_op(("bat", "spatial", "softmax"), 8, 8, (8, 1, 8, 8))


def test_bat_explicit_block_count_checked_against_shape():
    with pytest.raises(ValueError, match=r"s=3 must divide H and W .* \(8, 4, 8, 8\)"):
        build_op(("bat", "spatial", "softmax"), 8, 8, (8, 4, 8, 8), s=3)
    with pytest.raises(ValueError, match=r"ts=3 must divide T .* \(8, 4, 8, 8\)"):
        build_op(("bat", "temporal", "softmax"), 8, 8, (8, 4, 8, 8), ts=3)


def test_bat_input_bias_would_be_dead_in_training():
    """Why proj_in has no bias: the core ignores per-channel constants in training mode."""
    core = BATransform(8, s=4, ts=2, k=4, tk=2, dim="spatiotemporal").to(F64).train()
    u = _x((8, 4, 8, 8))
    shift = torch.randn(1, 8, 1, 1, 1, dtype=F64) * 3
    assert (core(u + shift) - core(u)).abs().max() < 1e-10


def test_bat_mixed_activations_restore_the_normalisation():
    op = _build(("bat", "spatial", "sigmoid"), 8, 4, (8, 4, 4, 4))
    x = _x((8, 4, 4, 4))
    w = torch.tensor([0.3, 0.7], dtype=F64)
    op.forward_mixed(x, w, ("softmax", "sigmoid"))
    assert op.transform.normalization == "sigmoid"
    with pytest.raises(ValueError, match=r"bat has no activation 'relu'.*softmax.*sigmoid"):
        op.forward_mixed(x, w, ("softmax", "relu"))
    assert op.transform.normalization == "sigmoid"


def test_bat_sigmoid_and_softmax_matrices_are_normalised():
    op = _build(("bat", "spatial", "softmax"), 8, 8, (8, 2, 8, 8))
    x = _x((8, 2, 8, 8))
    mats = {a: op.matrices(x, a) for a in ("softmax", "sigmoid")}
    for m in mats.values():
        assert (m["P"] > 0).all() and (m["Q"] > 0).all()
        assert torch.allclose(m["P"].sum(-1), torch.ones((), dtype=F64))  # rows
        assert torch.allclose(m["Q"].sum(-2), torch.ones((), dtype=F64))  # columns
    assert (mats["softmax"]["P"] - mats["sigmoid"]["P"]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------- rsa
@pytest.mark.parametrize("dim", DIMS)
def test_rsa_op_is_the_rsa_block_with_the_authors_weights(dim):
    shape = (8, 4, 6, 6)
    op = _build(("rsa", dim, "none"), 8, 8, shape, nh=2)
    ctor = dict(
        d_in=8,
        d_out=8,
        nh=2,
        dk=0,
        dv=0,
        dd=0,
        kernel_size=op.kernel_size,
        kernel_type="VplusR",
        feat_type="VplusR",
    )
    block = load_official("rsa.RSA", op.rsa.state_dict(), **ctor)
    assert isinstance(block, RSA)
    x = _x(shape)
    assert (op(x) - block(x)).abs().max() < 1e-12


def test_rsa_params_reach_the_core():
    op = _build(
        ("rsa", "spatiotemporal", "none"),
        8,
        4,
        (8, 4, 6, 6),
        nh=2,
        dk=1,
        m=3,
        m_t=3,
        kernel_type="R",
        feat_type="V",
    )
    r = op.rsa
    assert (r.nh, r.dk, r.dv, r.dd, r.kernel_size) == (2, 1, 2, 1, (3, 3, 3))
    assert (r.kernel_type, r.feat_type) == ("R", "V")
    assert op(_x((8, 4, 6, 6))).shape == (2, 4, 4, 6, 6)


@pytest.mark.parametrize(
    ("thw", "expected"),
    [
        ((4, 8, 8), ((1, 7, 7), (5, 1, 1), (5, 7, 7))),  # the paper's 5×7×7
        ((8, 14, 14), ((1, 7, 7), (5, 1, 1), (5, 7, 7))),
        ((4, 4, 4), ((1, 7, 7), (5, 1, 1), (5, 7, 7))),  # 2n−1 = 7: all of a 4×4 map
        ((2, 2, 3), ((1, 3, 5), (3, 1, 1), (3, 3, 5))),
        ((1, 1, 1), ((1, 1, 1), (1, 1, 1), (1, 1, 1))),
    ],
)
def test_rsa_context_window_defaults(thw, expected):
    assert tuple(context_window(d, *thw) for d in DIMS) == expected
    op = build_op(("rsa", "spatiotemporal", "none"), 8, 8, (8, *thw))
    assert op.kernel_size == expected[2]


def test_rsa_heads_default_and_check():
    assert [default_heads(c) for c in (4, 6, 8, 16, 24, 32, 64, 256)] == [1, 1, 2, 4, 6, 8, 8, 8]
    op = build_op(("rsa", "spatial", "none"), 8, 16, (8, 2, 4, 4))
    assert (op.rsa.nh, op.rsa.dv, op.rsa.dk, op.rsa.dd) == (4, 4, 4, 4)
    with pytest.raises(ValueError, match="nh=3 must divide c_out=16"):
        build_op(("rsa", "spatial", "none"), 8, 16, (8, 2, 4, 4), nh=3)


def test_rsa_spatial_context_is_local():
    """A 1×7×7 window: input (t, 0, 0) reaches only outputs of frame t within distance 3."""
    shape = (8, 3, 8, 8)
    op = _build(("rsa", "spatial", "none"), 8, 8, shape)
    x = _x(shape, batch=1)
    x2 = x.clone()
    x2[:, :, 1, 0, 0] += 1.0
    diff = (op(x2) - op(x)).abs().amax(dim=(0, 1))  # (T, H, W)
    near = torch.zeros_like(diff, dtype=torch.bool)
    near[1, :4, :4] = True
    assert (diff[~near] == 0).all()
    assert (diff[near] > 0).all()


def test_rsa_temporal_context_is_local_in_time_and_per_position():
    """An m_t×1×1 window: input (0, h, w) reaches only outputs (t ≤ 2, h, w) for m_t = 5."""
    shape = (8, 4, 4, 4)
    op = _build(("rsa", "temporal", "none"), 8, 8, shape)
    assert op.kernel_size == (5, 1, 1)
    x = _x(shape, batch=1)
    x2 = x.clone()
    x2[:, :, 0, 2, 1] += 1.0
    diff = (op(x2) - op(x)).abs().amax(dim=(0, 1))  # (T, H, W)
    near = torch.zeros_like(diff, dtype=torch.bool)
    near[:3, 2, 1] = True
    assert (diff[~near] == 0).all()
    assert (diff[near] > 0).all()


# ---------------------------------------------------------------------------------------- sta
@pytest.mark.parametrize("class_token", ["learned", "mean"])
@pytest.mark.parametrize("dim", DIMS)
def test_sta_op_is_the_sta_core(dim, class_token):
    shape = (8, 4, 4, 4)
    op = _build(("sta", dim, "softmax"), 8, 4, shape, class_token=class_token, t_o=3, pool=2)
    core = STAttention(8, 4, dim=dim, class_token=class_token).to(F64)
    core.load_state_dict({k.removeprefix("attention."): v for k, v in op.state_dict().items()})
    x = _x(shape)
    assert (op(x) - core(x)).abs().max() < 1e-12


def test_sta_params_reach_the_core():
    op = build_op(
        ("sta", "spatiotemporal", "softmax"),
        8,
        4,
        (8, 4, 4, 4),
        inner_channels=2,
        t_o=5,
        pool=4,
        class_token="mean",
    )
    a = op.attention
    assert (a.inner_channels, a.t_o, a.pool, a.class_token) == (2, 5, 4, "mean")


# ------------------------------------------------------------------------------ dim semantics
SPATIAL_SPECS = [OpSpec("bat", "spatial", a) for a in ("softmax", "sigmoid")] + [
    OpSpec("rsa", "spatial", "none"),
    OpSpec("sta", "spatial", "softmax"),
]


@pytest.mark.parametrize("spec", SPATIAL_SPECS, ids=str)
def test_spatial_ops_are_per_frame(spec):
    """Perturbing frame 1 changes output frame 1 only, exactly (eval mode: BatchNorm uses its
    running statistics, so frames do not meet through batch statistics)."""
    shape = (8, 3, 4, 4)
    op = _build(spec, 8, 4, shape).eval()
    x = _x(shape)
    x2 = x.clone()
    x2[:, :, 1] += torch.randn_like(x2[:, :, 1])
    diff = (op(x2) - op(x)).abs().amax(dim=(0, 1, 3, 4))  # (T,)
    assert diff[0] == 0 and diff[2] == 0
    assert diff[1] > 0


def test_temporal_bat_mixes_time_with_one_matrix_per_group():
    """bat/temporal applies kron(T, I) per position: output (t, h, w) is a convex mix (before the
    closing CBR) of inputs (·, h, w); with proj_in = I and the CBR removed the output at a
    position is T applied to that position's time series."""
    shape = (4, 4, 3, 3)
    op = _build(("bat", "temporal", "softmax"), 4, 4, shape, ts=4, tk=1)
    with torch.no_grad():
        op.proj_in.weight.copy_(torch.eye(4, dtype=F64)[:, :, None, None, None])
    op.transform.conv2 = torch.nn.Identity()
    op.eval()
    x = _x(shape, batch=1)
    tm = op.matrices(x)["T"][0, 0]  # (T, T), rows sum to 1
    expected = torch.einsum("ij,bcjhw->bcihw", tm, x)
    assert (op(x) - expected).abs().max() < 1e-12


# ------------------------------------------------------------------------------ search space
def test_attention_nas_plus_space_loads_with_every_type():
    space = load_space("attention_nas_plus")
    ops = space.op_choices()
    per_type = {t: sum(o.type == t for o in ops) for t in space.op_types}
    assert per_type == {"map": 12, "dot": 12, "bat": 6, "rsa": 3, "sta": 3}
    assert len(ops) == 36
    assert space.size() == 36**3 * 3 * 7 == 979_776
    assert len(space.supergraph.nodes) == 15
    assert space.activations_for("bat") == ("softmax", "sigmoid")
    assert space.activations_for("rsa") == ("none",)
    assert space.activations_for("sta") == ("softmax",)


def test_space_rejects_activation_a_type_does_not_have():
    data = load_space("attention_nas_plus").to_dict()
    data["op_types"]["rsa"] = {"dims": "all", "activations": ["softmax"]}
    with pytest.raises(SpecError, match=r"op_types\.rsa.*activations \['softmax'\]"):
        SearchSpace.from_dict(data, source="test")


def test_attention_nas_plus_supergraph_runs_forward_and_backward():
    space = load_space("attention_nas_plus")
    torch.manual_seed(0)
    shape = (16, 2, 4, 4)
    graph = SuperGraph.from_space(space, 16, shape)
    x = torch.randn(2, *shape)
    assert torch.equal(graph(x), x)  # zero-initialised closing BatchNorm: the identity
    torch.nn.init.ones_(graph.out_norm.weight)
    y = graph(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for (ty, dim), op in zip(graph.node_types, graph.nodes[0]):
        grads = [p.grad for p in op.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), f"{ty}/{dim}"
        assert sum(g.abs().sum() for g in grads) > 0, f"{ty}/{dim}"
    assert graph.arch_weights is not None


def test_attention_nas_plus_cells_with_the_new_types():
    space = load_space("attention_nas_plus")
    params = {t: space.op_params(t) for t in space.op_types}
    shape = (16, 2, 4, 4)
    x = torch.randn(2, *shape)
    cells = [
        CellSpec(
            (
                OpNode(OpSpec("bat", "spatiotemporal", "sigmoid"), (0,)),
                OpNode(OpSpec("rsa", "temporal", "none"), (0, 1)),
                OpNode(OpSpec("sta", "spatiotemporal", "softmax"), (1, 2)),
            ),
            (1, 2, 3),
        )
    ] + [space.sample(seed) for seed in range(4)]
    for spec in cells:
        assert space.contains(spec)
        cell = AttentionCell(spec, 16, space.op_channels(16), shape, op_params=params)
        torch.nn.init.ones_(cell.out_norm.weight)
        y = cell(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_attention_nas_plus_gp_encoding():
    from attnas.controller.encoding import CellEncoder

    space = load_space("attention_nas_plus")
    vectors = torch.tensor([[35, 30, 24, 1, 5], [0, 1, 2, 0, 0]]).numpy()
    onehot = CellEncoder(space, "onehot")
    assert onehot.num_features == 3 * (5 + 3 + 4) + 5
    assert onehot.features(vectors).shape == (2, onehot.num_features)
    categorical = CellEncoder(space, "categorical")
    assert categorical.num_features == 14
    codes = categorical.factor_codes(vectors)[0, :9].reshape(3, 3)  # (op, type/dim/activation)
    ops = space.op_choices()
    for row, index in zip(codes, (35, 30, 24)):
        op = ops[index]
        assert (categorical.types[row[0]], categorical.dims[row[1]]) == (op.type, op.dim)
        assert categorical.activations[row[2]] == op.activation
    assert {ops[i].type for i in (35, 30, 24)} == {"sta", "rsa", "bat"}
