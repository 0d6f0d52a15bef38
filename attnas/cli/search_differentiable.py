"""``attnas-search searcher=differentiable``: one supergraph training run, derived cells, report.

Reads top to bottom: convert the config, train the supergraph network (resumable from
``search/checkpoints/last.pt``), derive and export the cells (``cells/cell.yaml``, or one
``cells/cell_<position>.yaml`` per position plus the cell-set file ``cells/cells.yaml``),
optionally retrain them against the baselines, write ``report.md``. The run directory has been
accepted by ``RunDir.open`` before anything here runs.
"""

from __future__ import annotations

from typing import Any

from attnas.cli import schema
from attnas.cli.errors import RunFailed, convert, first_line
from attnas.cli.report import ResultRow, cell_line, top1_words, write_differentiable_report
from attnas.cli.rundir import RunDir
from attnas.cli.search_context import SearchOutput, op_params, pct, search_context


def plan_differentiable(cfg: Any, space: Any) -> tuple[Any, Any]:
    """``(DifferentiableSearchConfig, TrialSpec)`` of ``cfg``, converted before the run
    directory is touched (a conversion error leaves no run behind)."""
    config = convert("searcher", lambda: schema.to_search_config(cfg.searcher))
    spec = convert(
        "config",
        lambda: schema.to_trial_spec(
            cfg,
            op_channel_ratio=space.op_channel_ratio,
            op_params=op_params(space),
            resume=bool(cfg.resume),
            name=str(cfg.name),
        ),
    )
    return config, spec


def run_differentiable(cfg: Any, space: Any, plan: tuple[Any, Any], run: RunDir) -> SearchOutput:
    """Run (or resume) the differentiable search of ``plan`` in the accepted ``run``."""
    from attnas.cells import CellSet
    from attnas.space import CellSpec
    from attnas.supergraph.search import run_differentiable_search

    config, spec = plan
    try:
        result = run_differentiable_search(space, spec, config, run.path)
    except RuntimeError as err:
        if not str(err).startswith("differentiable search failed"):
            raise
        error = str(err).removeprefix("differentiable search failed:").strip()
        raise RunFailed(f"the search's training run failed: {first_line(error)}") from err
    files = list(result.cell_files)
    if len(result.cells) > 1:  # position-specific: one file mapping positions to their cells
        by_position = {f.stem.removeprefix("cell_"): f for f in files}
        CellSet(dict(result.cells)).save(run.path / "cells" / "cells.yaml", by_position)

    alpha, beta = config.alpha or space.alpha, config.beta or space.beta
    epochs = spec.train.epochs
    ctx = search_context(cfg, space, run.path, f"one training run of {epochs} epoch(s)")
    retrained = {k: v.to_dict() for k, v in result.retrained.items()}
    report = write_differentiable_report(
        run.path / "report.md",
        ctx,
        result.cells,
        files,
        result.search.to_dict(),
        retrained,
        alpha,
        beta,
    )
    summary = [f"search: top-1 of the supergraph network {pct(result.search.top1)}"]
    for f in files:
        summary.append(f"cell {f.name}: {cell_line(CellSpec.load(f))}")
    if len(result.cells) > 1:
        summary.append(
            f"cell set (every position its own cell): {run.path / 'cells' / 'cells.yaml'}"
        )
    for k, v in retrained.items():
        summary.append(
            f"retrained {k}: top-1 {top1_words(ResultRow.from_result(k, v))}, params "
            f"{v.get('num_parameters')}, FLOPs {v.get('flops')}"
        )
    failed = [k for k, v in retrained.items() if v.get("status") == "failed"]
    if failed:
        why = "; ".join(f"{k}: {first_line(retrained[k].get('error'))}" for k in failed)
        raise RunFailed(f"retraining failed for {', '.join(failed)}: {why} (report: {report})")
    return SearchOutput(run.path, report, files, summary)


__all__ = ["run_differentiable"]
