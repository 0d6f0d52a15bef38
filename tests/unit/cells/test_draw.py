"""Tests of ``attnas.cells.draw``: layout by depth, one arrow per edge, labels, saved image."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Annotation

from attnas.cells.draw import draw_cell, node_depths, node_positions, op_label
from attnas.space import CellSpec


@pytest.fixture
def diamond() -> CellSpec:
    """op1 <- f0; op2 <- f0; op3 <- {op1, op2}; outputs {2, 3}."""
    return CellSpec.from_dict(
        {
            "name": "diamond",
            "ops": [
                {"type": "map", "dim": "temporal", "activation": "softmax", "inputs": [0]},
                {"type": "dot", "dim": "spatial", "activation": "relu", "inputs": [0]},
                {"type": "dot", "dim": "spatiotemporal", "activation": "sigmoid", "inputs": [1, 2]},
            ],
            "outputs": [2, 3],
        }
    )


def test_depths_and_positions(diamond: CellSpec) -> None:
    assert node_depths(diamond) == {0: 0, 1: 1, 2: 1, 3: 2}
    pos = node_positions(diamond)
    assert pos[0] == (0.0, 0.0)
    assert {pos[1], pos[2]} == {(1.0, 0.5), (1.0, -0.5)}
    assert pos[3] == (2.0, 0.0)
    assert pos["out"] == (3.0, 0.0)


def test_drawing_has_every_node_and_edge(diamond: CellSpec, tmp_path) -> None:
    path = tmp_path / "sub" / "cell.png"
    fig = draw_cell(diamond, path=path)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts if not isinstance(t, Annotation)]
    assert "input f0" in texts
    for k in (1, 2, 3):
        assert op_label(diamond, k) in texts
    assert op_label(diamond, 3) == "3: dot\nspatiotemporal / sigmoid"
    # edges: inputs (1 + 1 + 2) + outputs (2) + the residual arc
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert len(arrows) == 4 + 2 + 1
    assert ax.get_title() == "diamond"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(fig)


def test_draws_on_given_axes(diamond: CellSpec) -> None:
    fig, (a, b) = plt.subplots(1, 2)
    out = draw_cell(diamond, ax=b, title="right")
    assert out is fig
    assert b.get_title() == "right" and not a.texts
    plt.close(fig)
