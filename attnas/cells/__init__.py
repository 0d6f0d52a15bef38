"""The discrete attention cell: ``AttentionCell(spec, channels, op_channels, shape)``."""

from __future__ import annotations

from attnas.cells.cell import AttentionCell
from attnas.cells.cellset import CellSet, is_cell_set

__all__ = ["AttentionCell", "CellSet", "is_cell_set"]
