"""Draw a discrete cell (``CellSpec``) as a left-to-right DAG with matplotlib.

Layout: the cell input f0 sits in the first column, each op in the column of its depth (1 + the
deepest of its inputs), and the output node (concat, 1×1×1 conv, BatchNorm, + f0) in the last
column; ops sharing a column are spread vertically. Every input edge of an op is an arrow; the
outputs feed the output node, and a dashed arc from f0 to the output node marks the residual.
Op boxes are coloured by type and read ``k: type / dim / activation``.

Design choices where the spec is silent: the drawing is pure matplotlib (no graphviz, which is
not a Python dependency), uses the Agg backend when it creates a figure before pyplot was
imported (scripts), and returns the ``Figure`` so notebooks show it inline and scripts can save
it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnas.space import CellSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TYPE_COLOURS: dict[str, str] = {
    "map": "#8ecae6",
    "dot": "#ffb703",
    "bat": "#b5e48c",
    "rsa": "#cdb4db",
    "sta": "#f4a261",
}
_DEFAULT_COLOUR = "#dddddd"
_IO_COLOUR = "#f1f1f1"


def node_depths(spec: CellSpec) -> dict[int, int]:
    """Column of every node: 0 for the input, 1 + max(input depths) for op k.

    Args:
        spec: the cell.

    Returns:
        ``{node index: depth}`` for nodes 0..K.
    """
    depth = {0: 0}
    for k, node in enumerate(spec.ops, start=1):
        depth[k] = 1 + max(depth[i] for i in node.inputs)
    return depth


def node_positions(spec: CellSpec) -> dict[int | str, tuple[float, float]]:
    """``(x, y)`` of every node: nodes 0..K and ``"out"`` (the output node).

    Args:
        spec: the cell.

    Returns:
        Positions in data coordinates (x = column, y centred on 0).
    """
    depth = node_depths(spec)
    columns: dict[int, list[int]] = {}
    for k in range(spec.num_ops + 1):
        columns.setdefault(depth[k], []).append(k)
    pos: dict[int | str, tuple[float, float]] = {}
    for col, nodes in columns.items():
        for row, k in enumerate(nodes):
            pos[k] = (float(col), (len(nodes) - 1) / 2.0 - row)
    pos["out"] = (float(max(depth.values()) + 1), 0.0)
    return pos


def op_label(spec: CellSpec, k: int) -> str:
    """The text in op k's box: ``"k: type\\ndim / activation"``."""
    op = spec.ops[k - 1].op
    return f"{k}: {op.type}\n{op.dim} / {op.activation}"


def draw_cell(
    spec: CellSpec,
    ax: Axes | None = None,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Draw ``spec`` on ``ax`` (or a new figure) and optionally save it as an image.

    Args:
        spec: the cell to draw.
        ax: axes to draw on (None: a new figure sized to the cell).
        path: where to save the figure (PNG, SVG, PDF: matplotlib picks by suffix).
        title: axes title (None: the cell's name, or its hash).

    Returns:
        The figure holding the drawing.
    """
    import matplotlib

    if ax is None and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # headless scripts; a notebook has imported pyplot already
    import matplotlib.pyplot as plt

    pos = node_positions(spec)
    n_cols = int(pos["out"][0]) + 1
    n_rows = max(sum(1 for k, p in pos.items() if p[0] == c) for c in range(n_cols))
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.4 * n_cols + 0.6, 1.3 * n_rows + 1.2))
    else:
        fig = ax.figure  # type: ignore[assignment]

    box: dict[str, Any] = {"boxstyle": "round,pad=0.35", "linewidth": 1.0}
    labels: dict[int | str, str] = {0: "input f0", "out": "concat → 1×1×1 conv\n→ BN, + f0"}
    for k in range(1, spec.num_ops + 1):
        labels[k] = op_label(spec, k)
    texts = {}
    for key, (x, y) in pos.items():
        if isinstance(key, int) and key > 0:
            colour = TYPE_COLOURS.get(spec.ops[key - 1].op.type, _DEFAULT_COLOUR)
            outline = 2.0 if key in spec.outputs else 1.0
        else:
            colour, outline = _IO_COLOUR, 1.0
        texts[key] = ax.text(x, y, labels[key], ha="center", va="center", fontsize=8, zorder=3,
                             bbox={**box, "facecolor": colour, "linewidth": outline})  # fmt: skip

    def arrow(a: int | str, b: int | str, **style: Any) -> None:
        # Anchored on the two text artists and clipped to their boxes, so heads touch the box.
        ax.annotate("", xy=(0.5, 0.5), xycoords=texts[b], xytext=(0.5, 0.5), textcoords=texts[a],
                    arrowprops={"arrowstyle": "-|>", "mutation_scale": 12, "shrinkA": 1,
                                "shrinkB": 1, "patchA": texts[a].get_bbox_patch(),
                                "patchB": texts[b].get_bbox_patch(), **style},
                    zorder=4)  # fmt: skip

    for k, node in enumerate(spec.ops, start=1):
        for i in node.inputs:
            arrow(i, k, color="#444444", linewidth=1.2)
    for o in spec.outputs:
        arrow(o, "out", color="#1d3557", linewidth=1.6)
    arrow(0, "out", color="#999999", linewidth=1.0, linestyle="--",
          connectionstyle=f"arc3,rad={0.35 if n_rows > 1 else 0.5}")  # fmt: skip

    ax.set_xlim(-0.7, n_cols - 0.3)
    ax.set_ylim(-(n_rows / 2.0) - 0.3, n_rows / 2.0 + 0.3)
    ax.set_axis_off()
    ax.set_title(title if title is not None else (spec.name or f"cell {spec.hash()}"), fontsize=10)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
