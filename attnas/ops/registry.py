"""The attention-op registry: ``register_op``, ``build_op``, ``list_ops``.

An op type is a subclass of ``AttentionOp`` registered under its name with the dims and
activations it supports. Registering declares those capabilities to the pure-data search space
(``attnas.space.declare_op_type``), so a space file can only ask for combinations an
implementation exists for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attnas.ops.base import AttentionOp
from attnas.registry import Registry
from attnas.space import ACTIVATIONS, DIMS, OpSpec, SpecError, declare_op_type, op_type_capabilities

_OPS: Registry[type[AttentionOp]] = Registry("op type")


def register_op(
    name: str,
    *,
    dims: Sequence[str] = DIMS,
    activations: Sequence[str] = ACTIVATIONS,
) -> Callable[[type[AttentionOp]], type[AttentionOp]]:
    """Class decorator registering an ``AttentionOp`` subclass as op type ``name``.

    Args:
        name: the op type used in ``OpSpec.type`` and space files.
        dims: the attention dims the type supports.
        activations: the activations φ it supports (types whose normalisation is fixed by
            their definition declare just that one).

    Raises:
        ValueError: ``name`` is already registered, or its capabilities disagree with an
            earlier declaration.
    """

    def deco(cls: type[AttentionOp]) -> type[AttentionOp]:
        if name in _OPS:
            raise ValueError(f"op type {name!r} is already registered by {_OPS.get(name).__name__}")
        if not issubclass(cls, AttentionOp):
            raise TypeError(f"{cls.__name__} must subclass AttentionOp to be registered as an op")
        declare_op_type(name, tuple(dims), tuple(activations))
        cls.op_type = name
        _OPS.add(name, cls)
        return cls

    return deco


def list_ops() -> list[str]:
    """Names of the registered op types."""
    _import_builtins()
    return _OPS.names()


def op_class(name: str) -> type[AttentionOp]:
    """The class registered as op type ``name`` (``KeyError`` lists the known ones)."""
    _import_builtins()
    return _OPS.get(name)


def all_op_specs() -> list[OpSpec]:
    """Every registered (type, dim, activation) combination."""
    specs = []
    for name in list_ops():
        caps = op_type_capabilities(name)
        specs += [OpSpec(name, d, a) for d in caps.dims for a in caps.activations]
    return specs


def build_op(
    op: OpSpec | tuple[str, str, str],
    c_in: int,
    c_out: int,
    shape: tuple[int, int, int, int],
    **params: Any,
) -> AttentionOp:
    """Build the op ``op`` mapping ``(B, c_in, T, H, W) -> (B, c_out, T, H, W)``.

    Args:
        op: an ``OpSpec`` or a ``(type, dim, activation)`` tuple.
        c_in: input channels.
        c_out: output channels.
        shape: the input feature shape ``(C, T, H, W)`` the op is built for (C == c_in).
        **params: type-specific options (e.g. a space file's ``op_types.<type>.params``).
    """
    if not isinstance(op, OpSpec):
        try:
            op = OpSpec(*op)
        except TypeError:
            raise SpecError(
                f"build_op: expected OpSpec or (type, dim, activation), got {op!r}"
            ) from None
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"build_op: shape must be (C, T, H, W), got {shape}")
    if shape[0] != c_in:
        raise ValueError(f"build_op: shape {shape} has C={shape[0]} but c_in={c_in}")
    return op_class(op.type)(op, c_in, c_out, shape, **params)


_builtins_loaded = False


def _import_builtins() -> None:
    """Import the modules that register the built-in types (once)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import importlib

    for module in ("attnas.ops.map_attention", "attnas.ops.dot_attention"):
        importlib.import_module(module)
    for module in ("attnas.ops.bat", "attnas.ops.rsa", "attnas.ops.sta"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
