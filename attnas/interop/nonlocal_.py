"""Kind ``pytorchvideo.nonlocal``: pytorchvideo's ``create_nonlocal`` weights -> ``NonLocalBlock``.

The official constructor's arguments are accepted as they are stored with the weights
(``dim_in``, ``dim_inner``, ``pool_size``, ``instantiation``, ``norm`` as a class, its name or
``None``, ``norm_eps``, ``norm_momentum``; ``fn`` naming the builder is accepted and checked).
Our parameter names equal the official ones, so the renaming is the identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from attnas.blocks.nonlocal_block import NonLocalBlock
from attnas.interop import InteropError, load_renamed, register_loader

KIND = "pytorchvideo.nonlocal"
_CTOR_KEYS = {
    "fn",
    "dim_in",
    "dim_inner",
    "pool_size",
    "instantiation",
    "norm",
    "norm_eps",
    "norm_momentum",
}


@register_loader(KIND)
def load_pytorchvideo_nonlocal(
    state_dict: Mapping[str, torch.Tensor], **ctor: Any
) -> NonLocalBlock:
    """Build a ``NonLocalBlock`` for ``create_nonlocal(**ctor)`` and load ``state_dict``."""
    unknown = sorted(set(ctor) - _CTOR_KEYS)
    if unknown:
        raise InteropError(f"{KIND}: unknown constructor argument(s) {unknown}")
    if ctor.get("fn", "create_nonlocal") != "create_nonlocal":
        raise InteropError(f"{KIND}: builder {ctor['fn']!r} is not create_nonlocal")
    for key in ("dim_in", "dim_inner"):
        if key not in ctor:
            raise InteropError(f"{KIND}: missing constructor argument {key!r}")
    norm = ctor.get("norm", "BatchNorm3d")
    norm_name = norm if isinstance(norm, str) or norm is None else getattr(norm, "__name__", norm)
    if norm_name not in ("BatchNorm3d", None):
        raise InteropError(f"{KIND}: norm {norm_name!r} is not supported (BatchNorm3d or None)")
    try:
        block = NonLocalBlock(
            dim_in=int(ctor["dim_in"]),
            dim_inner=int(ctor["dim_inner"]),
            pool_size=tuple(ctor.get("pool_size") or (1, 1, 1)),
            instantiation=ctor.get("instantiation", "softmax"),
            norm=norm_name is not None,
            norm_eps=float(ctor.get("norm_eps", 1e-5)),
            norm_momentum=float(ctor.get("norm_momentum", 0.1)),
        )
    except ValueError as err:
        raise InteropError(f"{KIND}: {err}") from None
    rename = {k: k for k in block.state_dict()}
    return load_renamed(block, state_dict, rename, KIND)
