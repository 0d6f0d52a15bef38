"""Layering: the search-space package is pure data and must not import torch (STYLE.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_importing_attnas_space_does_not_import_torch():
    result = _run(
        """
        import sys
        import attnas.space
        from attnas.space import load_space
        space = load_space("attention_nas")
        cell = space.sample(0)
        cell.hash(), cell.to_yaml(), space.encode(cell), space.size()
        heavy = sorted(m for m in ("torch", "einops", "numpy") if m in sys.modules)
        print("HEAVY=" + ",".join(heavy))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout  # 'torch' not in sys.modules
