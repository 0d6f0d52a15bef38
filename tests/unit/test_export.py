"""``attnas.export``: a cell and a backbone with cells round-trip through ``torch.export`` with
identical outputs (issue 16, item 12), and a wrong shape is named with the shape that works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnas.backbones import build_backbone, insert_cells
from attnas.cells import AttentionCell, CellSet
from attnas.export import export_module, load_exported
from attnas.space import OpSpec, chain

CELL = chain([OpSpec("map", "temporal", "sigmoid"), OpSpec("dot", "spatial", "softmax")])


def test_cell_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cell = AttentionCell(CELL, 16, 4, (16, 4, 6, 6)).eval()
    out = export_module(cell, (16, 4, 6, 6), tmp_path / "cell", {"cell": CELL.to_dict()})
    assert out.program.is_file() and out.description.is_file()
    x = torch.randn(1, 16, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(load_exported(out.program).module()(x), cell(x))
    assert "cell" in out.description.read_text()


def test_backbone_with_a_cell_set_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = chain([OpSpec("dot", "spatiotemporal", "relu")])
    cells = CellSet({"res3_0": CELL, "res4_0": other})
    model = build_backbone("r3d_tiny", 3, (3, 4, 16, 16))
    insert_cells(model, None, cells)
    assert list(model.inserted) == ["res3_0", "res4_0"]
    out = export_module(model, (3, 4, 16, 16), tmp_path / "model")
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_exported(out.program).module()(x), model.eval()(x))
    assert out.output_shape == (1, 3)


def test_a_wrong_shape_names_the_shape_that_works() -> None:
    cell = AttentionCell(CELL, 16, 4, (16, 4, 6, 6))
    with pytest.raises(
        ValueError, match=r"G1 of the temporal and map ops reads H·W·C.*shape=\(16, 4, 8, 8\)"
    ):
        cell(torch.randn(1, 16, 4, 8, 8))
