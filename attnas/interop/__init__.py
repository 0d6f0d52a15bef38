"""Load the authors' published weights into attnas modules.

``load_official(kind, state_dict, **ctor)`` builds our module for the official constructor
arguments ``ctor``, renames the official parameters onto it, loads them strictly and returns a
module computing the official function (REFERENCE_OPS.md). Each kind lives in its own module and
registers a loader with ``register_loader``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

Loader = Callable[..., nn.Module]

_LOADERS: dict[str, Loader] = {}

# kind -> module that registers its loader on import (imported lazily by ``load_official``).
_KIND_MODULES = {
    "pytorchvideo.nonlocal": "attnas.interop.nonlocal_",
    "bat_video.BATBlock": "attnas.interop.bat",
    "rsa.RSA": "attnas.interop.rsa",
}


class InteropError(ValueError):
    """An official state_dict or constructor argument cannot be mapped onto our module."""


def register_loader(kind: str) -> Callable[[Loader], Loader]:
    """Register ``fn(state_dict, **ctor) -> nn.Module`` as the loader of ``kind``."""

    def deco(fn: Loader) -> Loader:
        if kind in _LOADERS:
            raise ValueError(f"interop loader {kind!r} is already registered")
        _LOADERS[kind] = fn
        return fn

    return deco


def list_kinds() -> list[str]:
    """Kinds ``load_official`` accepts."""
    return sorted(set(_KIND_MODULES) | set(_LOADERS))


def load_official(kind: str, state_dict: Mapping[str, torch.Tensor], **ctor) -> nn.Module:
    """Build our module for the official ``ctor`` arguments and load the official weights.

    Args:
        kind: one of ``list_kinds()``, e.g. ``"pytorchvideo.nonlocal"``.
        state_dict: the official module's ``state_dict()``.
        **ctor: the official constructor's keyword arguments.

    Returns:
        Our module, with the official weights loaded, in the dtype of the state_dict.

    Raises:
        InteropError: unknown kind, unknown/missing key, or shape mismatch (the message names it).
    """
    if kind not in _LOADERS and kind in _KIND_MODULES:
        importlib.import_module(_KIND_MODULES[kind])
    if kind not in _LOADERS:
        raise InteropError(f"unknown interop kind {kind!r}; known kinds: {list_kinds()}")
    return _LOADERS[kind](state_dict, **ctor)


def load_renamed(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], rename: Mapping[str, str], kind: str
) -> nn.Module:
    """Copy ``state_dict`` into ``module`` under ``rename[official_key] -> our_key``, strictly.

    Every official key must be in ``rename`` and every one of our parameters/buffers must be
    filled; shapes must match exactly. Errors name the offending key.
    """
    ours = module.state_dict()
    unknown = sorted(k for k in state_dict if k not in rename)
    if unknown:
        raise InteropError(f"{kind}: unexpected key(s) in official state_dict: {unknown}")
    mapped: dict[str, torch.Tensor] = {}
    for official_key, value in state_dict.items():
        key = rename[official_key]
        if key not in ours:
            raise InteropError(f"{kind}: official key {official_key!r} maps to unknown {key!r}")
        if tuple(ours[key].shape) != tuple(value.shape):
            raise InteropError(
                f"{kind}: shape mismatch for {official_key!r}: official {tuple(value.shape)}, "
                f"expected {tuple(ours[key].shape)}"
            )
        mapped[key] = value
    inverse = {ours_key: official_key for official_key, ours_key in rename.items()}
    missing = sorted(inverse.get(k, k) for k in ours if k not in mapped)
    if missing:
        raise InteropError(f"{kind}: missing key(s) in official state_dict: {missing}")
    # the dtype of the weights, not of whichever entry comes first (it may be an integer
    # counter such as BatchNorm's num_batches_tracked)
    dtype = next((v.dtype for v in state_dict.values() if v.is_floating_point()), None)
    if dtype is not None:
        module.to(dtype)
    module.load_state_dict(mapped, strict=True)
    return module
