"""``attnas-search searcher=gpb|random|evolution``: trials through a dispatcher, then a report.

Reads top to bottom: convert the config, build the searcher and the dispatcher, run (or resume,
or grow) the ask/tell loop against the run's trial store, export the best cells, optionally
retrain the top cells with fresh seeds next to the baselines, write ``report.md``, and fail
(exit 1) when no trial completed. The run directory has been accepted by ``RunDir.open``.

Design choices where the spec is silent:

- The local dispatcher's payload/result files go to ``<run>/.dispatch`` (removed at the end and
  at the next start), not to the system temp directory, so a killed search leaves nothing
  behind elsewhere.
- The top cells (``report.retrain_top``, 3 by default) are retrained under
  ``retrain/<cell hash>``, the baselines under ``baselines/<none|nonlocal>``, each with a fresh
  seed (``trial_key``) that no trial used; they resume with the search.
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnas.cli import schema
from attnas.cli.errors import RunFailed, UserError, convert
from attnas.cli.plots import plot_progress
from attnas.cli.report import ResultRow, group_errors, top1_words, write_bandit_report
from attnas.cli.rundir import RunDir
from attnas.cli.search_context import SearchOutput, op_params, pct, search_context


@dataclass
class BanditPlan:
    """What a bandit search needs, converted from the config before the run directory is
    touched (a conversion error leaves no run behind)."""

    name: str
    budget: int
    searcher: Any
    base: Any
    trial_config: dict[str, Any]
    dispatcher: str
    dispatcher_kwargs: dict[str, Any]


def plan_bandit(cfg: Any, space: Any, run_dir: Path) -> BanditPlan:
    """Convert ``cfg`` into the searcher, the trials' spec and the dispatcher's arguments."""
    name = str(cfg.searcher.name)
    budget = int(cfg.budget)
    if budget < 1:
        raise UserError(f"budget must be >= 1, got {budget}")
    if int(cfg.dispatch.fail_fast) < 0:
        raise UserError(f"dispatch.fail_fast must be >= 0, got {cfg.dispatch.fail_fast}")
    searcher = _build_searcher(name, space, int(cfg.seed), cfg.searcher)
    base = convert(
        "config",
        lambda: schema.to_trial_spec(
            cfg, op_channel_ratio=space.op_channel_ratio, op_params=op_params(space)
        ),
    )
    trial_config = {
        k: v
        for k, v in base.to_dict().items()
        if k not in ("cell", "run_dir", "resume", "trial_key", "name")
    }
    dname, dkwargs = _dispatcher_kwargs(cfg, run_dir / ".dispatch")
    return BanditPlan(name, budget, searcher, base, trial_config, dname, dkwargs)


def run_bandit(cfg: Any, space: Any, plan: BanditPlan, run: RunDir) -> SearchOutput:
    """Run, resume or grow the bandit search of ``plan`` in the accepted ``run``."""
    from attnas.dispatch import SystematicFailure, TrialStore, build_dispatcher, run_search

    name, budget, searcher, base = plan.name, plan.budget, plan.searcher, plan.base
    trial_config = plan.trial_config
    shutil.rmtree(run.path / ".dispatch", ignore_errors=True)  # left by a killed search

    def on_finish(record: Any) -> None:
        top1 = (record.metrics or {}).get("top1")
        print(
            f"[{name}] trial {record.trial_id} {record.state}: top-1 "
            f"{pct(top1) if isinstance(top1, (int, float)) else 'n/a'} ({record.cell_hash})",
            flush=True,
        )

    store = TrialStore.open(run.path)
    stopped: SystematicFailure | None = None
    try:
        known = store.trials()
        run.note(first_trial=(known[-1].trial_id + 1) if known else 1, budget=budget)
        dispatcher = build_dispatcher(plan.dispatcher, **plan.dispatcher_kwargs)
        try:
            summary = run_search(
                searcher,
                store,
                dispatcher,
                budget,
                trial_config=trial_config,
                metric="top1",
                master_seed=int(cfg.seed),
                max_attempts=int(cfg.dispatch.max_attempts),
                poll_interval_s=float(cfg.dispatch.poll_interval_s),
                on_finish=on_finish,
                meta={"searcher": name, "space": space.name},
                fail_fast=int(cfg.dispatch.fail_fast),
            )
        except SystematicFailure as err:
            stopped, summary = err, None
        finally:
            dispatcher.shutdown()
            shutil.rmtree(run.path / ".dispatch", ignore_errors=True)
        trials = [r.to_dict() for r in store.trials()]
    finally:
        store.close()

    best_files = _export_best(trials, run.path / "cells", int(cfg.report.top_k))
    plot = plot_progress(trials, run.path / "plots" / "best_so_far.png", name)
    baselines: dict[str, dict[str, Any]] = {}
    retrained: dict[str, dict[str, Any]] = {}
    if cfg.report.baselines and best_files:
        baselines, retrained = _retrain_comparison(
            base, best_files[: int(cfg.report.retrain_top)], run
        )
    ctx = search_context(
        cfg, space, run.path, f"{budget} trials, each {base.train.epochs} epoch(s)"
    )
    report = write_bandit_report(
        run.path / "report.md",
        ctx,
        trials,
        best_files,
        baselines,
        plot,
        retrained=retrained,
        invocations=run.invocations,
    )

    completed = sum(t["state"] == "completed" for t in trials)
    failed = sum(t["state"] == "failed" for t in trials)
    why = "; ".join(f"{len(ids)} × {msg}" for msg, ids in group_errors(trials))
    if stopped is not None:
        raise RunFailed(f"{stopped} (report: {report})")
    if completed == 0:
        raise RunFailed(f"no trial completed ({failed} failed: {why}); report: {report}")
    assert summary is not None
    lines = [
        f"{name}: {summary.completed} completed, {summary.failed} failed trial(s) in "
        f"{summary.wall_s:.0f} s" + (" (resumed)" if summary.resumed else "")
    ]
    if failed:
        lines.append(f"failed trials, by error: {why}")
    if summary.best is not None:
        lines.append(
            f"best (selection figure, max of {completed} trials): trial {summary.best.trial_id}, "
            f"top-1 {pct(summary.best.metrics.get('top1'))}, "
            f"cell {run.path / 'cells' / 'best.yaml'}"
        )
    for k, v in {**baselines, **retrained}.items():
        lines.append(f"retrained {k} (fresh seed): top-1 {top1_words(ResultRow.from_result(k, v))}")
    return SearchOutput(run.path, report, best_files, lines)


def _build_searcher(name: str, space: Any, seed: int, node: Any) -> Any:
    """The searcher; only the conversion of its options is a user error, not its construction."""
    from attnas.controller import build_searcher
    from attnas.controller.base import searcher_class

    kwargs = convert(f"searcher {name}", lambda: schema.searcher_kwargs(node))
    try:
        inspect.signature(searcher_class(name)).bind(space, seed=seed, **kwargs)
    except TypeError as err:
        raise UserError(f"searcher {name}: {err}") from err
    return build_searcher(name, space, seed=seed, **kwargs)


def _dispatcher_kwargs(cfg: Any, scratch: Path) -> tuple[str, dict[str, Any]]:
    from attnas.dispatch import TRAIN_TRIAL_FN

    d = schema.plain(cfg.dispatch)
    name = d["name"]
    for key in ("workers", "timeout_s"):
        if d.get(key) is not None and d[key] <= 0:
            raise UserError(f"dispatch.{key} must be > 0 or null, got {d[key]}")
    if name == "local":
        return name, {
            "trial_fn": TRAIN_TRIAL_FN,
            "num_workers": d.get("workers"),
            "gpus": d.get("gpus"),
            "timeout_s": d.get("timeout_s"),
            "threads_per_worker": d.get("threads_per_worker"),
            "scratch_dir": scratch,
        }
    if name == "ray":
        return name, {
            "trial_fn": TRAIN_TRIAL_FN,
            "address": d.get("address"),
            "num_workers": d.get("workers"),
            "gpus_per_trial": d.get("gpus_per_trial"),
            "cpus_per_trial": d.get("cpus_per_trial", 1.0),
            "timeout_s": d.get("timeout_s"),
            "num_cpus": d.get("num_cpus"),
        }
    raise UserError(f"dispatch.name {name!r} is not one of ['local', 'ray']")


def _export_best(trials: list[dict[str, Any]], out_dir: Path, top_k: int) -> list[Path]:
    """Write the ``top_k`` best completed cells as ``rank<k>.yaml`` and the best as
    ``best.yaml``; return the rank files, best first."""
    from attnas.space import CellSpec

    done = [t for t in trials if t["state"] == "completed" and t["metrics"].get("top1") is not None]
    done.sort(key=lambda t: (-float(t["metrics"]["top1"]), t["trial_id"]))
    files: list[Path] = []
    for rank, t in enumerate(done[: max(1, top_k)], start=1):
        cell = CellSpec.from_dict(t["cell"])
        meta = {
            **cell.meta,
            "search": {"trial_id": t["trial_id"], "rank": rank, "top1": t["metrics"]["top1"]},
        }
        cell = CellSpec(cell.ops, cell.outputs, name=f"rank{rank}", meta=meta)
        files.append(cell.save(out_dir / f"rank{rank}.yaml"))
        if rank == 1:
            cell.save(out_dir / "best.yaml")
    return files


def _retrain_comparison(
    base: Any, cell_files: list[Path], run: RunDir
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Backbone alone, + non-local and the top cells, each trained once with a fresh seed."""
    from attnas.space import CellSpec
    from attnas.train import run_trial

    baselines: dict[str, dict[str, Any]] = {}
    for cell in ("none", "nonlocal"):
        spec = base.replace(
            cell=cell,
            run_dir=str(run.path / "baselines" / cell),
            resume=(run.path / "baselines" / cell).is_dir(),
            name=f"baseline-{cell}",
            trial_key=f"baseline-{cell}",
        )
        print(f"training baseline {cell} (fresh seed {spec.seed}) ...", flush=True)
        baselines[cell] = run_trial(spec).to_dict()
    retrained: dict[str, dict[str, Any]] = {}
    for rank, f in enumerate(cell_files, start=1):
        key = CellSpec.load(f).hash()
        out = run.path / "retrain" / key
        spec = base.replace(
            cell=str(f.resolve()),
            run_dir=str(out),
            resume=out.is_dir(),
            name=f"retrain-rank{rank}",
            trial_key=f"retrain-{key}",
        )
        print(f"retraining rank {rank} cell {key} (fresh seed {spec.seed}) ...", flush=True)
        retrained[f"rank{rank}"] = run_trial(spec).to_dict()
    return baselines, retrained


__all__ = ["run_bandit"]
