"""Reproduce the *shape* of AttentionNAS's tables on CPU-sized tasks, with spread over seeds.

Main table, per task (the embedded ``moving_digits`` task, and ``weizmann4`` when its folder
is present), on ``i3d_tiny`` with cells at its 5 default insertion points:

====================  ========================================================================
row                   what is trained and evaluated
====================  ========================================================================
backbone              the backbone alone (``cell="none"``)
non-local             a non-local block (C_op = C/2) at every position
GPB cell              the best cell of a GP-bandit search (``attnas.controller.GPBandit``)
                      whose trials are short proxy trainings run through
                      ``attnas.dispatch.run_search`` (trial store + local worker processes)
differentiable (PA)   the cell derived from a position-agnostic supergraph search
differentiable (PS)   the cells derived from a position-specific search (one per position)
====================  ========================================================================

The attention-sensitive task ``distant_match`` (the ``cpu`` preset's task) runs under the
tabular benchmark's proxy protocol instead (``attnas.benchmark.protocol``: digit-pretrained
i3d_tiny frozen up to ``Conv3d_2c_3x3``, one cell there, the position-wise readout, the table's
clips and budget), because trained from scratch at CPU size neither the backbone nor +
non-local leave chance on it (``experiments/results/task_calibration.md``). Its GPB trials are
table trials (one seed, 0), its differentiable row is ``run_proxy_search``, every row is
retrained under the protocol with fresh seeds (100, 101, ...; the table's rows use 0-4), and
each row's mean is placed among the table's cell means (``place_on_table``: 100 = best). The
protocol has one cell position, where a position-specific search is the position-agnostic one,
so that row is left out; the transfer table uses r3d_tiny under the same protocol with the
cells at ``res2_0``.

Every row is retrained from scratch with ``--seeds`` seeds under the same budget and reported
as mean ± sample std of validation top-1 (and top-5), with parameters, FLOPs per clip and, for
searched rows, the search's measured cost (wall and CPU seconds, CPU including worker
processes). The cell-transfer table inserts the cells found on ``i3d_tiny`` (GPB and
position-agnostic differentiable; position-specific cells are tied to I3D's position names)
into other backbones (``r3d_tiny``; also ``s3d_tiny`` in the full setting) next to those
backbones' own baseline and non-local rows.

Usage (from the repository root)::

    .venv/bin/python -m experiments.paper_tables --quick          # ~ a few minutes on 2 cores
    .venv/bin/python -m experiments.paper_tables --preset cpu     # ~ 40 minutes on 2 cores
    .venv/bin/python -m experiments.paper_tables                  # full: hours on a GPU,
                                                                  # an overnight run on a CPU
    .venv/bin/python -m experiments.paper_tables --seeds 3 --tasks moving_digits weizmann4

Outputs: ``experiments/results/paper_tables_<preset>.json`` (every per-seed result, the specs,
the cells, the machine) and ``.md`` (the tables), the discovered cells as
``experiments/results/cells/<task>_<method>.yaml``, and search run directories under
``--work-dir`` (default ``runs/paper_tables_<preset>``, not committed).

Selection noise. The GPB row's cell is the maximum of ``gpb_budget`` proxy trials chosen on one
validation split, so each searched row shows its search figure beside chance (``1 / classes``),
and the GPB row is flagged when its proxy trials do not differ beyond binomial noise: a χ² test
of homogeneity of the trials' top-1 counts over the validation clips (p > 0.05), or a best
trial that is not above chance (one-sided binomial test, Bonferroni-corrected for the number of
trials). A flagged GPB cell is indistinguishable from a random pick of the space; the tables
say so in a warning line instead of presenting it as a search result.

Design choices where the paper and DESIGN.md are silent: GPB searches on a proxy (fewer clips
and epochs than the final training, as the paper's GPB trials are shorter than the final runs);
the differentiable searches train the supergraph for the final training's epochs on the full
training split (the paper's "search ≈ one training run"); searches run once (search seed 0) and
only the retraining is repeated over seeds, as in the paper's tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``experiments`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnas.cli.report import top5_informative
from attnas.space import CellSpec, SearchSpace, load_space
from attnas.train import TrialResult, TrialSpec, run_trial
from experiments.tasks import (
    RESULTS_DIR,
    machine,
    mean_std,
    measured,
    task_spec,
    weizmann4_available,
    with_seed,
)

log = logging.getLogger("experiments.paper_tables")

BASE_BACKBONE = "i3d_tiny"


@dataclass(frozen=True)
class Preset:
    """Sizes of one run of the experiment.

    Attributes:
        name: preset name (the output files' suffix).
        tasks: tasks to run (weizmann4 is skipped when absent).
        seeds: training seeds of every evaluated row.
        train_clips: training clips of the final trainings (moving_digits).
        val_clips: validation clips (moving_digits).
        epochs: epochs of the final trainings and of the differentiable searches.
        batch_size: clips per step.
        gpb_budget: GPB trials.
        gpb_n_init: random trials before the GP is used.
        proxy_train_clips: training clips of a GPB trial.
        proxy_epochs: epochs of a GPB trial.
        workers: concurrent GPB trials (local worker processes).
        transfer_backbones: backbones the i3d_tiny cells are transferred to.
        space: search space name or file.
    """

    name: str
    tasks: tuple[str, ...] = ("moving_digits", "weizmann4")
    seeds: int = 5
    train_clips: int = 1024
    val_clips: int = 256
    epochs: int = 12
    batch_size: int = 16
    gpb_budget: int = 40
    gpb_n_init: int = 8
    proxy_train_clips: int = 512
    proxy_epochs: int = 4
    workers: int = 1
    transfer_backbones: tuple[str, ...] = ("r3d_tiny", "s3d_tiny")
    space: str = "attention_nas"
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # Minutes on a loaded 2-core CPU: numbers are near chance; the point is the tables' shape.
    "quick": Preset(
        name="quick",
        tasks=("moving_digits",),
        seeds=2,
        train_clips=96,
        val_clips=64,
        epochs=2,
        gpb_budget=5,
        gpb_n_init=3,
        proxy_train_clips=64,
        proxy_epochs=1,
        transfer_backbones=("r3d_tiny",),
    ),
    # About 40 minutes on 2 cores: the attention-sensitive task under the table's proxy
    # protocol (whose clips and epochs replace the sizes below for that task; the sizes apply
    # to moving_digits and weizmann4). Whether two rows differ beyond noise is for the tables'
    # spreads to say (and the proxy-noise warning for the GPB row), not for this preset.
    "cpu": Preset(
        name="cpu",
        tasks=("distant_match",),
        seeds=3,
        train_clips=512,
        val_clips=256,
        epochs=4,
        gpb_budget=8,
        gpb_n_init=4,
        proxy_train_clips=256,
        proxy_epochs=2,
        transfer_backbones=("r3d_tiny",),
    ),
    # Hours on one GPU (set --workers to the GPU count), an overnight run on a many-core CPU.
    "full": Preset(name="full"),
}


def _row(
    task: str, backbone: str, method: str, results: list[TrialResult], **extra: Any
) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    first = ok[0] if ok else (results[0] if results else None)
    return {
        "task": task,
        "backbone": backbone,
        "method": method,
        "top1": mean_std([r.top1 for r in ok]),
        "top5": mean_std([r.top5 for r in ok]),
        "per_seed_top1": [r.top1 for r in results],
        "failed": [r.error.splitlines()[0] for r in results if not r.ok and r.error],
        "num_classes": None if first is None else first.num_classes,
        "num_parameters": None if first is None else first.num_parameters,
        "flops": None if first is None else first.flops,
        "train_wall_s": mean_std([r.wall_time_s for r in results]),
        **extra,
    }


NOISE_P = 0.05  # significance level of the proxy-noise checks


def proxy_summary(values: list[float], val_clips: int, num_classes: int) -> dict[str, Any]:
    """Best proxy top-1 beside chance, and whether the proxy trials differ beyond noise.

    Args:
        values: Validation top-1 of each completed proxy trial, in [0, 1].
        val_clips: Validation clips each value was measured on.
        num_classes: Classes of the task (chance is ``1 / num_classes``).

    Returns:
        ``best``, ``worst``, ``chance``, ``val_clips``, ``trials``, ``se`` (binomial standard
        error at the pooled top-1), ``homogeneity_p`` (χ² test that every trial has the same
        top-1), ``best_above_chance_p`` (one-sided binomial test of the best against chance,
        times the number of trials), ``within_noise`` and ``warning`` (None when the trials
        differ beyond noise and the best is above chance).
    """
    from scipy import stats

    n, k = int(val_clips), len(values)
    chance = 1.0 / num_classes
    counts = [round(v * n) for v in values]
    pooled = sum(counts) / (k * n) if k else math.nan
    if k > 1 and 0 < pooled < 1:
        chi2 = sum((c - n * pooled) ** 2 for c in counts) / (n * pooled * (1 - pooled))
        homogeneity_p = float(stats.chi2.sf(chi2, k - 1))
    else:
        homogeneity_p = 1.0  # one trial, or all at 0 or 1: no evidence of a difference
    best = max(values) if values else math.nan
    above_p = min(1.0, k * float(stats.binom.sf(max(counts, default=0) - 1, n, chance)))
    within_noise = homogeneity_p > NOISE_P or above_p > NOISE_P
    se = math.sqrt(pooled * (1 - pooled) / n) if 0 <= pooled <= 1 else math.nan
    warning = None
    if within_noise:
        warning = (
            f"the {k} GPB proxy trials are within binomial noise: top-1 "
            f"{min(values, default=math.nan) * 100:.1f}-{best * 100:.1f} % over {n} clips "
            f"(1 s.e. {se * 100:.1f} pp; homogeneity p = {homogeneity_p:.2f}; best above "
            f"chance {chance * 100:.1f} %: p = {above_p:.2f}), so the GPB cell is "
            "indistinguishable from a random pick"
        )
    return {
        "best": best, "worst": min(values, default=math.nan), "chance": chance,
        "val_clips": n, "trials": k, "se": se, "homogeneity_p": homogeneity_p,
        "best_above_chance_p": above_p, "within_noise": within_noise, "warning": warning,
    }  # fmt: skip


def evaluate(
    spec: TrialSpec, seeds: int, module_factory: Any = None, label: str = ""
) -> list[TrialResult]:
    """Train and evaluate ``spec`` once per seed (0..seeds-1)."""
    out = []
    for seed in range(seeds):
        result = run_trial(with_seed(spec, seed), module_factory=module_factory)
        log.info("%s seed %d: top1=%s (%.1fs)", label, seed, result.top1, result.wall_time_s)
        out.append(result)
    return out


def gpb_search(
    space: SearchSpace, proxy_spec: TrialSpec, preset: Preset, run_dir: Path
) -> tuple[CellSpec, dict[str, Any]]:
    """A GP-bandit search over ``space`` whose trials train ``proxy_spec`` with each cell.

    Returns:
        The best cell and a summary (trials, best proxy top-1, ``proxy_summary``, cost).
    """
    from attnas.dispatch import TRAIN_TRIAL_FN

    config = proxy_spec.to_dict()
    config.pop("name", None)

    def clips_and_classes(record: Any) -> dict[str, Any]:
        found = _clips_and_classes(record.metrics)
        return {"val_clips": found["val_clips"] or preset.val_clips,
                "num_classes": found["num_classes"] or _num_classes(proxy_spec)}  # fmt: skip

    return _run_gpb(space, preset, run_dir, TRAIN_TRIAL_FN, config, clips_and_classes)


def _run_gpb(
    space: SearchSpace,
    preset: Preset,
    run_dir: Path,
    trial_fn: str,
    config: dict[str, Any],
    clips_and_classes: Any,
) -> tuple[CellSpec, dict[str, Any]]:
    """GPB over ``space`` through ``run_search`` and local workers running ``trial_fn``; the
    best cell and the search summary. ``clips_and_classes(record)`` gives a finished trial's
    ``val_clips`` and ``num_classes`` (for ``proxy_summary``)."""
    from attnas.controller import GPBandit
    from attnas.dispatch import TrialStore, build_dispatcher, run_search

    searcher = GPBandit(space, seed=0, n_init=preset.gpb_n_init)
    with measured() as cost, TrialStore.open(run_dir) as store:
        with build_dispatcher("local", trial_fn=trial_fn, num_workers=preset.workers) as d:
            summary = run_search(searcher, store, d, preset.gpb_budget, trial_config=config,
                                 master_seed=0, poll_interval_s=0.2)  # fmt: skip
        trials = [
            {"trial_id": r.trial_id, "cell_hash": r.cell_hash, "state": r.state,
             "top1": r.objective("top1"), **clips_and_classes(r)}
            for r in store.trials()
        ]  # fmt: skip
    if summary.best is None:
        raise RuntimeError(f"GPB search in {run_dir} completed no trial: {trials}")
    best = summary.best.spec()
    proxy_top1 = summary.best.objective("top1")
    best = CellSpec(best.ops, best.outputs, name="gpb_best",
                    meta={"search": "gpb", "proxy_top1": proxy_top1})  # fmt: skip
    done = [t for t in trials if t["top1"] is not None]
    proxy = proxy_summary(
        [t["top1"] for t in done],
        val_clips=int(done[0]["val_clips"]),
        num_classes=int(done[0]["num_classes"]),
    )
    if proxy["warning"]:
        log.warning("%s", proxy["warning"])
    info = {"trials": trials, "best_proxy_top1": proxy_top1, "proxy": proxy,
            "completed": summary.completed, "failed": summary.failed, **cost}  # fmt: skip
    return best, info


def _clips_and_classes(metrics: dict[str, Any]) -> dict[str, Any]:
    """Validation clips and classes of a trial, from its stored ``TrialResult``."""
    history = metrics.get("history") or [{}]
    return {"val_clips": history[-1].get("val_clips"), "num_classes": metrics.get("num_classes")}


def _num_classes(spec: TrialSpec) -> int:
    from attnas.data import build_dataset

    common = dict(spec.dataset_kwargs)
    return int(build_dataset(spec.dataset, split="val", **common, **spec.val_kwargs).num_classes)


def differentiable_search(
    space: SearchSpace, spec: TrialSpec, position_specific: bool, run_dir: Path
) -> tuple[dict[str, CellSpec], dict[str, Any]]:
    """A joint differentiable search; the derived cell per position and a summary."""
    from attnas.supergraph.search import DifferentiableSearchConfig, run_differentiable_search

    config = DifferentiableSearchConfig(mode="joint", position_specific=position_specific)
    with measured() as cost:
        result = run_differentiable_search(space, spec, config, run_dir)
    info = {"search_top1": result.search.top1, "cell_files": [str(p) for p in result.cell_files],
            "chance": None if not result.search.num_classes else 1 / result.search.num_classes,
            **cost}  # fmt: skip
    return result.cells, info


def _cell_summary(cells: dict[str, CellSpec]) -> dict[str, Any]:
    return {pos: {"hash": c.hash(), "describe": c.describe(), "cell": c.to_dict()}
            for pos, c in cells.items()}  # fmt: skip


def run_task(
    task: str, preset: Preset, space: SearchSpace, work_dir: Path, cells_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The main-table rows and the transfer-table rows of one task."""
    from attnas.supergraph.search import derived_cell_factory

    if task in PROXY_TASKS:
        return run_proxy_task(task, preset, space, work_dir, cells_dir)
    cache = work_dir / "cache" if task == "weizmann4" else None
    spec = task_spec(task, backbone=BASE_BACKBONE, train_clips=preset.train_clips,
                     val_clips=preset.val_clips, epochs=preset.epochs,
                     batch_size=preset.batch_size, cache_dir=cache)  # fmt: skip
    spec = spec.replace(op_channel_ratio=space.op_channel_ratio)
    proxy = task_spec(task, backbone=BASE_BACKBONE, train_clips=preset.proxy_train_clips,
                      val_clips=preset.val_clips, epochs=preset.proxy_epochs,
                      batch_size=preset.batch_size, cache_dir=cache)  # fmt: skip
    proxy = proxy.replace(op_channel_ratio=space.op_channel_ratio)
    rows: list[dict[str, Any]] = []
    for method, cell in (("backbone", "none"), ("non-local", "nonlocal")):
        results = evaluate(spec.replace(cell=cell), preset.seeds, label=f"{task}/{method}")
        rows.append(_row(task, BASE_BACKBONE, method, results))

    log.info("%s: GPB search (%d trials)", task, preset.gpb_budget)
    gpb_cell, gpb_info = gpb_search(space, proxy, preset, work_dir / task / "gpb")
    gpb_cell.save(cells_dir / f"{task}_gpb.yaml")
    results = evaluate(spec.replace(cell=gpb_cell.to_dict()), preset.seeds, label=f"{task}/gpb")
    rows.append(_row(task, BASE_BACKBONE, "GPB cell", results, search=gpb_info,
                     cells=_cell_summary({"all": gpb_cell})))  # fmt: skip

    found: dict[str, dict[str, CellSpec]] = {}
    for ps, method in ((False, "differentiable (PA)"), (True, "differentiable (PS)")):
        tag = "diff_ps" if ps else "diff_pa"
        log.info("%s: %s search", task, method)
        cells, info = differentiable_search(space, spec, ps, work_dir / task / tag)
        found[tag] = cells
        if ps:
            for pos, c in cells.items():
                c.save(cells_dir / f"{task}_{tag}_{pos}.yaml")
        else:
            next(iter(cells.values())).save(cells_dir / f"{task}_{tag}.yaml")
        factory = derived_cell_factory(cells, space.op_channel_ratio)
        results = evaluate(spec.replace(positions=tuple(cells)), preset.seeds, factory,
                           label=f"{task}/{tag}")  # fmt: skip
        rows.append(_row(task, BASE_BACKBONE, method, results, search=info,
                         cells=_cell_summary(cells)))  # fmt: skip

    transfer: list[dict[str, Any]] = []
    pa_cell = next(iter(found["diff_pa"].values()))
    for target in preset.transfer_backbones:
        tspec = spec.replace(backbone=target)
        for method, cell in (
            ("backbone", "none"),
            ("non-local", "nonlocal"),
            (f"GPB cell from {BASE_BACKBONE}", gpb_cell.to_dict()),
            (f"differentiable (PA) cell from {BASE_BACKBONE}", pa_cell.to_dict()),
        ):
            results = evaluate(tspec.replace(cell=cell), preset.seeds, label=f"{target}/{method}")
            transfer.append(_row(task, target, method, results))
    return rows, transfer


# Tasks run under a tabular benchmark's proxy protocol: task -> (table, backbone -> cell split).
PROXY_TASKS: dict[str, str] = {"distant_match": "distant_match_k2"}
PROXY_SPLITS = {"i3d_tiny": "Conv3d_2c_3x3", "r3d_tiny": "res2_0"}
TASK_CLASSES = {"moving_digits": 4, "weizmann4": 4, "distant_match": 2}
PROXY_SEED0 = 100  # retraining seeds 100, 101, ...: the table's rows (and GPB's trials) use 0-4


def proxy_gpb_search(
    space: SearchSpace, protocol: Any, cache_dir: Path, preset: Preset, run_dir: Path
) -> tuple[CellSpec, dict[str, Any]]:
    """GPB over ``space`` whose trials are table trials under ``protocol`` (seed 0), run through
    ``run_search`` and local worker processes (``attnas.benchmark.build.run_table_trial``)."""
    config = {"protocol": protocol.to_dict(), "seeds": [0], "cache_dir": str(cache_dir)}
    return _run_gpb(
        space, preset, run_dir, "attnas.benchmark.build:run_table_trial", config,
        lambda record: {"val_clips": protocol.val_clips, "num_classes": 2},
    )  # fmt: skip


def run_proxy_task(
    task: str, preset: Preset, space: SearchSpace, work_dir: Path, cells_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The main-table and transfer rows of a task under its table's proxy protocol."""
    from dataclasses import replace as dc_replace

    from attnas.benchmark import FeatureCache, ProxyProtocol, load
    from attnas.benchmark.search import (
        place_on_table,
        protocol_weights,
        retrain_under_protocol,
        run_proxy_search,
        table_folder,
    )
    from attnas.supergraph.search import DifferentiableSearchConfig

    table = load(PROXY_TASKS[task])
    folder = table_folder(PROXY_TASKS[task])
    base = ProxyProtocol.from_dict(table.manifest["protocol"])
    seeds = list(range(PROXY_SEED0, PROXY_SEED0 + preset.seeds))
    caches: dict[str, Any] = {}

    def protocol_for(backbone: str) -> Any:
        split = PROXY_SPLITS[backbone]
        return dc_replace(base, backbone=backbone, split=split, positions=(split,))

    def cache_for(backbone: str) -> tuple[Any, Any, Path]:
        protocol = protocol_for(backbone)
        cache_dir = work_dir / task / "cache"
        if backbone not in caches:
            weights = protocol_weights(protocol, folder, cache_dir)
            caches[backbone] = FeatureCache(protocol, weights, store=cache_dir)
        return protocol, caches[backbone], cache_dir

    def row(backbone: str, method: str, what: Any, tag: str, **extra: Any) -> dict[str, Any]:
        protocol, cache, _ = cache_for(backbone)
        store = work_dir / task / "retrain" / backbone / tag
        results = retrain_under_protocol(protocol, cache, what, seeds, store)
        for seed, r in zip(seeds, results):
            log.info("%s/%s/%s seed %d: top1=%s", task, backbone, tag, seed, r.top1)
        out = _row(task, backbone, method, results, **extra)
        if backbone == BASE_BACKBONE and out["top1"].get("n"):
            cell = what if isinstance(what, CellSpec) else None
            if cell is not None and len(cell.ops) != table.space.num_ops:
                cell = None  # outside the table's space: placed by its retrained mean
            placed = place_on_table(table, cell, out["top1"]["mean"]) if cell else None
            out["table"] = {
                "name": table.name, "cells": len(table), "complete": table.complete,
                "in_table": bool(placed and placed.in_table),
                "percentile": (placed.percentile if placed
                               else table.percentile_of(out["top1"]["mean"])),
            }  # fmt: skip
        return out

    protocol, cache, cache_dir = cache_for(BASE_BACKBONE)
    rows = [
        row(BASE_BACKBONE, "backbone", "none", "none"),
        row(BASE_BACKBONE, "non-local", "nonlocal", "nonlocal"),
    ]
    log.info("%s: GPB search (%d table trials)", task, preset.gpb_budget)
    gpb_cell, gpb_info = proxy_gpb_search(space, protocol, cache_dir, preset,
                                          work_dir / task / "gpb")  # fmt: skip
    gpb_cell.save(cells_dir / f"{task}_gpb.yaml")
    rows.append(row(BASE_BACKBONE, "GPB cell", gpb_cell, "gpb", search=gpb_info,
                    cells=_cell_summary({"all": gpb_cell})))  # fmt: skip

    log.info("%s: differentiable (PA) search under the protocol", task)
    config = DifferentiableSearchConfig(mode="joint", position_specific=False)
    with measured() as cost:
        result = run_proxy_search(protocol, cache, space, config, seed=0)
    pa_cell = CellSpec(result.cell.ops, result.cell.outputs, name="diff_pa")
    pa_cell.save(cells_dir / f"{task}_diff_pa.yaml")
    info = {"search_top1": result.history[-1]["val_top1"], "chance": 1 / cache.num_classes,
            "arch_steps": result.arch_steps, **cost}  # fmt: skip
    rows.append(row(BASE_BACKBONE, "differentiable (PA)", pa_cell, "diff_pa", search=info,
                    cells=_cell_summary({"all": pa_cell})))  # fmt: skip

    transfer: list[dict[str, Any]] = []
    for target in preset.transfer_backbones:
        if target not in PROXY_SPLITS:
            log.warning("%s: no proxy protocol split for %s; skipped", task, target)
            continue
        for method, what, tag in (
            ("backbone", "none", "none"),
            ("non-local", "nonlocal", "nonlocal"),
            (f"GPB cell from {BASE_BACKBONE}", gpb_cell, "gpb"),
            (f"differentiable (PA) cell from {BASE_BACKBONE}", pa_cell, "diff_pa"),
        ):
            transfer.append(row(target, method, what, tag))
    return rows, transfer


def _fmt(stat: dict[str, Any], scale: float = 100.0) -> str:
    if not stat.get("n"):
        return "failed"
    return f"{stat['mean'] * scale:.1f} ± {stat['std'] * scale:.1f} (n={stat['n']})"


def _search_figure(search: dict[str, Any]) -> str:
    """The search's own top-1 beside chance: the best proxy trial (GPB) or the supergraph."""
    proxy = search.get("proxy")
    if proxy:
        flag = " ⚠ within noise" if proxy["within_noise"] else ""
        return (f"best proxy {proxy['best'] * 100:.1f} (chance {proxy['chance'] * 100:.1f}, "
                f"{proxy['trials']} trials){flag}")  # fmt: skip
    if search.get("search_top1") is not None and search.get("chance"):
        return f"supergraph {search['search_top1'] * 100:.1f} (chance {search['chance'] * 100:.1f})"
    return "-"


def _classes(row: dict[str, Any]) -> int | None:
    """The row's classes (rows written before ``num_classes`` was kept: from the task)."""
    return row.get("num_classes") or TASK_CLASSES.get(row["task"])


def _table_figure(row: dict[str, Any]) -> str:
    """Where a proxy-task row's mean falls among its table's cell means (100 = best)."""
    t = row.get("table")
    if not t:
        return "-"
    partial = "" if t["complete"] else f", partial table of {t['cells']} cells"
    how = "its row" if t["in_table"] else "retrained mean"
    return f"{t['percentile']:.0f} ({how}{partial})"


def markdown(report: dict[str, Any]) -> str:
    """The tables of a report as markdown."""
    head = ("| task | backbone | method | top-1 % (mean ± std) | top-5 % | params | MFLOPs/clip "
            "| search CPU-s | search top-1 % | table percentile |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip

    def line(r: dict[str, Any]) -> str:
        search = r.get("search", {}).get("cpu_s")
        flops = "-" if r["flops"] is None else f"{r['flops'] / 1e6:.1f}"
        top5 = _fmt(r["top5"]) if top5_informative(_classes(r)) else "n/a"
        return (f"| {r['task']} | {r['backbone']} | {r['method']} | {_fmt(r['top1'])} | "
                f"{top5} | {r['num_parameters'] or 0:,} | {flops} | "
                f"{'-' if search is None else f'{search:.0f}'} | "
                f"{_search_figure(r.get('search', {}))} | {_table_figure(r)} |\n")  # fmt: skip

    warnings = [
        f"- **{r['task']} / {r['method']}**: {r['search']['proxy']['warning']}.\n"
        for r in report["rows"]
        if (r.get("search", {}).get("proxy") or {}).get("warning")
    ]

    s = report["settings"]
    out = [
        f"# AttentionNAS tables, CPU-sized ({report['preset']})\n\n",
        f"Seeds per row: {s['seeds']}; "
        + (
            f"final training: {s['epochs']} epochs; GPB: {s['gpb_budget']} proxy trials of "
            f"{s['proxy_epochs']} epoch(s)"
            if any(t not in PROXY_TASKS for t in report.get("tasks", ["moving_digits"]))
            else f"GPB: {s['gpb_budget']} trials"
        )
        + ". Top-5 is n/a with 5 or fewer classes. Measured on "
        f"{report['machine']['cpu_count']} CPU cores (torch threads "
        f"{report['machine']['torch_threads']}), total {report['total_wall_s']:.0f} s.\n\n",
        *(
            [
                f"{', '.join(proxy)}: every row is trained under the tabular benchmark's proxy "
                "protocol (its clips, epochs and frozen digit-pretrained prefix; "
                f"seeds {PROXY_SEED0}, {PROXY_SEED0 + 1}, ...), GPB's proxy trials are table "
                "trials (seed 0), and the last column places each row's mean among the "
                "table's cell means (100 = best). Position-specific search is left out: the "
                "protocol has one cell position.\n\n"
            ]
            if (proxy := [t for t in report.get("tasks", []) if t in PROXY_TASKS])
            else []
        ),
        "## Main table\n\n",
        head,
        *(line(r) for r in report["rows"]),
        *(["\n**Warning: selection noise.**\n\n", *warnings] if warnings else []),
        "\n## Cell transfer (cells found on i3d_tiny)\n\n",
        head,
        *(line(r) for r in report["transfer"]),
        "\n## Discovered cells\n\n",
    ]
    for r in report["rows"]:
        for pos, c in (r.get("cells") or {}).items():
            where = "" if pos == "all" else f" at {pos}"
            body = c["describe"].replace("\n", "\n    ")
            out.append(
                f"- **{r['task']} / {r['method']}{where}** (`{c['hash']}`):\n\n    {body}\n\n"
            )
    return "".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the report it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a few minutes)")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="quick | cpu (~20 min on 2 cores) | full"
    )
    parser.add_argument("--seeds", type=int, help="training seeds per row")
    parser.add_argument("--epochs", type=int, help="epochs of final trainings and searches")
    parser.add_argument("--gpb-budget", type=int, help="GPB trials")
    parser.add_argument("--workers", type=int, help="concurrent GPB trials")
    parser.add_argument("--tasks", nargs="+", choices=["moving_digits", "weizmann4", *PROXY_TASKS])
    parser.add_argument("--transfer", nargs="*", help="backbones the cells are transferred to")
    parser.add_argument("--space", help="search space name or file")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--work-dir", type=Path, help="search run directories")
    parser.add_argument(
        "--markdown-only", action="store_true",
        help="rewrite the preset's .md from its .json (nothing is trained)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    preset = PRESETS[args.preset or ("quick" if args.quick else "full")]
    if args.markdown_only:
        path = args.out / f"paper_tables_{preset.name}.json"
        if not path.is_file():
            parser.error(f"--markdown-only: no {path}")
        report = json.loads(path.read_text())
        (args.out / f"paper_tables_{preset.name}.md").write_text(markdown(report))
        return report
    changes = {k: v for k, v in {
        "seeds": args.seeds, "epochs": args.epochs, "gpb_budget": args.gpb_budget,
        "workers": args.workers, "space": args.space,
        "tasks": tuple(args.tasks) if args.tasks else None,
        "transfer_backbones": tuple(args.transfer) if args.transfer is not None else None,
    }.items() if v is not None}  # fmt: skip
    preset = replace(preset, **changes)
    tasks = [t for t in preset.tasks if t != "weizmann4" or weizmann4_available()]
    skipped = sorted(set(preset.tasks) - set(tasks))
    if skipped:
        log.warning("skipping %s: dataset folder not found", skipped)
    work_dir = args.work_dir or Path("runs") / f"paper_tables_{preset.name}"
    cells_dir = args.out / "cells"
    space = load_space(preset.space)

    rows: list[dict[str, Any]] = []
    transfer: list[dict[str, Any]] = []
    with measured() as total:
        for task in tasks:
            task_rows, task_transfer = run_task(task, preset, space, work_dir, cells_dir)
            rows += task_rows
            transfer += task_transfer
    report = {
        "preset": preset.name,
        "settings": asdict(preset),
        "tasks": tasks,
        "skipped_tasks": skipped,
        "space": preset.space,
        "machine": machine(),
        "rows": rows,
        "transfer": transfer,
        "total_wall_s": total["wall_s"],
        "total_cpu_s": total["cpu_s"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"paper_tables_{preset.name}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"paper_tables_{preset.name}.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
