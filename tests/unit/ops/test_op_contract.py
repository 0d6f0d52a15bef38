"""The attention-op contract, run over every registered op type × dim × activation.

One parametrised class (GPyTorch's contract-test pattern): the cases come from
``attnas.ops.all_op_specs()``, so a type registered later (bat, rsa, sta, a user's own) is held to
the same contract without a line added here. Shapes are tiny so the whole grid runs in seconds.
"""

from __future__ import annotations

import copy
import zlib

import pytest
import torch

from attnas.ops import AttentionOp, all_op_specs, build_op, list_ops
from attnas.space import OpSpec, op_type_capabilities

C_IN, C_OUT = 8, 4
SHAPE = (C_IN, 4, 4, 4)  # (C, T, H, W)
BATCH = 2
SPECS = all_op_specs()


def _seed(spec: OpSpec) -> int:
    return zlib.crc32(str(spec).encode())


def _build(spec: OpSpec, dtype: torch.dtype = torch.float32) -> tuple[AttentionOp, torch.Tensor]:
    torch.manual_seed(_seed(spec))
    op = build_op(spec, C_IN, C_OUT, SHAPE).to(dtype)
    x = torch.randn(BATCH, *SHAPE, dtype=dtype)  # (B, C, T, H, W)
    return op, x


def test_registry_covers_the_papers_ops():
    assert {"map", "dot"} <= set(list_ops())
    names = {(s.type, s.dim, s.activation) for s in SPECS}
    for t in ("map", "dot"):
        for d in ("spatial", "temporal", "spatiotemporal"):
            for a in ("none", "relu", "sigmoid", "softmax"):
                assert (t, d, a) in names
    # every registered combination is one its type declares, and nothing else
    for spec in SPECS:
        assert op_type_capabilities(spec.type).supports(spec.dim, spec.activation)
    assert len(SPECS) == len(set(SPECS))


@pytest.mark.parametrize("spec", SPECS, ids=str)
class TestOpContract:
    def test_is_registered_op(self, spec):
        op, _ = _build(spec)
        assert isinstance(op, AttentionOp)
        assert op.spec == spec
        assert (op.c_in, op.c_out, op.shape) == (C_IN, C_OUT, SHAPE)
        assert type(op).op_type == spec.type

    def test_output_shape_and_finite(self, spec):
        op, x = _build(spec)
        y = op(x)
        assert y.shape == (BATCH, C_OUT, *SHAPE[1:])
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()
        assert y.abs().sum() > 0

    def test_batch_elements_are_independent(self, spec):
        op, x = _build(spec, torch.float64)
        op.eval()
        y = op(x)
        y0 = op(x[:1])
        assert torch.allclose(y[:1], y0, rtol=0, atol=1e-12)

    def test_gradients_reach_every_parameter(self, spec):
        op, x = _build(spec, torch.float64)
        x.requires_grad_(True)
        proj = torch.randn(BATCH, C_OUT, *SHAPE[1:], dtype=torch.float64)
        loss = (op(x) * proj).sum()  # a random linear functional of the output
        loss.backward()
        params = dict(op.named_parameters())
        assert params, "an attention op without parameters cannot be searched"
        for name, p in params.items():
            assert p.grad is not None, f"{spec}: no gradient reached {name}"
            assert torch.isfinite(p.grad).all(), f"{spec}: non-finite gradient for {name}"
            assert p.grad.abs().sum() > 0, f"{spec}: zero gradient for {name}"
        assert x.grad is not None and x.grad.abs().sum() > 0

    def test_float64(self, spec):
        op32, x32 = _build(spec)
        op64 = copy.deepcopy(op32).double()
        assert all(p.dtype == torch.float64 for p in op64.parameters())
        y64 = op64(x32.double())
        assert y64.dtype == torch.float64
        assert torch.isfinite(y64).all()
        y32 = op32(x32)
        torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize(
        "bad_shape",
        [(BATCH, C_IN, 4, 4, 5), (BATCH, C_IN + 1, 4, 4, 4), (BATCH, C_IN, 2, 4, 4)],
        ids=["W", "C", "T"],
    )
    def test_wrong_shape_names_the_expected_shape(self, spec, bad_shape):
        op, _ = _build(spec)
        with pytest.raises(ValueError) as info:
            op(torch.randn(*bad_shape))
        message = str(info.value)
        assert "(B, 8, 4, 4, 4)" in message, message
        assert str(bad_shape) in message, message

    def test_four_dimensional_input_rejected(self, spec):
        op, _ = _build(spec)
        with pytest.raises(ValueError, match=r"\(B, 8, 4, 4, 4\)"):
            op(torch.randn(C_IN, 4, 4, 4))

    def test_forward_equals_forward_mixed_with_own_activation(self, spec):
        op, x = _build(spec, torch.float64)
        y = op(x)
        assert torch.equal(y, op.forward_mixed(x, None, (spec.activation,)))
        one = torch.ones(1, dtype=torch.float64)
        mixed = op.forward_mixed(x, one, (spec.activation,))
        assert (mixed - y).abs().max() < 1e-10

    def test_forward_mixed_equals_naive_weighted_sum(self, spec):
        op, x = _build(spec, torch.float64)
        activations = op_type_capabilities(spec.type).activations
        weights = torch.rand(
            len(activations),
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(_seed(spec)),
        )
        weights = weights.softmax(0) - 0.1  # a mix with one weight possibly negative
        mixed = op.forward_mixed(x, weights, activations)
        naive = sum(w * op.forward_mixed(x, None, (a,)) for w, a in zip(weights, activations))
        assert mixed.shape == (BATCH, C_OUT, *SHAPE[1:])
        assert (mixed - naive).abs().max() < 1e-10

    def test_forward_mixed_gradient_reaches_weights(self, spec):
        op, x = _build(spec, torch.float64)
        activations = op_type_capabilities(spec.type).activations
        weights = torch.full(
            (len(activations),), 1.0 / len(activations), dtype=torch.float64, requires_grad=True
        )
        op.forward_mixed(x, weights, activations).square().sum().backward()
        assert weights.grad is not None and (weights.grad != 0).all()

    def test_several_activations_need_weights(self, spec):
        op, x = _build(spec)
        activations = op_type_capabilities(spec.type).activations
        if len(activations) < 2:
            pytest.skip(f"{spec.type} has a single activation")
        with pytest.raises(ValueError, match="needs weights"):
            op.forward_mixed(x, None, activations)
