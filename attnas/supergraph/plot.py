"""A picture of learned connection weights: the supergraph level by level.

Nodes sit in columns (one per level) coloured by their sink probability; an edge from node k at
level i-1 to node j at level i is drawn with a width proportional to ``p_level[i, j, k]``; beside
each node a small bar chart shows its activation probabilities. Nodes of the derived cell are
outlined. Uses matplotlib's Agg backend, so it works with no display.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnas.space import CellSpec
from attnas.supergraph.weights import ArchitectureWeights

_SHORT = {"spatial": "S", "temporal": "T", "spatiotemporal": "ST"}


def plot_weights(
    weights: ArchitectureWeights,
    path: str | Path,
    cell: CellSpec | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``weights`` (and outline ``cell``'s nodes) to a PNG file at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    m, n = weights.levels, weights.num_nodes
    with torch.no_grad():
        sink = weights.sink_probs().cpu().reshape(m, n)
        act = weights.act_probs().cpu()
        level = weights.level_probs().cpu() if m > 1 else None
    chosen: set[str] = set()
    if cell is not None and "derivation" in cell.meta:
        derivation = cell.meta["derivation"]  # one-shot selection: the node behind each op
        chosen = set(
            derivation["chosen"] if "chosen" in derivation else derivation["nodes"].values()
        )

    fig_w, fig_h = 3.2 * m + 1.5, 0.9 * n + 1.6
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.set_xlim(-0.9, 3.2 * (m - 1) + 2.2)
    ax.set_ylim(-0.8, n - 0.2)
    ax.axis("off")
    cmap = matplotlib.colormaps["viridis"]
    vmax = float(sink.max()) or 1.0
    # one colour per activation name (node types list different activations), with a legend
    names = list(dict.fromkeys(a for acts in weights.activations for a in acts))
    act_colour = {a: matplotlib.colormaps["tab10"](i % 10) for i, a in enumerate(names)}

    def xy(lv: int, j: int) -> tuple[float, float]:
        return 3.2 * lv, n - 1 - j

    if level is not None:
        for lv in range(1, m):
            for j in range(n):
                for k in range(n):
                    (x0, y0), (x1, y1) = xy(lv - 1, k), xy(lv, j)
                    p = float(level[lv - 1, j, k])
                    ax.plot(
                        [x0 + 0.7, x1 - 0.7],
                        [y0, y1],
                        color="0.3",
                        lw=0.2 + 6 * p,
                        alpha=0.25 + 0.75 * p,
                        zorder=1,
                    )
    for lv in range(m):
        for j in range(n):
            x, y = xy(lv, j)
            name = weights.node_name(lv + 1, j)
            face = cmap(float(sink[lv, j]) / vmax)
            edge = "red" if name in chosen else "black"
            box = FancyBboxPatch(
                (x - 0.7, y - 0.3),
                1.4,
                0.6,
                boxstyle="round,pad=0.03",
                fc=face,
                ec=edge,
                lw=2.5 if name in chosen else 0.8,
                zorder=2,
            )
            ax.add_patch(box)
            t, d = weights.nodes[j]
            ax.text(
                x,
                y + 0.05,
                f"{t}/{_SHORT.get(d, d)}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if float(sink[lv, j]) / vmax < 0.6 else "black",
                zorder=3,
            )
            ax.text(
                x,
                y - 0.18,
                f"sink {float(sink[lv, j]):.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if float(sink[lv, j]) / vmax < 0.6 else "black",
                zorder=3,
            )
            acts = weights.activations[j]
            for a in range(len(acts)):
                h = 0.5 * float(act[lv, j, a])
                ax.add_patch(
                    plt.Rectangle(
                        (x + 0.75 + 0.12 * a, y - 0.25),
                        0.1,
                        h,
                        color=act_colour[acts[a]],
                        zorder=2,
                    )
                )
            if lv == m - 1 and j == 0:
                for a, name_a in enumerate(acts):
                    ax.text(
                        x + 0.8 + 0.12 * a,
                        y + 0.35,
                        name_a[:4],
                        rotation=90,
                        fontsize=5,
                        ha="center",
                        va="bottom",
                    )
        ax.text(3.2 * lv, n - 0.45, f"level {lv + 1}", ha="center", fontsize=9, weight="bold")
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color=act_colour[a], label=a) for a in names],
        title="activation bars",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=7,
        title_fontsize=7,
        frameon=False,
    )
    ax.set_title(
        title
        or "learned connection weights (edge width: level weight, colour: sink "
        "weight, bars: activations, red: derived cell; S/T/ST: spatial/temporal/both)",
        fontsize=9,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
