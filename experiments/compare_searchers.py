"""Random search, regularized evolution and the GP bandit (and the differentiable search as one
point) under equal compute budgets, with best-so-far curves over seeds.

Compute is measured, not counted in trials: every searcher runs in this process, and each
trial is charged the CPU seconds that its ``suggest``/``observe`` calls took (so the GP's fits
count against GPB) plus the cost of evaluating the cell:

- ``--mode synthetic``: the cell's value is ``attnas.dispatch.synthetic_objective`` (a smooth
  function of the cell's choice vector with one optimum, evaluated instantly), and each
  evaluation is charged ``--trial-cost`` CPU seconds, standing for one proxy training. This
  mode compares the search strategies themselves in seconds; there is no synthetic analogue of
  training a supergraph, so the differentiable search is absent from it.
- ``--mode train``: the value is the validation top-1 of a real proxy training
  (``attnas.train.run_trial`` on the embedded moving-digits task) and the charge is the CPU
  seconds it used. The differentiable search is one point: the CPU seconds of training the
  supergraph plus one proxy training of the derived cell, and that training's top-1.

A searcher stops at the first trial that reaches the budget (``--budget`` CPU seconds), so
every curve covers the same compute. Trials run one at a time; running them in this process
(rather than in ``attnas.dispatch`` workers) is what makes their CPU time measurable per trial.

Usage (from the repository root)::

    .venv/bin/python -m experiments.compare_searchers --mode synthetic            # ~ minutes
    .venv/bin/python -m experiments.compare_searchers --mode train --quick        # ~ 10 min CPU
    .venv/bin/python -m experiments.compare_searchers --mode train                # hours

Output: ``experiments/results/compare_searchers_<mode>[_quick].json`` holding, per searcher
and seed, every trial (cumulative CPU seconds, value, cell hash), the best cell, and the
summary curves on a common grid (``curves``: mean, std, min, max of best-so-far over seeds).
``notebooks/compare_searchers.ipynb`` plots them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``experiments`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnas.space import CellSpec, SearchSpace, load_space
from experiments.tasks import RESULTS_DIR, cpu_seconds, machine, task_spec, with_seed

log = logging.getLogger("experiments.compare_searchers")

SEARCHERS = ("random", "evolution", "gpb")

Evaluator = Callable[[CellSpec, int], tuple[float | None, float]]


def build(name: str, space: SearchSpace, seed: int, n_init: int = 4, population: int = 10) -> Any:
    """A fresh searcher by name (``random``, ``evolution``, ``gpb``)."""
    from attnas.controller import GPBandit, RandomSearch, RegularizedEvolution

    if name == "random":
        return RandomSearch(space, seed=seed)
    if name == "evolution":
        return RegularizedEvolution(space, seed=seed, population_size=population,
                                    sample_size=max(2, population // 4))  # fmt: skip
    if name == "gpb":
        return GPBandit(space, seed=seed, n_init=n_init)
    raise ValueError(f"unknown searcher {name!r}; choose from {list(SEARCHERS)}")


def synthetic_evaluator(space: SearchSpace, trial_cost_s: float, target_seed: int = 0) -> Evaluator:
    """Scores cells with ``synthetic_objective`` and charges ``trial_cost_s`` per trial."""
    from attnas.dispatch import synthetic_objective

    cards = space.cardinalities()

    def evaluate(cell: CellSpec, trial: int) -> tuple[float | None, float]:
        return synthetic_objective(space.encode(cell), cards, target_seed), float(trial_cost_s)

    return evaluate


def training_evaluator(spec: Any) -> Evaluator:
    """Trains ``spec`` with each cell; charges the CPU seconds the training used."""
    from attnas.train import run_trial

    def evaluate(cell: CellSpec, trial: int) -> tuple[float | None, float]:
        start = cpu_seconds()
        result = run_trial(with_seed(spec.replace(cell=cell.to_dict()), trial))
        return (result.top1 if result.ok else None), cpu_seconds() - start

    return evaluate


def run_searcher(
    searcher: Any, evaluate: Evaluator, budget_s: float, max_trials: int = 10_000
) -> list[dict[str, Any]]:
    """One search until its charged compute reaches ``budget_s`` (or ``max_trials``).

    Args:
        searcher: an ask/tell searcher (``attnas.controller.Searcher``).
        evaluate: ``(cell, trial index) -> (value or None when failed, charged seconds)``.
        budget_s: compute budget in (CPU) seconds.
        max_trials: safety cap on trials.

    Returns:
        One dict per trial: ``cost_s`` (cumulative), ``value``, ``best`` (best so far, None
        before the first success), ``overhead_s`` (the searcher's own CPU seconds),
        ``cell_hash`` and ``cell``.
    """
    from attnas.controller import TrialOutcome

    trace: list[dict[str, Any]] = []
    spent, best = 0.0, None
    for trial in range(max_trials):
        if spent >= budget_s:
            break
        t0 = time.process_time()
        cells = searcher.suggest(1)
        overhead = time.process_time() - t0
        if not cells:
            break
        cell = cells[0]
        value, charge = evaluate(cell, trial)
        t0 = time.process_time()
        outcome = TrialOutcome.failure("training failed") if value is None else value
        searcher.observe(cell, outcome)
        overhead += time.process_time() - t0
        spent += overhead + charge
        if value is not None and math.isfinite(value):
            best = value if best is None else max(best, value)
        trace.append({"cost_s": spent, "value": value, "best": best, "overhead_s": overhead,
                      "cell_hash": cell.hash(), "cell": cell.to_dict()})  # fmt: skip
    return trace


def best_so_far_on_grid(trace: Sequence[dict[str, Any]], grid: Sequence[float]) -> list[float]:
    """The best value found within each compute level of ``grid`` (NaN before the first).

    Args:
        trace: a ``run_searcher`` trace.
        grid: compute levels (seconds), increasing.

    Returns:
        One value per grid level.
    """
    out, i, best = [], 0, math.nan
    for level in grid:
        while i < len(trace) and trace[i]["cost_s"] <= level:
            if trace[i]["best"] is not None:
                best = trace[i]["best"]
            i += 1
        out.append(best)
    return out


def summarise_curves(
    runs: dict[str, list[dict[str, Any]]], budget_s: float, points: int = 50
) -> dict[str, Any]:
    """Mean, std, min and max over seeds of the best-so-far curves on a common grid.

    Args:
        runs: ``{searcher: [{"seed", "trace"}, ...]}``.
        budget_s: the budget (the grid's last level).
        points: grid levels.

    Returns:
        ``{"grid": [...], searcher: {"mean", "std", "min", "max", "n"}}``.
    """
    import numpy as np

    grid = [budget_s * (i + 1) / points for i in range(points)]
    out: dict[str, Any] = {"grid": grid}
    for name, seeds in runs.items():
        curves = np.array([best_so_far_on_grid(r["trace"], grid) for r in seeds], dtype=float)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                stats = {
                    "mean": np.nanmean(curves, axis=0),
                    "std": np.nanstd(curves, axis=0, ddof=1 if len(curves) > 1 else 0),
                    "min": np.nanmin(curves, axis=0),
                    "max": np.nanmax(curves, axis=0),
                }
        out[name] = {k: [None if math.isnan(x) else float(x) for x in v] for k, v in stats.items()}
        out[name]["n"] = len(curves)
    return out


def best_at_budget(run: dict[str, Any], budget_s: float) -> float | None:
    """The best value a run had found when its charged compute reached ``budget_s``.

    The last trial of ``run_searcher`` starts below the budget and may end above it; what it
    finds lies past the budget, so it counts in neither the curves nor this figure (it used to
    count in the table and not in the curves, which then disagreed).
    """
    best = best_so_far_on_grid(run["trace"], [budget_s])[0]
    return None if math.isnan(best) else float(best)


def final_table(report: dict[str, Any]) -> str:
    """Markdown table of each searcher's best value at the budget: the curves' end points."""
    import numpy as np

    budget = float(report["budget_s"])
    rows = [
        "| searcher | best at budget (mean ± std) | trials per seed | searcher CPU-s per seed |",
        "|---|---|---|---|",
    ]
    for name, runs in report["runs"].items():
        vals = [v for v in (best_at_budget(r, budget) for r in runs) if v is not None]
        mean = float(np.mean(vals)) if vals else math.nan
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        trials = [sum(t["cost_s"] <= budget for t in r["trace"]) for r in runs]
        over = float(np.mean([r["overhead_s"] for r in runs]))
        rows.append(f"| {name} | {mean:.3f} ± {std:.3f} | {trials} | {over:.1f} |")
    diff = report.get("differentiable")
    if diff and diff.get("value") is not None:
        rows.append(
            f"| differentiable | {diff['value']:.3f} (one run) | {diff['cost_s']:.0f} CPU-s | - |"
        )
    return "\n".join(rows)


def compare(
    space: SearchSpace,
    evaluate: Evaluator,
    budget_s: float,
    seeds: int,
    searchers: Sequence[str] = SEARCHERS,
    n_init: int = 4,
    population: int = 10,
    max_trials: int = 10_000,
) -> dict[str, list[dict[str, Any]]]:
    """Run every searcher with every seed under ``budget_s``; ``{searcher: [run, ...]}``."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in searchers:
        runs[name] = []
        for seed in range(seeds):
            wall = time.perf_counter()
            searcher = build(name, space, seed, n_init=n_init, population=population)
            trace = run_searcher(searcher, evaluate, budget_s, max_trials)
            best = max((t for t in trace if t["value"] is not None), key=lambda t: t["value"],
                       default=None)  # fmt: skip
            best = None if best is None else dict(best)
            for t in trace:
                t.pop("cell")  # keeps the results file small; hashes identify the cells
            runs[name].append({
                "seed": seed, "trace": trace, "trials": len(trace),
                "best_value": None if best is None else best["value"],
                "best_cell": None if best is None else best["cell"],
                "overhead_s": sum(t["overhead_s"] for t in trace),
                "wall_s": time.perf_counter() - wall,
            })  # fmt: skip
            log.info("%s seed %d: %d trials, best %s", name, seed, len(trace),
                     runs[name][-1]["best_value"])  # fmt: skip
    return runs


def differentiable_point(space: SearchSpace, spec: Any, run_dir: Path) -> dict[str, Any]:
    """Supergraph search + one proxy training of the derived cell: cost and value."""
    from attnas.supergraph.search import DifferentiableSearchConfig, run_differentiable_search

    start = cpu_seconds()
    result = run_differentiable_search(
        space, spec, DifferentiableSearchConfig(mode="joint"), run_dir
    )
    cell = next(iter(result.cells.values()))
    value, _ = training_evaluator(spec)(cell, 0)
    return {"cost_s": cpu_seconds() - start, "value": value, "cell_hash": cell.hash(),
            "cell": cell.to_dict(), "search_top1": result.search.top1}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the report it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["synthetic", "train"], default="synthetic")
    parser.add_argument("--quick", action="store_true", help="tiny settings")
    parser.add_argument("--budget", type=float, help="compute budget per search (CPU seconds)")
    parser.add_argument("--seeds", type=int, help="search seeds per searcher")
    parser.add_argument("--searchers", nargs="+", choices=SEARCHERS, default=list(SEARCHERS))
    parser.add_argument("--trial-cost", type=float, default=60.0,
                        help="synthetic mode: CPU seconds charged per evaluated cell")  # fmt: skip
    parser.add_argument("--target-seed", type=int, default=0, help="synthetic optimum's seed")
    parser.add_argument("--space", default="attention_nas")
    parser.add_argument("--no-differentiable", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("runs") / "compare_searchers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    space = load_space(args.space)
    diff = None
    if args.mode == "synthetic":
        budget = args.budget or (20 if args.quick else 40) * args.trial_cost
        seeds = args.seeds or (3 if args.quick else 5)
        evaluate = synthetic_evaluator(space, args.trial_cost, args.target_seed)
        settings = {"trial_cost_s": args.trial_cost, "target_seed": args.target_seed}
        n_init, population = 4, 10
    else:
        sizes = {"train_clips": 512, "val_clips": 128, "epochs": 3} if args.quick else {
            "train_clips": 512, "val_clips": 256, "epochs": 4}  # fmt: skip
        spec = task_spec("moving_digits", **sizes).replace(op_channel_ratio=space.op_channel_ratio)
        budget = args.budget or (150.0 if args.quick else 4 * 3600.0)
        seeds = args.seeds or (2 if args.quick else 5)
        evaluate = training_evaluator(spec)
        settings = {"proxy": spec.to_dict()}
        n_init, population = (3, 4) if args.quick else (8, 16)
        if not args.no_differentiable:
            diff = differentiable_point(space, spec, args.work_dir / "differentiable")
    start = time.perf_counter()
    runs = compare(space, evaluate, budget, seeds, args.searchers, n_init, population)
    report = {
        "mode": args.mode,
        "quick": args.quick,
        "space": args.space,
        "space_size": space.size(),
        "budget_s": budget,
        "budget_unit": "CPU seconds (measured searcher overhead + trial charge)",
        "seeds": seeds,
        "settings": {**settings, "n_init": n_init, "population": population},
        "machine": machine(),
        "runs": runs,
        "curves": summarise_curves(runs, budget),
        "differentiable": diff,
        "wall_s": time.perf_counter() - start,
    }
    if args.mode == "synthetic":
        from attnas.dispatch.synthetic import target_vector

        report["optimum"] = space.decode(
            target_vector(space.cardinalities(), args.target_seed)
        ).to_dict()
    name = f"compare_searchers_{args.mode}{'_quick' if args.quick else ''}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(report))
    for s, seeds_runs in runs.items():
        finals = [v for v in (best_at_budget(r, budget) for r in seeds_runs) if v is not None]
        trials = [r["trials"] for r in seeds_runs]
        mean = sum(finals) / max(1, len(finals))
        print(f"{s:10s} best-at-budget mean {mean:.4f} over {len(finals)} seeds; trials {trials}")
    if diff is not None:
        print(f"differentiable: {diff['value']} at {diff['cost_s']:.0f} CPU-s")
    return report


if __name__ == "__main__":
    main()
