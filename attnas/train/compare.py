"""Retrain found cells against the baselines under one budget (the paper's Table 2 comparison).

``retrain_comparison`` trains, from scratch and with the same ``TrialSpec`` (budget, data,
seed, positions), the cells a search found (one per insertion point, a ``CellSet``) and each
baseline (``"none"``: the backbone alone, ``"nonlocal"``: non-local blocks at the same
positions), through ``run_trial``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnas.space import CellSpec
from attnas.train.run import run_trial
from attnas.train.spec import TrialResult, TrialSpec

logger = logging.getLogger("attnas.train")


def retrain_comparison(
    spec: TrialSpec,
    cells: Mapping[str, CellSpec],
    baselines: tuple[str, ...],
    out_dir: Path,
    op_channel_ratio: float,
    num_classes: int,
    input_shape: tuple[int, ...],
    op_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, TrialResult]:
    """Retrain from scratch, under ``spec``'s budget: the found cells and each baseline.

    Args:
        spec: The training run (its ``resume``, ``positions`` and ``run_dir`` are replaced).
        cells: The cell of each insertion point.
        baselines: ``"none"`` and/or ``"nonlocal"``, trained at the same positions.
        out_dir: Each run goes to ``out_dir/<name>`` (``derived`` for the cells).
        op_channel_ratio: ``C_op = max(1, round(C * ratio))`` of the cells.
        num_classes: Classifier size.
        input_shape: Clip shape ``(3, T, H, W)``.
        op_params: The space's per-type op options (those the cells' ops were searched with).

    Returns:
        ``{"derived": result, <baseline>: result, ...}``.
    """
    from attnas.cells import CellSet

    results: dict[str, TrialResult] = {}
    base = spec.replace(
        resume=False,
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        positions=tuple(cells),
    )
    params = None if op_params is None else {t: dict(p) for t, p in op_params.items()}
    for name in itertools.chain(["derived"], baselines):
        run = base.replace(
            run_dir=str(out_dir / name), name=name, cell=name if name != "derived" else "none"
        )
        factory = CellSet(dict(cells), op_channel_ratio, params) if name == "derived" else None
        logger.info("retraining %s", name)
        results[name] = run_trial(run, module_factory=factory)
    return results
