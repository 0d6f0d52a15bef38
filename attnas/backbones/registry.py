"""Backbone registry: ``@register_backbone`` + ``build_backbone(name, ...)`` + ``list_backbones``.

Modelled on timm's ``register_model`` / ``create_model``: one ``attnas.registry.Registry``
filled by a decorator that refuses a duplicate name. A registered builder is any callable
``builder(num_classes, input_shape, **kwargs) -> VideoBackbone``; ``input_shape=None`` means
the builder's default clip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from attnas.registry import Registry

BackboneBuilder = Callable[..., nn.Module]

_BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def register_backbone(
    fn: BackboneBuilder | None = None, *, name: str | None = None
) -> BackboneBuilder | Callable[[BackboneBuilder], BackboneBuilder]:
    """Register a backbone builder under ``name`` (default: the function's name).

    Usable bare (``@register_backbone``) or with a name (``@register_backbone(name="x")``).

    Args:
        fn: The builder, ``builder(num_classes, input_shape, **kwargs) -> nn.Module``.
        name: Registry name; defaults to ``fn.__name__``.

    Returns:
        The builder itself (or a decorator when called with keyword arguments only).

    Raises:
        ValueError: If the name is already registered.
    """

    def _register(builder: BackboneBuilder) -> BackboneBuilder:
        _BACKBONES.add(name or builder.__name__, builder)
        return builder

    if fn is not None:
        return _register(fn)
    return _register


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names of the registered backbones, sorted, optionally filtered by a glob pattern.

    Args:
        pattern: An ``fnmatch`` pattern such as ``"*_tiny"``; ``None`` lists all.

    Returns:
        The matching names in sorted order.
    """
    return _BACKBONES.names(pattern)


def build_backbone(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int, int] | None = None,
    *,
    checkpoint: str | Path | None = None,
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered backbone for a clip shape and a number of classes.

    Args:
        name: A name from ``list_backbones()``.
        num_classes: Size of the classifier output.
        input_shape: ``(3, T, H, W)`` of one clip; ``None`` uses the backbone's default clip.
        checkpoint: Optional path of a local state-dict file to load (``weights_only=True``);
            nothing is ever downloaded.
        strict: Passed to ``load_checkpoint``: require the checkpoint's keys and shapes to
            match the model exactly.
        **kwargs: Backbone-specific options (e.g. ``dropout``, ``stem_temporal_kernel``).

    Returns:
        The model, with ``insertion_points()`` and ``default_positions``.

    Raises:
        KeyError: If ``name`` is not registered (the message lists the registered names).
    """
    model = _BACKBONES.get(name)(num_classes=num_classes, input_shape=input_shape, **kwargs)
    if checkpoint is not None:
        from attnas.backbones.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint, strict=strict)
    return model
