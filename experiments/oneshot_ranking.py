"""One-shot ranking quality: do a trained supergraph's inherited weights rank cells like the table?

For each search seed, a supergraph is trained under the tabular benchmark's proxy protocol
exactly as ``make demo`` trains it (``run_proxy_search``: joint, position-agnostic, the demo's
searcher options, the protocol's budget and data). Then every cell the table holds is evaluated
by its inherited weights, without retraining (``attnas.supergraph.oneshot.evaluate_cells``), in
two BatchNorm modes:

- ``keep``: the running statistics as trained (the supergraph's output BatchNorm and the
  readout's, accumulated under the full mixture of nodes);
- ``recalibrate``: every trainable BatchNorm re-estimated on the same few training batches per
  cell (common one-shot practice).

Each cell's one-shot validation top-1 is compared with the table's standalone mean over seeds:
Kendall τ (tau-b) and Spearman ρ with 95 % bootstrap intervals over cells, the number of cells,
and the top-k overlap (how many of the one-shot top 10 % are in the table's top 10 %, against
the chance expectation). They are reported over all cells and over the cells the supergraph
expresses exactly (``expresses``: no op reading the cell input next to another op, no two ops
on one node), since an op reading ``{f0, op 1}`` has no supergraph counterpart for its f0 term
(see the oneshot module). The mean over the search seeds' one-shot scores is ranked too.

Writes ``experiments/results/oneshot_ranking.json`` and ``.md``; trained supergraphs are kept
in ``--work`` (default ``runs/oneshot_ranking``) so a rerun evaluates without training again.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python -m experiments.oneshot_ranking --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.data import DataLoader

from attnas.benchmark import Benchmark, FeatureCache, ProxyProtocol, build_proxy_model, load
from attnas.benchmark.search import protocol_weights, run_proxy_search, table_folder
from attnas.space import CellSpec, SearchSpace
from attnas.supergraph.oneshot import (
    BATCHNORM_MODES,
    OneShotScore,
    evaluate,
    evaluate_cells,
    recalibrate_batchnorm,
)
from experiments.tasks import RESULTS_DIR

TABLE = "distant_match_k2"
# The table build's own store of the frozen prefix's features: read here, never written.
TABLE_STORE = Path("runs/benchmarks/distant_match_k2/cache")
# The searcher options of `make demo` (conf/experiment/cpu_demo.yaml over
# conf/searcher/differentiable.yaml): nothing here is chosen for this study.
SEARCH_OPTIONS = {
    "mode": "joint",
    "position_specific": False,
    "arch_lr": 1e-2,
    "arch_betas": (0.5, 0.999),
    "arch_weight_decay": 1e-3,
    "warmup_epochs": 0,
    "temperature": 1.0,
    "dirichlet": True,  # the demo's Dirichlet mixing (cpu_demo.yaml, since the derived-cell study)
}


def options_tag(options: dict[str, Any]) -> str:
    """A short digest of the searcher options: a supergraph kept in the work folder is reused
    only by a run with the same options."""
    text = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def feature_cache(protocol: ProxyProtocol, weights: Path) -> FeatureCache:
    """The protocol's features, read from the table build's store when it holds them.

    The store is only passed when its file exists (so nothing is ever written there); the name
    is the one ``FeatureCache`` gives it (SHA-256 of the protocol and of the weights file).
    """
    key = hashlib.sha256(json.dumps(protocol.to_dict(), sort_keys=True).encode())
    key.update(weights.read_bytes())
    stored = TABLE_STORE / f"features_{key.hexdigest()[:16]}.pt"
    return FeatureCache(protocol, weights, store=TABLE_STORE if stored.is_file() else None)


def trained_supergraph(
    protocol: ProxyProtocol, cache: FeatureCache, space: SearchSpace, seed: int, work: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of a proxy search with ``seed``, trained once and kept in ``work``.

    Returns:
        The model (supergraphs inserted, connection weights attached) and what the search
        reported (final validation top-1 of the supergraph network, seconds, derived cell).
    """
    from attnas.supergraph.search import DifferentiableSearchConfig, SupergraphFactory

    config = DifferentiableSearchConfig(**SEARCH_OPTIONS)
    path = work / f"supergraph_{options_tag(SEARCH_OPTIONS)}_seed{seed}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        factory = SupergraphFactory(space, position_specific=False, temperature=config.temperature)
        model = build_proxy_model(protocol, cache, factory, seed)
        factory.attach(model)
        model.load_state_dict(saved["state_dict"])
        return model, json.loads(saved["info"])
    start = time.perf_counter()
    result = run_proxy_search(protocol, cache, space, config, seed)
    info = {
        "seed": seed,
        "search_seconds": round(time.perf_counter() - start, 1),
        "supergraph_val_top1": result.history[-1]["val_top1"],
        "derived_cell": result.cell.to_dict(),
        "arch_steps": result.arch_steps,
        "search_config": json.loads(json.dumps(dataclasses.asdict(config))),
    }
    work.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu() for k, v in result.model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "info": json.dumps(info)}, tmp)
    tmp.replace(path)
    return result.model, info


def setup(work: Path) -> tuple[Benchmark, ProxyProtocol, SearchSpace, FeatureCache]:
    """The table, its protocol and space, and the protocol's cached features."""
    bench = load(TABLE)
    protocol = ProxyProtocol.from_dict(bench.manifest["protocol"])
    space = SearchSpace.from_dict(bench.manifest["space"])
    weights = protocol_weights(protocol, table_folder(TABLE), work)
    return bench, protocol, space, feature_cache(protocol, weights)


# ---------------------------------------------------------------------------- statistics


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, 1-based (tied values share the mean of their positions)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ (Pearson correlation of average ranks)."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denom) if denom else math.nan


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b (ties in either variable handled as in tau-b)."""
    dx = np.sign(x[:, None] - x[None, :])  # (n, n)
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    sx, sy = dx[upper], dy[upper]
    denom = math.sqrt(float((sx != 0).sum()) * float((sy != 0).sum()))
    return float((sx * sy).sum() / denom) if denom else math.nan


def with_interval(
    fn: Any, x: np.ndarray, y: np.ndarray, resamples: int, rng: np.random.Generator
) -> dict[str, float]:
    """``fn(x, y)`` and its 95 % percentile-bootstrap interval over cells."""
    boots = []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        value = fn(x[idx], y[idx])
        if not math.isnan(value):
            boots.append(value)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return {"value": round(fn(x, y), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def top_overlap(score: np.ndarray, truth: np.ndarray, fraction: float) -> dict[str, Any]:
    """How many of the ``ceil(fraction * n)`` best cells by ``score`` are among the best by
    ``truth`` (ties at the cut broken by cell order, the same for both)."""
    n = len(score)
    k = max(1, math.ceil(fraction * n))
    by_score = set(np.argsort(-score, kind="mergesort")[:k].tolist())
    by_truth = set(np.argsort(-truth, kind="mergesort")[:k].tolist())
    return {
        "fraction": fraction,
        "k": k,
        "overlap": len(by_score & by_truth),
        "chance": round(k * k / n, 2),
    }


def agreement(
    score: np.ndarray, truth: np.ndarray, resamples: int, seed: int = 0
) -> dict[str, Any]:
    """Rank agreement of a one-shot score with the table's means over the same cells."""
    rng = np.random.default_rng(seed)
    best = int(np.argmax(score))
    return {
        "cells": len(score),
        "kendall_tau": with_interval(kendall, score, truth, resamples, rng),
        "spearman_rho": with_interval(spearman, score, truth, resamples, rng),
        "top": [top_overlap(score, truth, f) for f in (0.05, 0.1, 0.2)],
        # where the cell the one-shot score likes best sits among the table's cells
        "best_by_score_percentile": round(100 * float((truth <= truth[best]).mean()), 1),
    }


# ---------------------------------------------------------------------------- the study


def connectivity(cell: CellSpec) -> str:
    """``chain`` (op 2 reads op 1), ``parallel`` (both read f0) or ``f0+op1`` (op 2 reads both)."""
    inputs = cell.ops[-1].inputs
    return {(1,): "chain", (0,): "parallel", (0, 1): "f0+op1"}.get(inputs, str(inputs))


def score_cells(
    model: torch.nn.Module,
    cells: list[CellSpec],
    cache: FeatureCache,
    batchnorm: str,
    calibration_batches: int,
    batch_size: int,
    store: Path,
) -> tuple[list[OneShotScore], float, int]:
    """Every cell's one-shot score in one BatchNorm mode.

    Scores are kept in ``store`` (JSON, by cell hash): a score depends only on the trained
    supergraph, the data and the calibration, so a rerun on a grown table scores only the new
    cells (CPU evaluation is deterministic).

    Returns:
        The scores, the seconds spent scoring, and how many cells were scored (not read back).
    """
    kept = json.loads(store.read_text()) if store.is_file() else {}
    todo = [c for c in cells if c.hash() not in kept]
    val = DataLoader(cache.data["val"], batch_size=256, shuffle=False)
    # unshuffled: every cell is recalibrated on the same first batches of the training split
    train = DataLoader(cache.data["train"], batch_size=batch_size, shuffle=False)
    start = time.perf_counter()
    for score in evaluate_cells(
        model,
        todo,
        val,
        batchnorm=batchnorm,
        calibration=train,
        calibration_batches=calibration_batches,
    ):
        kept[score.cell.hash()] = {
            k: getattr(score, k) for k in ("top1", "loss", "clips", "nonfinite", "expressed")
        }
    seconds = time.perf_counter() - start
    store.write_text(json.dumps(kept))
    return [OneShotScore(c, **kept[c.hash()]) for c in cells], seconds, len(todo)


@contextmanager
def logits_restricted(weights: Any, keep: dict[str, torch.Tensor]) -> Iterator[None]:
    """Connection logits set to ``-inf`` where ``keep`` (a bool mask per logit tensor) is False,
    for the ``with`` block."""
    saved = {k: getattr(weights, k).detach().clone() for k in keep}
    try:
        with torch.no_grad():
            for name, mask in keep.items():
                getattr(weights, name).masked_fill_(~mask, float("-inf"))
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                getattr(weights, name).copy_(value)


def restriction_parts(
    model: torch.nn.Module, cache: FeatureCache, calibration_batches: int, batch_size: int
) -> dict[str, dict[str, float]]:
    """Why a cell's inherited weights score what they score: the trained supergraph with only
    one part of the connection weights restricted (every node to one activation; the sink to
    one level's nodes), in both BatchNorm modes, as validation top-1."""
    weights = next(iter(model.architecture.values()))
    levels, n, acts = weights.w_act.shape
    val = DataLoader(cache.data["val"], batch_size=256, shuffle=False)
    train = DataLoader(cache.data["train"], batch_size=batch_size, shuffle=False)
    parts: dict[str, dict[str, torch.Tensor]] = {"none (the supergraph as trained)": {}}
    for a, name in enumerate(weights.activations[0]):
        mask = torch.zeros(levels, n, acts, dtype=torch.bool)
        mask[:, :, a] = True
        parts[f"every node's activation -> {name}"] = {"w_act": mask}
    for lv in range(1, levels + 1):
        mask = torch.zeros(levels * n, dtype=torch.bool)
        mask[(lv - 1) * n : lv * n] = True
        parts[f"sink -> level {lv} nodes only"] = {"w_sink": mask}
    norms = {
        name: {k: v.clone() for k, v in m.state_dict().items()}
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))
    }
    out: dict[str, dict[str, float]] = {}
    for label, keep in parts.items():
        with logits_restricted(weights, keep):
            kept = evaluate(model, val).top1
            recalibrate_batchnorm(model, train, calibration_batches)
            recalibrated = evaluate(model, val).top1
        modules = dict(model.named_modules())
        for name, state in norms.items():
            modules[name].load_state_dict(state)
        out[label] = {"keep": kept, "recalibrate": recalibrated}
    return out


def subsets(cells: list[CellSpec], expressed: list[bool]) -> dict[str, list[int]]:
    """Indices of the cells of each group the agreement is broken down by."""
    groups = {
        "all": list(range(len(cells))),
        "expressed": [i for i, e in enumerate(expressed) if e],
    }
    for kind in ("chain", "parallel", "f0+op1"):
        groups[kind] = [i for i, c in enumerate(cells) if connectivity(c) == kind]
    return groups


def table_seed_agreement(bench: Benchmark, cells: list[CellSpec], resamples: int) -> dict[str, Any]:
    """The table's own seed 0 against seed 1 over the cells: what one training run's ranking
    agrees with another's (a reference for any proxy's τ and ρ)."""
    pairs = []
    for cell in cells:
        by_seed = dict(zip(bench.seeds(cell), bench.values(cell)))
        if 0 in by_seed and 1 in by_seed:
            pairs.append((by_seed[0], by_seed[1]))
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    rng = np.random.default_rng(0)
    return {
        "cells": len(pairs),
        "kendall_tau": with_interval(kendall, x, y, resamples, rng),
        "spearman_rho": with_interval(spearman, x, y, resamples, rng),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) each seed's supergraph, score every table cell, measure agreement."""
    bench, protocol, space, cache = setup(args.work)
    cells = bench.cells()[: args.limit]  # every cell unless --limit
    truth = np.array([bench.mean(c) for c in cells])
    expressed: list[bool] = []
    modes = list(args.modes)
    top1s: dict[str, list[np.ndarray]] = {mode: [] for mode in modes}
    losses: dict[str, list[np.ndarray]] = {mode: [] for mode in modes}
    seeds: list[dict[str, Any]] = []
    val = DataLoader(cache.data["val"], batch_size=256, shuffle=False)
    for seed in args.seeds:
        model, info = trained_supergraph(protocol, cache, space, seed, args.work)
        weights = next(iter(model.architecture.values()))
        entry: dict[str, Any] = {
            **info,
            # the trained network as it is (every node mixed), evaluated here
            "supergraph_val_top1_here": evaluate(model, val).top1,
            "entropies": {k: round(v, 4) for k, v in weights.entropies().items()},
            "modes": {},
        }
        entry["restricting_one_part"] = restriction_parts(
            model, cache, args.calibration_batches, protocol.train.batch_size
        )
        for mode in modes:
            tag = options_tag(SEARCH_OPTIONS)
            store = args.work / f"scores_{tag}_seed{seed}_{mode}_cb{args.calibration_batches}.json"
            result, seconds, scored = score_cells(
                model,
                cells,
                cache,
                mode,
                args.calibration_batches,
                protocol.train.batch_size,
                store,
            )
            expressed = [r.expressed for r in result]
            top1 = np.array([r.top1 for r in result])
            loss = np.array([r.loss for r in result])
            top1s[mode].append(top1)
            losses[mode].append(loss)
            entry["modes"][mode] = {
                "cells_scored_now": scored,
                "seconds": round(seconds, 1),
                "seconds_per_cell": round(seconds / scored, 3) if scored else None,
                "oneshot_top1_range": [float(top1.min()), float(top1.max())],
                "cells_with_nonfinite_logits": int(sum(r.nonfinite > 0 for r in result)),
                "by_top1": {
                    g: agreement(top1[idx], truth[idx], args.resamples)
                    for g, idx in subsets(cells, expressed).items()
                    if len(idx) >= 10
                },
                "by_loss": agreement(-loss, truth, args.resamples),
            }
            tau = entry["modes"][mode]["by_top1"].get("all", {}).get("kendall_tau")
            print(f"seed {seed} {mode}: {seconds:.0f} s, Kendall tau {tau}", flush=True)
        seeds.append(entry)
    groups = subsets(cells, expressed)
    mean_over_seeds = {
        mode: {
            g: agreement(np.mean(top1s[mode], axis=0)[idx], truth[idx], args.resamples)
            for g, idx in groups.items()
            if len(idx) >= 10
        }
        for mode in modes
    }
    per_cell = []
    for i, cell in enumerate(cells):
        row: dict[str, Any] = {
            "cell_hash": cell.hash(),
            "vector": space.encode(cell) if space.contains(cell) else None,
            "connectivity": connectivity(cell),
            "expressed": expressed[i],
            "table_mean": round(float(truth[i]), 5),
            "table_seeds": len(bench.values(cell)),
        }
        for mode in modes:
            row[f"oneshot_top1_{mode}"] = [round(float(s[i]), 5) for s in top1s[mode]]
            row[f"oneshot_loss_{mode}"] = [round(float(s[i]), 5) for s in losses[mode]]
        per_cell.append(row)
    return {
        "table": {
            "name": bench.name,
            "cells": len(bench),
            "cells_evaluated": len(cells),
            "cells_total": bench.manifest.get("cells_total"),
            "complete": bench.complete,
            "rows": bench.manifest.get("rows"),
            "exported_at": bench.manifest.get("exported_at"),
            "groups": {g: len(idx) for g, idx in groups.items()},
            "seed0_vs_seed1": table_seed_agreement(bench, cells, args.resamples),
        },
        "search_options": {
            k: list(v) if isinstance(v, tuple) else v for k, v in SEARCH_OPTIONS.items()
        },
        "calibration": {
            "batches": args.calibration_batches,
            "batch_size": protocol.train.batch_size,
            "clips": args.calibration_batches * protocol.train.batch_size,
        },
        "resamples": args.resamples,
        "modes": modes,
        "seeds": seeds,
        "mean_over_seeds": mean_over_seeds,
        "cells": per_cell,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _ci(stat: dict[str, Any]) -> str:
    lo, hi = stat["ci95"]
    return f"{stat['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def _agreement_rows(label: str, groups: dict[str, Any]) -> list[str]:
    rows = []
    for g, a in groups.items():
        top10 = next(t for t in a["top"] if t["fraction"] == 0.1)
        rows.append(
            f"| {label} | {g} | {a['cells']} | {_ci(a['kendall_tau'])} | {_ci(a['spearman_rho'])} "
            f"| {top10['overlap']} of {top10['k']} (chance {top10['chance']:.1f}) "
            f"| {a['best_by_score_percentile']:.1f} |"
        )
    return rows


def _modes(result: dict[str, Any]) -> list[str]:
    """The BatchNorm modes the cells were scored in (both, in a result from before ``--modes``)."""
    return list(result.get("modes", BATCHNORM_MODES))


def _summary(result: dict[str, Any]) -> list[str]:
    """One line per BatchNorm mode: τ over all cells per seed, and how many intervals hold 0."""
    lines = []
    for mode in _modes(result):
        taus = [s["modes"][mode]["by_top1"]["all"]["kendall_tau"] for s in result["seeds"]]
        with_zero = sum(1 for t in taus if not t["ci95"][0] > 0)
        spread = [s["modes"][mode]["oneshot_top1_range"] for s in result["seeds"]]
        lines.append(
            f"- `{mode}`: Kendall τ over all cells "
            + ", ".join(f"{t['value']:.3f}" for t in taus)
            + f" (seeds {[s['seed'] for s in result['seeds']]}); {with_zero} of {len(taus)} "
            "95 % intervals reach 0 or below; one-shot top-1 spans "
            + ", ".join(f"{100 * lo:.1f}-{100 * hi:.1f} %" for lo, hi in spread)
            + "."
        )
    return lines


def report(result: dict[str, Any]) -> str:
    """The Markdown summary of ``result``."""
    t = result["table"]
    ref = t["seed0_vs_seed1"]
    lines = [
        "# One-shot ranking quality on the tabular benchmark",
        "",
        "Written by `python -m experiments.oneshot_ranking` "
        f"(seeds {[s['seed'] for s in result['seeds']]}; {result['wall_seconds']:.0f} s in all, "
        f"torch {result['torch']}, {result['threads']} thread).",
        "",
        f"Table `{t['name']}`: **{t['cells']} of {t['cells_total']} cells**, "
        f"{t['cells_evaluated']} of them scored ({t['rows']} rows, "
        f"exported {t['exported_at']}; complete: {t['complete']}). Groups: "
        + ", ".join(f"{g} {n}" for g, n in t["groups"].items())
        + ".",
        "",
        "A supergraph is trained per seed under the table's proxy protocol (`run_proxy_search`, "
        "the `make demo` searcher options), then each table cell is scored by the weights it "
        "inherits, without training (`attnas.supergraph.oneshot`), with the BatchNorm running "
        "statistics as trained (`keep`) or re-estimated per cell on the same "
        f"{result['calibration']['clips']} training clips (`recalibrate`). The score is the "
        "one-shot validation top-1 (512 clips); the truth is the table's mean over its seeds. "
        "Intervals: 95 % bootstrap over cells "
        f"({result['resamples']} resamples). `expressed`: cells the supergraph computes exactly "
        "when restricted to them; `f0+op1` cells (op 2 reads f0 and op 1) have no supergraph "
        "edge for f0 and are scored like their chain (see the oneshot module).",
        "",
        "Searcher options: "
        + ", ".join(f"`{k}` {v}" for k, v in result["search_options"].items())
        + ".",
        "",
        f"Reference: the table's own seed 0 against seed 1 over {ref['cells']} cells: Kendall τ "
        f"{_ci(ref['kendall_tau'])}, Spearman ρ {_ci(ref['spearman_rho'])}.",
        "",
        "## Summary",
        "",
        *_summary(result),
        "",
        "## Searches",
        "",
        "| seed | search s | supergraph val top-1 | sink entropy (ln 12 = 2.485) | keep s/cell "
        "| recalibrate s/cell |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def per_cell(mode: dict[str, Any] | None) -> str:
        if mode is None:
            return "not run"
        return "-" if mode["seconds_per_cell"] is None else f"{mode['seconds_per_cell']:.2f}"

    for s in result["seeds"]:
        lines.append(
            f"| {s['seed']} | {s['search_seconds']:.0f} | {100 * s['supergraph_val_top1']:.1f} % "
            f"| {s['entropies'].get('entropy/sink', float('nan')):.4f} "
            f"| {per_cell(s['modes'].get('keep'))} | {per_cell(s['modes'].get('recalibrate'))} |"
        )
    lines += [
        "",
        "(s/cell: seconds per cell scored in this invocation; cells scored by an earlier one "
        "are read back from the work folder.)",
        "",
        "## Restricting one part of the connection weights",
        "",
        "Validation top-1 of each trained supergraph with only one part restricted "
        "(`keep` / `recalibrate`):",
        "",
        "| restriction | " + " | ".join(f"seed {s['seed']}" for s in result["seeds"]) + " |",
        "| --- |" + " --- |" * len(result["seeds"]),
    ]
    for label in result["seeds"][0]["restricting_one_part"]:
        cells = [s["restricting_one_part"][label] for s in result["seeds"]]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{100 * c['keep']:.1f} / {100 * c['recalibrate']:.1f}" for c in cells)
            + " |"
        )
    header = [
        "",
        "| BatchNorm | cells | n | Kendall τ [95 % CI] | Spearman ρ [95 % CI] "
        "| one-shot top 10 % in table's top 10 % | table percentile of one-shot best |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in result["seeds"]:
        lines += ["", f"## Seed {s['seed']}", *header]
        for mode in _modes(result):
            lines += _agreement_rows(mode, s["modes"][mode]["by_top1"])
        for mode in _modes(result):
            lines += _agreement_rows(f"{mode}, by loss", {"all": s["modes"][mode]["by_loss"]})
    if len(result["seeds"]) > 1:
        lines += ["", "## Mean one-shot top-1 over the seeds", *header]
        for mode in _modes(result):
            lines += _agreement_rows(mode, result["mean_over_seeds"][mode])
    lines += [
        "",
        "`nan`: the score is the same for every cell (no ranking). Rows `by loss` rank by "
        "the one-shot validation loss (lower is better) instead of top-1. Top-k overlap at "
        "5 %, 10 % and 20 % and every cell's one-shot scores (per seed and mode, with its "
        "table mean) are in the JSON file.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("runs/oneshot_ranking"))
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N cells")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "oneshot_ranking.json")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=BATCHNORM_MODES,
        default=list(BATCHNORM_MODES),
        help="BatchNorm modes to score the cells in (default: both)",
    )
    parser.add_argument("--train-only", action="store_true", help="train the supergraphs, stop")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the .md from the JSON in --out"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        args.out.with_suffix(".md").write_text(report(json.loads(args.out.read_text())))
        return 0
    if args.train_only:
        _, protocol, space, cache = setup(args.work)
        for seed in args.seeds:
            _, info = trained_supergraph(protocol, cache, space, seed, args.work)
            print(json.dumps(info), flush=True)
        return 0
    start = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
