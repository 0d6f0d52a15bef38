"""Export a cell, or a backbone with cells inserted, as a ``torch.export`` program plus its YAML.

``torch.jit.script`` cannot compile the cells (their shape check and einops calls are Python),
while ``torch.export`` traces them; the exported program runs without this package's Python
code and gives the same outputs as the module it came from (``tests/unit/test_export.py``
checks identical logits).

The shape a cell is built for is part of the paper's ops: G1 of the temporal and map ops reads
H·W·C features, so a cell (and its export) runs on the feature shape ``(C, T, H, W)`` it was
built for, and a backbone with cells on the clip shape ``(3, T, H, W)`` it was built for. Export
for the shape you will run; a wrong shape fails with an error naming the shape that works.

Files: ``<out>.pt2`` (``torch.export.save``) and ``<out>.yaml``: what was exported (the cell, or
the backbone, its positions and cells), the input shape and the output shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn


@dataclass(frozen=True)
class Exported:
    """What ``export_module`` wrote.

    Attributes:
        program: the ``.pt2`` file.
        description: the ``.yaml`` file.
        input_shape: the input shape the program takes, batch included.
        output_shape: its output shape.
    """

    program: Path
    description: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def export_module(
    module: nn.Module,
    input_shape: tuple[int, ...],
    out: str | Path,
    description: dict[str, Any] | None = None,
    batch_size: int = 1,
) -> Exported:
    """Export ``module`` (in eval mode) for inputs ``(batch_size, *input_shape)``.

    Args:
        module: the module (a cell, a backbone with cells, a block).
        input_shape: one example's shape, ``(C, T, H, W)`` or ``(3, T, H, W)``.
        out: the output path without suffix (``<out>.pt2`` and ``<out>.yaml`` are written).
        description: more YAML content (what was exported).
        batch_size: the batch the program is traced with (fixed in the program).

    Returns:
        The files and shapes.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    example = torch.randn(batch_size, *input_shape)  # (B, C, T, H, W)
    with torch.no_grad():
        output_shape = tuple(module(example).shape)
        program = torch.export.export(module, (example,))
    path = out.with_suffix(".pt2")
    torch.export.save(program, path)
    desc = {
        "program": path.name,
        "input_shape": [batch_size, *map(int, input_shape)],
        "output_shape": list(output_shape),
        "note": "the program runs on this input shape only (the shape is part of the ops)",
        **(description or {}),
    }
    yaml_path = out.with_suffix(".yaml")
    yaml_path.write_text(yaml.safe_dump(desc, sort_keys=False))
    return Exported(path, yaml_path, (batch_size, *input_shape), output_shape)


def load_exported(path: str | Path) -> Any:
    """The ``torch.export.ExportedProgram`` in ``path`` (call ``.module()(x)`` to run it)."""
    return torch.export.load(str(path))
