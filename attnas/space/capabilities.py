"""Which (dim, activation) combinations each attention-op type supports, as plain data.

The search space is pure data and must not import torch, yet it has to reject a space that asks
for an unsupported combination. So the capability table lives here; ``attnas.ops.register_op``
declares a new type's capabilities through ``declare_op_type`` and the op registry checks that
every built-in type it implements agrees with this table.

Where an op type has no activation choice (its normalisation is part of its definition), it
declares exactly the activations that name what it does: BAT's official video version normalises
with softmax and its image version with sigmoid + L1, RSA uses no normalisation at all ("none"),
and STA attends with softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

DIMS: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal")
ACTIVATIONS: tuple[str, ...] = ("none", "relu", "sigmoid", "softmax")


@dataclass(frozen=True)
class OpTypeCapabilities:
    """The dims and activations one op type supports."""

    dims: tuple[str, ...]
    activations: tuple[str, ...]

    def supports(self, dim: str, activation: str) -> bool:
        return dim in self.dims and activation in self.activations


_OP_TYPES: dict[str, OpTypeCapabilities] = {
    "map": OpTypeCapabilities(DIMS, ACTIVATIONS),
    "dot": OpTypeCapabilities(DIMS, ACTIVATIONS),
    "bat": OpTypeCapabilities(DIMS, ("softmax", "sigmoid")),
    "rsa": OpTypeCapabilities(DIMS, ("none",)),
    "sta": OpTypeCapabilities(DIMS, ("softmax",)),
}


def declare_op_type(name: str, dims: tuple[str, ...], activations: tuple[str, ...]) -> None:
    """Declare a (new) op type's capabilities; re-declaring with other values is an error."""
    caps = OpTypeCapabilities(tuple(dims), tuple(activations))
    bad_dims = [d for d in caps.dims if d not in DIMS]
    if bad_dims:
        raise ValueError(f"op type {name!r}: unknown dim(s) {bad_dims}; dims are {list(DIMS)}")
    if not caps.dims or not caps.activations:
        raise ValueError(f"op type {name!r} must support at least one dim and one activation")
    known = _OP_TYPES.get(name)
    if known is not None and known != caps:
        raise ValueError(
            f"op type {name!r} is already declared with dims={known.dims}, "
            f"activations={known.activations}"
        )
    _OP_TYPES[name] = caps


def op_type_capabilities(name: str) -> OpTypeCapabilities:
    """Capabilities of ``name``; KeyError with the known types when it is unknown."""
    try:
        return _OP_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown op type {name!r}; known types: {sorted(_OP_TYPES)}") from None


def known_op_types() -> list[str]:
    return sorted(_OP_TYPES)
