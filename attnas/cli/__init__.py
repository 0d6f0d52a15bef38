"""Hydra command lines: ``attnas-search``, ``attnas-derive`` and ``attnas-train``.

Configs live in the repository's ``conf/`` folder (``CONFIG_DIR``); their schemas in
``attnas.cli.schema``. This package (and ``experiments/``) is the only place that knows Hydra:
the library receives plain dataclasses built from the composed configs.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"

__all__ = ["CONFIG_DIR"]
