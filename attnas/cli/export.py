"""``attnas-export``: write a cell, or a backbone with cells, as a ``torch.export`` program.

- ``attnas-export cell=<cell.yaml> shape=[C,T,H,W] out=<stem>``: the cell alone, built for the
  feature shape ``(C, T, H, W)`` it will run on (the shape is part of the ops: G1 of the
  temporal and map ops reads H·W·C features).
- ``attnas-export cell=<cell.yaml|cells.yaml|nonlocal|none> backbone=i3d_tiny num_classes=4
  input_shape=[3,8,32,32] [checkpoint=<run>/checkpoints/last.pt] out=<stem>``: the backbone with
  the cell (or each cell of a cell set) inserted, optionally with trained weights (loaded
  strictly).

Writes ``<out>.pt2`` and ``<out>.yaml`` (``attnas.export``) and prints the shapes. Exit status 2
for a user error (a missing file, a shape that does not fit), with one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from attnas.cli import CONFIG_DIR, schema
from attnas.cli.errors import UserError, run_cli


def _shape(value: Any, n: int, key: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in (value or ()))
    if len(shape) != n:
        raise UserError(f"{key} must list {n} integers, got {list(shape)}")
    return shape


def run_export_config(cfg: Any) -> Any:
    """Build what ``cfg`` names and export it; returns ``attnas.export.Exported``."""
    import torch

    from attnas.export import export_module
    from attnas.space import CellSpec
    from attnas.train.run import cell_factory

    cell = str(cfg.cell)
    if cell not in ("none", "nonlocal") and not Path(cell).is_file():
        raise FileNotFoundError(f"{cell}: cell file not found")
    torch.manual_seed(int(cfg.seed))
    if cfg.backbone is None:
        if cell in ("none", "nonlocal"):
            raise UserError("exporting a cell alone needs a cell file (cell=<file>)")
        from attnas.cells import AttentionCell

        shape = _shape(cfg.shape, 4, "shape (C, T, H, W)")
        spec = CellSpec.load(cell)
        c_op = max(1, round(shape[0] * float(cfg.op_channel_ratio)))
        module = AttentionCell(spec, shape[0], c_op, shape)
        what = {"cell": spec.to_dict(), "op_channels": c_op}
        input_shape = shape
    else:
        from attnas.backbones import build_backbone, insert_cells

        input_shape = _shape(cfg.input_shape, 4, "input_shape (3, T, H, W)")
        bb = schema.plain(cfg.backbone)
        module = build_backbone(bb["name"], int(cfg.num_classes), input_shape, **bb["kwargs"])
        factory = cell_factory(cell, float(cfg.op_channel_ratio))
        positions = bb.get("positions")
        if hasattr(factory, "positions"):
            positions = factory.positions  # a cell set brings its own positions
        if factory is not None:
            insert_cells(module, positions, factory)
        if cfg.checkpoint is not None:
            state = torch.load(str(cfg.checkpoint), map_location="cpu", weights_only=True)
            module.load_state_dict(state.get("model", state), strict=True)
        what = {
            "backbone": bb["name"],
            "num_classes": int(cfg.num_classes),
            "cell": cell,
            "positions": list(module.inserted),
            "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint),
        }
    try:
        return export_module(module, input_shape, Path(str(cfg.out)), what)
    except ValueError as err:
        if "was built for" not in str(err):
            raise
        raise UserError(str(err)) from err


def _export(cfg: DictConfig) -> None:
    out = run_cli("attnas-export", lambda: run_export_config(cfg))
    print(
        f"attnas-export: {out.program} (input {list(out.input_shape)} -> output "
        f"{list(out.output_shape)}), description {out.description}"
    )


@hydra.main(config_path=str(CONFIG_DIR), config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-export`` (see ``conf/export.yaml``)."""
    _export(cfg)


if __name__ == "__main__":
    main()
