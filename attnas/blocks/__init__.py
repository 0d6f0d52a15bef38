"""Published attention blocks, as their authors defined them.

``NonLocalBlock`` (Wang et al. 2018, pytorchvideo's weights), ``BATBlock`` (BAT, video version),
``RSA`` (relational self-attention) and ``STA`` (shrinking temporal attention). Each maps
``(B, C, T, H, W) -> (B, C, T, H, W)`` with its own residual; ``attnas.interop.load_official``
loads the authors' weights into them.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "NonLocalBlock": "attnas.blocks.nonlocal_block",
    "BATBlock": "attnas.blocks.bat",
    "RSA": "attnas.blocks.rsa",
    "STA": "attnas.blocks.sta",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Lazy so that importing one block does not pull in the others.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attnas.blocks' has no attribute {name!r}")
