"""Attention ops: a registry of types, each built for a known feature shape.

>>> from attnas.ops import build_op
>>> op = build_op(("dot", "spatiotemporal", "softmax"), c_in=64, c_out=16, shape=(64, 4, 8, 8))
"""

from __future__ import annotations

from attnas.ops.base import AttentionOp, MatrixAttention, from_2d, to_2d
from attnas.ops.registry import all_op_specs, build_op, list_ops, op_class, register_op

list_ops()  # registers the built-in types

__all__ = [
    "AttentionOp",
    "MatrixAttention",
    "all_op_specs",
    "build_op",
    "from_2d",
    "list_ops",
    "op_class",
    "register_op",
    "to_2d",
]
