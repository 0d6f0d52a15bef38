"""``CellSet``: one cell per insertion point, the result of a position-specific search.

A cell-set file is one YAML mapping positions to cells, each a cell file (a path relative to the
set file) or an inline cell::

    kind: cell_set
    cells:
      Mixed_4b: cell_Mixed_4b.yaml
      Mixed_4c: cell_Mixed_4c.yaml

The differentiable search writes ``cells/cells.yaml`` when it is position-specific;
``attnas-train cell=<set file>`` and ``insert_cells(model, None, CellSet.load(path))`` insert
each cell at its own position (``insert_cells`` takes the set's positions when ``positions`` is
None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from attnas.space import CellSpec, SpecError

KIND = "cell_set"


def is_cell_set(path: str | Path) -> bool:
    """Whether ``path`` is a cell-set file (a YAML mapping with ``kind: cell_set``)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".yaml", ".yml"):
        return False
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


@dataclass
class CellSet:
    """Cells by insertion point, and how to build them.

    Args:
        cells: ``{position: CellSpec}``.
        op_channel_ratio: ``C_op = max(1, round(C * ratio))`` of each cell.
        op_params: per-op-type ``build_op`` options.
    """

    cells: dict[str, CellSpec]
    op_channel_ratio: float = 0.25
    op_params: dict[str, dict[str, Any]] | None = field(default=None)

    @property
    def positions(self) -> list[str]:
        """The insertion points, in file order."""
        return list(self.cells)

    def __call__(self, name: str, shape: tuple[int, int, int, int]) -> nn.Module:
        """The cell of position ``name`` built for ``shape = (C, T, H, W)``."""
        from attnas.cells.cell import AttentionCell

        if name not in self.cells:
            raise KeyError(
                f"the cell set has no cell for position {name!r}; it has {self.positions}"
            )
        c_op = max(1, round(shape[0] * self.op_channel_ratio))
        return AttentionCell(self.cells[name], shape[0], c_op, shape, op_params=self.op_params)

    def save(self, path: str | Path, files: Mapping[str, str | Path] | None = None) -> Path:
        """Write the set; ``files`` (``{position: cell file}``) are referenced, the rest inlined."""
        path = Path(path)
        entries: dict[str, Any] = {}
        for pos, cell in self.cells.items():
            f = None if files is None else files.get(pos)
            if f is not None:
                f = Path(f)
                entries[pos] = str(f.relative_to(path.parent) if f.parent == path.parent else f)
            else:
                entries[pos] = cell.to_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"kind": KIND, "cells": entries}, sort_keys=False))
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        op_channel_ratio: float = 0.25,
        op_params: dict[str, dict[str, Any]] | None = None,
    ) -> CellSet:
        """Read a cell-set file (each referenced cell file is validated).

        Raises:
            FileNotFoundError: the set or one of its cell files is missing.
            SpecError: the file is not a cell set, or a cell is malformed (names the file).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: cell-set file not found")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise SpecError(f"{path}: not a cell set (expected 'kind: {KIND}' and 'cells:')")
        entries = data.get("cells")
        if not isinstance(entries, dict) or not entries:
            raise SpecError(f"{path}: cells: expected a mapping of positions to cells")
        cells: dict[str, CellSpec] = {}
        for pos, entry in entries.items():
            if isinstance(entry, str):
                f = Path(entry) if Path(entry).is_absolute() else path.parent / entry
                cells[str(pos)] = CellSpec.load(f)
            elif isinstance(entry, dict):
                cells[str(pos)] = CellSpec.from_dict(entry)
            else:
                raise SpecError(f"{path}: cells.{pos}: expected a cell file or a cell mapping")
        return cls(cells, op_channel_ratio, op_params)
