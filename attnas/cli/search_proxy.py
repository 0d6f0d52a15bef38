"""``attnas-search searcher=differentiable proxy.benchmark=<table>``: the search ``make demo`` runs.

A differentiable search under a tabular benchmark's proxy protocol, judged by that table. The
attention-sensitive task (``distant_match``) is learnt by nothing trained end to end from
scratch at CPU scale, so the search, the derivation and the retraining all run under the table's
protocol (a digit-pretrained backbone frozen below the cells, a position-wise readout; see
``attnas.benchmark.protocol``), and the derived cell can be placed among the table's cells.

Reads top to bottom: load the table and its protocol, find the pre-trained backbone (the table's
own file, copied into ``<run>/proxy``; trained once when the table ships none), cache the frozen
prefix's features, train the supergraphs and derive the cell (``run_proxy_search``), export it
(``cells/cell.yaml``), retrain the derived cell, the backbone alone and + non-local under the
same protocol with each of ``proxy.seeds`` (fresh: the search used ``seed``), place the derived
cell on the table, write ``report.md``. The run directory has been accepted by ``RunDir.open``.

Design choices where the spec is silent:

- Each retraining trial is kept as ``proxy/retrain/<model>/seed<k>.json`` and the search's cell
  and history as ``proxy/search.json``, so ``resume=true`` continues a killed run without
  training again what finished.
- The search's training budget is the protocol's (a table trial's), not ``trainer``'s: the
  supergraph is trained exactly as a table cell is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnas.cli import schema
from attnas.cli.errors import RunFailed, UserError, convert, first_line
from attnas.cli.report import (
    DIFFERENTIABLE_LABELS,
    ResultRow,
    SearchContext,
    cell_line,
    top1_words,
    write_differentiable_report,
)
from attnas.cli.rundir import RunDir
from attnas.cli.search_context import SearchOutput, pct


@dataclass
class ProxyPlan:
    """What a proxy search needs, converted before the run directory is touched."""

    config: Any  # DifferentiableSearchConfig
    name: str  # the table as the config names it
    table: Any  # Benchmark
    folder: Path
    protocol: Any  # ProxyProtocol
    seeds: list[int]


def plan_proxy(cfg: Any, space: Any) -> ProxyPlan:
    """Convert ``cfg`` (``proxy.benchmark`` set) into the search config, table and protocol."""
    from attnas.benchmark import ProxyProtocol, load
    from attnas.benchmark.search import table_folder

    config = convert("searcher", lambda: schema.to_search_config(cfg.searcher))
    if config.mode != "joint" or config.position_specific:
        raise UserError(
            "proxy.benchmark: the search under a table's protocol is joint and position-agnostic "
            f"(got searcher.mode={config.mode}, position_specific={config.position_specific})"
        )
    name = str(cfg.proxy.benchmark)
    folder = table_folder(name)
    table = load(str(folder))
    protocol = convert(
        "proxy.benchmark", lambda: ProxyProtocol.from_dict(table.manifest["protocol"])
    )
    seeds = [int(s) for s in cfg.proxy.seeds]
    if not seeds or int(cfg.seed) in seeds or len(set(seeds)) != len(seeds):
        raise UserError(
            f"proxy.seeds must be distinct fresh seeds, none of them the search's seed "
            f"{int(cfg.seed)}; got {seeds}"
        )
    return ProxyPlan(config, name, table, folder, protocol, seeds)


def run_proxy(cfg: Any, space: Any, plan: ProxyPlan, run: RunDir) -> SearchOutput:
    """Run (or resume) the proxy search of ``plan`` in the accepted ``run``."""
    from attnas.benchmark import FeatureCache
    from attnas.benchmark.search import place_on_table, protocol_weights, retrain_under_protocol
    from attnas.space import CellSpec

    protocol, table, seed = plan.protocol, plan.table, int(cfg.seed)
    alpha = plan.config.alpha or space.alpha
    beta = plan.config.beta or space.beta
    start = time.perf_counter()
    print(
        f"[proxy] protocol of table {table.name}: pre-trained {protocol.backbone} ...", flush=True
    )
    weights = protocol_weights(protocol, plan.folder, run.path / "proxy")
    cache = FeatureCache(protocol, weights)

    print(f"[proxy] searching (seed {seed}, {protocol.train.epochs} epochs) ...", flush=True)
    cell_file, search = _search(cfg, space, plan, run, cache, alpha, beta)
    cell = CellSpec.load(cell_file)
    print(f"[proxy] derived cell {cell.hash()}: {cell_line(cell)}", flush=True)

    retrained: dict[str, list[dict[str, Any]]] = {}
    for key, what in (("derived", cell), ("none", "none"), ("nonlocal", "nonlocal")):
        print(f"[proxy] retraining {key} with seeds {plan.seeds} ...", flush=True)
        results = retrain_under_protocol(
            protocol, cache, what, plan.seeds, run.path / "proxy" / "retrain" / key
        )
        retrained[key] = [r.to_dict() for r in results]

    k = cache.num_classes
    rows = {
        key: ResultRow.from_results(DIFFERENTIABLE_LABELS[key], v, k)
        for key, v in retrained.items()
    }
    derived = rows["derived"]
    placement = None
    if derived.top1 is not None:
        placement = place_on_table(table, cell, derived.top1)
    wall = time.perf_counter() - start
    report = write_differentiable_report(
        run.path / "report.md",
        _context(cfg, space, run.path, plan, k),
        {p: cell for p in protocol.positions},
        [cell_file],
        search,
        retrained,
        alpha,
        beta,
        retrain_note=(
            f"Each model below was trained under the table's protocol (the search's frozen "
            f"prefix, readout and budget) with each of the fresh seeds {plan.seeds}; the "
            f"supergraph row is the search run itself (seed {seed})."
        ),
        extra_sections=_table_section(table, cell_file, placement, plan, wall),
    )
    recalibrated = search.get("top1_bn_recalibrated")
    summary = [
        f"search: top-1 of the supergraph network {pct(search.get('top1'))}"
        + (
            ""
            if recalibrated is None
            else f" ({pct(recalibrated)} with its BatchNorm statistics re-estimated under the "
            "mean mixing weights)"
        ),
        f"cell {cell_file.name}: {cell_line(cell)}",
    ]
    for key, row in rows.items():
        summary.append(f"retrained {key}: top-1 {top1_words(row)}")
    if placement is not None:
        summary.append(_placement_words(table, placement))
    summary.append(f"wall time {wall:.0f} s")
    failed = {key: v for key, v in retrained.items() if any(r["status"] == "failed" for r in v)}
    if failed:
        why = "; ".join(
            f"{key}: {first_line(next(r['error'] for r in v if r['status'] == 'failed'))}"
            for key, v in failed.items()
        )
        raise RunFailed(f"retraining failed for {', '.join(failed)}: {why} (report: {report})")
    return SearchOutput(run.path, report, [cell_file], summary)


def _search(
    cfg: Any,
    space: Any,
    plan: ProxyPlan,
    run: RunDir,
    cache: Any,
    alpha: int,
    beta: int,
) -> tuple[Path, dict[str, Any]]:
    """Train the supergraphs and export the cell, or read them back from a finished search."""
    from attnas.benchmark.search import run_proxy_search
    from attnas.supergraph.search import export_cells

    done = run.path / "proxy" / "search.json"
    cell_file = run.path / "cells" / "cell.yaml"
    if done.is_file() and cell_file.is_file():
        return cell_file, json.loads(done.read_text())
    start = time.perf_counter()
    try:
        result = run_proxy_search(
            plan.protocol,
            cache,
            space,
            plan.config,
            int(cfg.seed),
            telemetry_path=run.path / "telemetry.jsonl",
        )
    except (RuntimeError, ValueError) as err:
        raise RunFailed(f"the search's training run failed: {first_line(err)}") from err
    positions = list(plan.protocol.positions)
    _, files = export_cells(
        result.weights, alpha, beta, run.path / "cells", positions, result.cells
    )
    last = result.history[-1]
    search = {
        "status": "completed",
        "top1": last["val_top1"],
        "top5": last.get("val_top5"),
        "val_loss": last.get("val_loss"),
        "history": result.history,
        "wall_time_s": time.perf_counter() - start,
        "seed": int(cfg.seed),
        "num_classes": cache.num_classes,
        "arch_steps": result.arch_steps,
    }
    if plan.config.dirichlet or plan.config.gumbel:  # statistics gathered under sampled mixing
        from attnas.benchmark.search import recalibrated_top1

        search["top1_bn_recalibrated"] = recalibrated_top1(
            result.model, cache, plan.protocol.train.batch_size
        )
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(search))
    return files[0], search


def _context(cfg: Any, space: Any, run_dir: Path, plan: ProxyPlan, k: int) -> SearchContext:
    """The report's "what was searched": the table's protocol, not the trainer/data groups."""
    p = plan.protocol
    return SearchContext(
        title=f"attnas search report: {cfg.name}",
        run_dir=run_dir,
        searcher=str(cfg.searcher.name),
        searcher_options={k_: v for k_, v in schema.plain(cfg.searcher).items() if k_ != "name"},
        space=space.name,
        space_file=str(cfg.space.file),
        space_size=space.size(),
        num_ops=space.num_ops,
        backbone=f"{p.backbone} (pre-trained on {p.pretrain_dataset}, frozen up to {p.split})",
        positions=list(p.positions),
        data=p.dataset,
        data_options={
            **p.dataset_kwargs,
            "train clips": p.train_clips,
            "val clips": p.val_clips,
            "data seed": p.data_seed,
        },
        trainer=p.train.to_dict(),
        budget=(
            f"one supergraph training run of {p.train.epochs} epoch(s) under the proxy protocol "
            f"of table `{plan.table.name}` (readout {p.readout}, branch opened at "
            f"{p.branch_init}); the `backbone`, `data` and `trainer` groups are not used"
        ),
        seed=int(cfg.seed),
        num_classes=k,
        input_shape=p.clip_shape(),
        op_channel_ratio=p.op_channel_ratio,
    )


def _placement_words(table: Any, placement: Any) -> str:
    partial = "" if placement.complete else f"; the table is partial ({placement.cells} cells)"
    if placement.in_table:
        return (
            f"on table {table.name}: the derived cell's row ({placement.table_seeds} seeds, mean "
            f"{pct(placement.value)}) is at percentile {placement.percentile:.1f}{partial}"
        )
    return (
        f"on table {table.name}: no row for the derived cell; its retrained mean "
        f"{pct(placement.value)} would sit at percentile {placement.percentile:.1f} of the "
        f"table's cell means{partial}"
    )


def _table_section(
    table: Any, cell_file: Path, placement: Any, plan: ProxyPlan, wall: float
) -> list[str]:
    """Where the derived cell falls on the table, and the table's own baselines."""
    lines = ["## Where the derived cell falls on the benchmark", ""]
    if placement is None:
        lines += ["(the derived cell's retraining failed: nothing to place)", ""]
    else:
        words = _placement_words(table, placement)
        lines += [words[:1].upper() + words[1:] + ".", ""]
        if not placement.in_table:
            lines += [
                "(Labelled as such: this is `Benchmark.percentile_of` the mean of the "
                "retraining above, placed among the table's cell means; the table has no row "
                "for this cell, e.g. because it has more ops than the table's space or the "
                "table is partial.)",
                "",
            ]
        if not placement.complete:
            lines += [
                f"The table is partial (`bench.complete` is False: {placement.cells} of the "
                f"space's cells so far), so the percentile can move as it grows.",
                "",
            ]
    for name, label in (("backbone", "backbone alone"), ("nonlocal", "+ non-local blocks")):
        values = table.baseline(name)
        if values:
            row = ResultRow("", top1=sum(values) / len(values), values=tuple(values))
            spread = "" if row.std is None else f" ± {100 * row.std:.2f}"
            lines.append(
                f"- The table's own {label}: {pct(row.top1)}{spread} over {len(values)} seed(s)."
            )
    if table.cells():
        lines.append(
            f"- The table's cell means range from {pct(min(map(table.mean, table.cells())))} "
            f"to {pct(table.optimum())}."
        )
    lines += [
        "",
        f"This invocation took {wall:.0f} s (search and retraining; a resumed run does not "
        "train again what had finished).",
        "",
    ]
    lines += [
        "Retrain the cell under the same protocol in Python:",
        "",
        "```python",
        "from attnas.benchmark import FeatureCache, ProxyProtocol, load, run_proxy_trial",
        "from attnas.benchmark.search import protocol_weights, table_folder",
        "from attnas.space import CellSpec",
        "",
        f"table = load({plan.name!r})",
        'protocol = ProxyProtocol.from_dict(table.manifest["protocol"])',
        f"weights = protocol_weights(protocol, table_folder({plan.name!r}), 'cache')",
        "cache = FeatureCache(protocol, weights)",
        f"cell = CellSpec.load({str(cell_file)!r})",
        "print(run_proxy_trial(protocol, cache, cell, seed=7).top1)",
        "```",
        "",
    ]
    return lines


__all__ = ["ProxyPlan", "plan_proxy", "run_proxy"]
