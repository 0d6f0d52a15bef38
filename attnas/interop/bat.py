"""Loader for the authors' video BAT block (kind ``bat_video.BATBlock``).

Our ``BATBlock`` uses the official parameter names, so the rename is the identity; the loader
checks the constructor arguments and the state_dict strictly (``load_renamed``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from attnas.blocks.bat import BATBlock
from attnas.interop import InteropError, load_renamed, register_loader

KIND = "bat_video.BATBlock"
# The official BATBlock(in_channels, r, s, ts, k, tk, dropout) defaults.
_DEFAULTS = {"r": 2, "s": 7, "ts": 4, "k": 4, "tk": 1, "dropout": 0.2}


@register_loader(KIND)
def load_bat_video(state_dict: Mapping[str, torch.Tensor], **ctor) -> BATBlock:
    """Build ``BATBlock`` for the official ``ctor`` and load the official ``state_dict``.

    Args:
        state_dict: the official ``BATBlock.state_dict()``.
        **ctor: ``in_channels`` and optionally ``r, s, ts, k, tk, dropout`` (official defaults).

    Returns:
        Our ``BATBlock`` with the weights loaded, in the state_dict's dtype.

    Raises:
        InteropError: unknown/missing constructor argument, unknown/missing key, shape mismatch,
            or a configuration the official code cannot build.
    """
    unknown = sorted(set(ctor) - set(_DEFAULTS) - {"in_channels"})
    if unknown:
        raise InteropError(f"{KIND}: unknown constructor argument(s) {unknown}")
    if "in_channels" not in ctor:
        raise InteropError(f"{KIND}: missing constructor argument 'in_channels'")
    args = {**_DEFAULTS, **ctor}
    try:
        module = BATBlock(**args)
    except ValueError as err:
        raise InteropError(f"{KIND}: cannot build {args}: {err}") from err
    rename = {key: key for key in module.state_dict()}  # official names are ours
    return load_renamed(module, state_dict, rename, KIND)
