"""Export the cells derived from learned connection weights: YAML, weights JSON and a plot.

Position-agnostic weights (key ``"all"``) give ``cell.yaml``, used at every position;
position-specific weights give ``cell_<position>.yaml`` per position. Next to each cell go the
logits it was derived from (``<stem>.weights.json``, what ``attnas-derive`` reads back) and a
drawing of them with the chosen nodes marked (``<stem>.png``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from attnas.space import CellSpec
from attnas.supergraph.derive import derive_cell
from attnas.supergraph.plot import plot_weights
from attnas.supergraph.weights import ArchitectureWeights

AGNOSTIC = "all"


def export_cells(
    weights: Mapping[str, ArchitectureWeights],
    alpha: int,
    beta: int,
    out_dir: Path,
    positions: list[str],
    derived: Mapping[str, CellSpec] | None = None,
) -> tuple[dict[str, CellSpec], list[Path]]:
    """Derive and write the cell(s), the weights (JSON) and their plot(s) under ``out_dir``.

    Args:
        weights: ``{"all": weights}`` (position-agnostic) or ``{position: weights}``.
        alpha: Sink nodes kept.
        beta: Predecessors kept per node.
        out_dir: Where the files go.
        positions: The insertion points a position-agnostic cell is used at.
        derived: The cells already derived from these weights, ``{position: cell}`` (e.g. by
            perturbation, ``attnas.supergraph.select``); None derives them with ``derive_cell``.

    Returns:
        ``({position: cell}, [cell files])``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cells: dict[str, CellSpec] = {}
    files: list[Path] = []
    for key, w in weights.items():
        if derived is None:
            cell = derive_cell(w, alpha, beta)
        else:
            cell = derived[positions[0] if key == AGNOSTIC else key]
        stem = "cell" if key == AGNOSTIC else f"cell_{key}"
        cell = dataclasses.replace(cell, name=stem)
        files.append(cell.save(out_dir / f"{stem}.yaml"))
        (out_dir / f"{stem}.weights.json").write_text(json.dumps(w.to_dict()))
        with torch.no_grad():  # Dirichlet mixing: the mean weights, not a sample
            plot_weights(
                w,
                out_dir / f"{stem}.png",
                cell,
                title=f"{stem}: learned connection weights (alpha={alpha}, beta={beta})",
            )
        if key == AGNOSTIC:
            cells.update({p: cell for p in positions})
        else:
            cells[key] = cell
    return cells, files
