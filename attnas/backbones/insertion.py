"""``insert_cells``: put a module (cell, supergraph, non-local block, anything) after named points.

The inserted modules live in the backbone's ``inserted`` ``nn.ModuleDict`` keyed by position, so
they are reachable as ``model.inserted["Mixed_4b"]``, move with ``model.to(...)``, appear in
``model.parameters()`` and save under ``inserted.<position>.*`` in the ``state_dict``; the
backbone's own keys do not change. The backbone applies them in ``forward_features``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from attnas.backbones.base import Shape4, VideoBackbone

CellFactory = Callable[[str, Shape4], nn.Module]


def insert_cells(
    model: VideoBackbone,
    positions: Sequence[str] | None,
    factory: CellFactory,
    *,
    replace: bool = False,
) -> VideoBackbone:
    """Insert ``factory(name, shape)`` after each named insertion point (in place).

    Args:
        model: A backbone from ``build_backbone`` (anything with ``insertion_points()``,
            ``default_positions`` and an ``inserted`` ``nn.ModuleDict``).
        positions: Names from ``model.insertion_points()``; ``None`` means the factory's
            ``positions`` when it has them (an ``attnas.cells.CellSet``: one cell per
            position), else ``model.default_positions`` (5 per backbone).
        factory: Called once per position with the position's name and its feature shape
            ``(C, T, H, W)``; returns a module mapping ``(B, C, T, H, W)`` to the same shape.
        replace: Allow replacing a module already inserted at a position.

    Returns:
        The same model, modified in place; the new modules are ``model.inserted[name]``.

    Raises:
        KeyError: For a position that is not an insertion point (the message lists the valid
            ones), or one already holding a module when ``replace`` is False.
        TypeError: If the factory does not return an ``nn.Module``.
    """
    points = model.insertion_points()
    if positions is None:
        positions = getattr(factory, "positions", None) or model.default_positions
    names = list(positions)
    unknown = [n for n in names if n not in points]
    if unknown:
        raise KeyError(
            f"unknown insertion point(s) {unknown} for {type(model).__name__}; "
            f"valid points: {list(points)}"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KeyError(f"insertion point(s) {duplicates} listed more than once")
    occupied = [n for n in names if n in model.inserted]
    if occupied and not replace:
        raise KeyError(
            f"insertion point(s) {occupied} already hold a module; pass replace=True to replace"
        )
    built: dict[str, nn.Module] = {}
    for name in names:
        module = factory(name, points[name])
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"factory returned {type(module).__name__} for position {name!r}; "
                "expected an nn.Module"
            )
        built[name] = module
    for name, module in built.items():
        model.inserted[name] = module
    return model


def remove_cells(model: VideoBackbone, positions: Sequence[str] | None = None) -> VideoBackbone:
    """Remove inserted modules (all of them when ``positions`` is None), in place.

    Args:
        model: A backbone with an ``inserted`` ``nn.ModuleDict``.
        positions: Positions to clear; positions holding nothing are ignored.

    Returns:
        The same model.
    """
    for name in list(model.inserted.keys() if positions is None else positions):
        if name in model.inserted:
            del model.inserted[name]
    return model
