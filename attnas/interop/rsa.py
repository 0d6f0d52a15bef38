"""Loader for the authors' relational self-attention layer (kind ``rsa.RSA``).

Our ``RSA`` uses the official parameter names and shapes, so the rename is the identity. The
official constructor's defaults differ from ours for ``kernel_type``/``feat_type`` ('V'), so the
loader applies the official defaults to arguments the caller leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from attnas.blocks.rsa import RSA
from attnas.interop import InteropError, load_renamed, register_loader

KIND = "rsa.RSA"
_DEFAULTS = {
    "nh": 1,
    "dk": 16,
    "dv": 0,
    "dd": 0,
    "kernel_size": (3, 7, 7),
    "stride": (1, 1, 1),
    "kernel_type": "V",
    "feat_type": "V",
}
_REQUIRED = ("d_in", "d_out")


@register_loader(KIND)
def load_rsa(state_dict: Mapping[str, torch.Tensor], **ctor) -> RSA:
    """Build ``RSA`` for the official ``ctor`` and load the official ``state_dict``.

    Args:
        state_dict: the official ``RSA.state_dict()``.
        **ctor: ``d_in``, ``d_out`` and optionally ``nh, dk, dv, dd, kernel_size, stride,
            kernel_type, feat_type`` (official defaults).

    Returns:
        Our ``RSA`` with the weights loaded, in the state_dict's dtype.

    Raises:
        InteropError: unknown/missing constructor argument, unknown/missing key, shape mismatch,
            or a configuration the official code cannot run.
    """
    unknown = sorted(set(ctor) - set(_DEFAULTS) - set(_REQUIRED))
    if unknown:
        raise InteropError(f"{KIND}: unknown constructor argument(s) {unknown}")
    missing = [name for name in _REQUIRED if name not in ctor]
    if missing:
        raise InteropError(f"{KIND}: missing constructor argument(s) {missing}")
    args = {**_DEFAULTS, **ctor}
    try:
        module = RSA(**args)
    except ValueError as err:
        raise InteropError(f"{KIND}: cannot build {args}: {err}") from err
    rename = {key: key for key in module.state_dict()}  # official names are ours
    return load_renamed(module, state_dict, rename, KIND)
