"""The discrete attention cell: ``AttentionCell(spec, channels, op_channels, shape)``."""

from __future__ import annotations

from attnas.cells.cell import AttentionCell

__all__ = ["AttentionCell"]
