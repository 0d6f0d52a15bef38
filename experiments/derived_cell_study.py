"""Where the differentiable search's derived cell falls on the table, over seeds (issue 14).

``python -m experiments.derived_cell_study [--variants demo,lr0.1_wd0,...] [--seeds 0,1,2,3,4]``

For each variant of the search config (``VARIANTS``: ``make demo``'s former search, ``demo``,
with one remedy changed; ``make demo`` now runs ``dirichlet``, which this study chose) and
each search seed, the supergraph is trained under the table's proxy protocol exactly as
``make demo`` trains it (``run_proxy_search``: joint, position-agnostic, the ``attention_nas``
space, the protocol's 8 epochs; the ``bilevel`` variant splits the training
clips in halves, the network trained on one, the connection weights stepped on the other).
Three cells are derived from its final connection weights:

- ``a1b1``: α = 1, β = 1 at 2 levels: the sink's top node and, when that node is on level 2,
  its top input, with the top node as the cell's only output. The table's space outputs every
  op of a cell (``attention_nas``: "cells output every op"), so this cell is never one of the
  table's cells, whether it has 1 op or 2: it is trained under the protocol with the table's
  seeds and its mean placed among the cell means (``place_on_table``).
- ``a2b1``: α = 2, β = 1: the sink's top two nodes and the top input of each on level 2.
  When that gives 2 ops that are both outputs (two level-1 nodes, or a level-2 node and the
  level-1 node it reads), the cell is a cell of the table's space and is placed by its row once
  the growing table has it; otherwise (3 ops) it is trained with the table's seeds.
- ``space``: the space's own rule (α = 3, β = 1): up to 5 ops, outside the table's space, so
  always trained under the protocol with the table's seeds and placed by its mean.

Per run it records the final connection weights (so any other derivation can be recomputed),
the derived cells, their placements, the sink entropy ÷ uniform at the end,
the top sink share, how many of the last epochs derived the final cell (from the hook's
per-epoch telemetry, which derives with α = 1, β = 1) and the supergraph network's own val
top-1. The summary gives, per variant: the median percentile with a bootstrap 95 % interval,
the derived cell's mean against the non-local baseline's (difference, bootstrap interval over
search seeds), how many seeds were stable over the last 20 % of epochs, and the entropy ratio.
Each finished run is kept under ``--work`` (refilled from the results JSON in a fresh checkout:
``restore_runs``) so an interrupted study resumes; results go to
``experiments/results/derived_cell_study.{json,md}``.

The table may be partial (its manifest says so): then a percentile is the rank among a uniform
random sample of the space's cells (the build's order is a seeded shuffle), not among all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

SEARCH_EPOCHS = "search_epochs"  # a variant's key for the search's epochs (not a config field)
ONLY_RULES = "rules"  # a variant's key for the rules it derives and places (default: RULES)
VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {},  # make demo's search until the study made dirichlet its default
    "wd0": {"arch_weight_decay": 0.0},
    "lr0.1_wd0": {"arch_lr": 0.1, "arch_weight_decay": 0.0},
    "anneal": {"temperature_final": 0.1, "arch_weight_decay": 0.0},
    "dirichlet": {"dirichlet": True},
    # SNAS/GDAS annealing on the demo's search: the mixing temperature from 1 to 0.1
    # geometrically over the epochs, so the mixture sharpens while the network trains (the
    # entropies are those of the tempered softmax; derivation reads the logits)
    "dirichlet_anneal": {"dirichlet": True, "temperature_final": 0.1},
    # the entropy goal: Adam at lr 0.01 moves a logit at most ~0.01 a step (1.3 over the search)
    "dirichlet_lr0.1": {"dirichlet": True, "arch_lr": 0.1, "arch_weight_decay": 0.0},
    # the existing warm-up: 2 of the 8 epochs train the network with the weights frozen, so the
    # connection weights first step on trained ops (96 steps instead of 128)
    "dirichlet_warmup2": {"dirichlet": True, "warmup_epochs": 2},
    # the Adam bound: at lr 0.01 a logit moves at most 1.28 in 128 steps; 3 x the protocol's
    # epochs for the search only (384 steps; the derived cell is retrained with the protocol's 8)
    "dirichlet_epochs24": {"dirichlet": True, SEARCH_EPOCHS: 24},
    # SDARTS-RS: the softmax search with uniform noise of ±0.03 on every mixing weight in
    # training forwards (the ε SDARTS implementations default to)
    "perturb0.03": {"perturbation": 0.03},
    # the objective, not the optimiser: the mean entropy of the mixing weights added to their
    # loss with weight 1 (both in nats), pushing every row towards one choice
    "dirichlet_entropy1": {"dirichlet": True, "entropy_penalty": 1.0},
    # β-DARTS's regulariser on the demo's former (softmax) search: λ · mean log-sum-exp of every
    # row's logits added to their loss, λ = 1 like the entropy penalty's (not tuned)
    "beta_decay1": {"beta_decay": 1.0},
    # the choice, not the weights: DARTS-PT's perturbation-based selection on the demo's
    # trained Dirichlet supergraph (each rule's choices ranked by the validation loss's rise
    # without them, progressively fixed)
    "dirichlet_pt": {"dirichlet": True, "selection": "perturbation"},
    # DARTS-PT with its re-adaptation: dirichlet's trained supergraph, the space rule's sink
    # pruned one node at a time, the network trained an epoch of the protocol after each
    # structural decision (about 80 evaluations and 10 epochs: the space rule only)
    "dirichlet_prune": {"dirichlet": True, "selection": "pruning", ONLY_RULES: ("space",)},
    # one-shot NAS: dirichlet's trained supergraph as an evaluator of whole cells, the best of
    # the table space's 1,452 cells (2 ops) by inherited weights derived (no α / β rule: its
    # cell fills the space rule's place, the cell the search would export)
    "dirichlet_oneshot": {"dirichlet": True, "selection": "oneshot", ONLY_RULES: ("space",)},
    # the supernet as a filter: dirichlet_oneshot's 10 best candidates trained from scratch under
    # the protocol with 2 fresh seeds each (not the table's), the best of them derived
    "dirichlet_oneshot_top10": {
        "dirichlet": True,
        "selection": "oneshot",
        "oneshot_retrain": 10,
        ONLY_RULES: ("space",),
    },
    # the one-shot filter of make demo on beta_decay1's softmax supergraph, whose network keeps
    # its own top-1 (75 % against dirichlet's 53 % before re-estimating the BatchNorms)
    "beta_decay1_oneshot_top10": {
        "beta_decay": 1.0,
        "selection": "oneshot",
        "oneshot_retrain": 10,
        ONLY_RULES: ("space",),
    },
    # dirichlet again, the space rule only: CPU training is not bit-reproducible across machines
    # (dirichlet_oneshot's searches, on another machine than dirichlet's, trained other
    # supergraphs), so a selection run there is paired with this rerun on the same machine
    "dirichlet_again": {"dirichlet": True, ONLY_RULES: ("space",)},
    # GDAS's sampling on the demo's former (softmax) search: each training forward mixes with a
    # one-hot sample of every row, straight through its Gumbel-softmax relaxation, so an
    # unsampled node's logit gets the gradient of swapping it in, which the network's settling
    # does not cancel (the softmax sink's gradient is its convolution's scale gradient)
    "gumbel": {"gumbel": True},
    # the same at the learning rate the entropy goal needs (Adam at lr 0.01 cannot reach it in
    # 128 steps), against lr0.1_wd0, the softmax search it changes
    "gumbel_lr0.1": {"gumbel": True, "arch_lr": 0.1, "arch_weight_decay": 0.0},
    # make demo's filter on gumbel's supergraph: sampled near-uniformly one path at a time (its
    # sink stays at 0.999 of uniform), it is trained the way single-path one-shot supernets are,
    # each cell's ops to work on their own, which is what the one-shot scores assume
    "gumbel_oneshot_top10": {
        "gumbel": True,
        "selection": "oneshot",
        "oneshot_retrain": 10,
        ONLY_RULES: ("space",),
    },
    "bn0.1": {"sink_bn_init": 0.1},
    "bilevel": {"mode": "bilevel"},  # DARTS first order: network on one half, weights on the other
}
DEMO = {"mode": "joint", "position_specific": False, "arch_lr": 1e-2}
RULES = ("a1b1", "a2b1", "space")
REFERENCE = "dirichlet"  # make demo's search: what a variant must beat to be kept
# a variant paired with a rerun of the reference on its own machine (dirichlet_again's comment)
RERUN_OF_REFERENCE = {
    "dirichlet_oneshot": "dirichlet_again",
    "dirichlet_oneshot_top10": "dirichlet_again",
}
# a variant also paired with the variant it changes, where that is not the reference
ALSO_AGAINST = {
    "beta_decay1": "demo",  # β-decay on demo's softmax search
    "beta_decay1_oneshot_top10": "dirichlet_oneshot_top10",  # the same filter, another search
    "gumbel": "demo",  # GDAS sampling on demo's softmax search
    "gumbel_lr0.1": "lr0.1_wd0",  # the same at lr 0.1 without weight decay
    "gumbel_oneshot_top10": "dirichlet_oneshot_top10",  # the same filter, another search
}
STABLE_FRACTION = 0.2
BOOTSTRAP = 10_000


def bootstrap(values: list[float], stat: Any = np.median, seed: int = 0) -> tuple[float, ...]:
    """(statistic, low, high): the statistic and its percentile-bootstrap 95 % interval."""
    x = np.asarray(values, dtype=np.float64)
    point = float(stat(x))
    if len(x) < 2:
        return point, point, point
    rng = np.random.default_rng(seed)
    draws = stat(x[rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))], axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)


def _placement(bench: Any, protocol: Any, cache: Any, cell: Any, seeds: list[int], store: Path):
    from attnas.benchmark.search import place_on_table, retrain_under_protocol

    retrained: list[float] = []
    if cell not in bench:
        results = retrain_under_protocol(protocol, cache, cell, seeds, store=store)
        bad = [r.error for r in results if not r.ok]
        if bad:
            return {"cell": cell.to_dict(), "failed": bad}
        retrained = [float(r.top1) for r in results]
    mean = statistics.fmean(retrained) if retrained else math.nan
    placed = place_on_table(bench, cell, mean)
    values = list(bench.values(cell)) if placed.in_table else retrained
    return {
        "cell": cell.to_dict(),
        "hash": cell.hash(),
        "num_ops": len(cell.ops),
        "in_table": placed.in_table,
        "percentile": placed.percentile,
        "mean": placed.value,
        "values": values,
    }


def stable_epochs(telemetry: list[dict[str, Any]], key: str = "all") -> int:
    """How many of the last epochs derived the final cell (the hook's per-epoch derivation) of
    weights ``key`` (``"all"``: a position-agnostic search; a position: a position-specific)."""
    cells = [t["positions"][key]["cell"] for t in telemetry]
    n = 1
    while n < len(cells) and cells[-n - 1] == cells[-1]:
        n += 1
    return n


def _table(work: Path) -> tuple[Any, Any, Any]:
    """The judging table, its protocol and the protocol's feature cache (under ``work``)."""
    from attnas.benchmark import FeatureCache, ProxyProtocol, load
    from attnas.benchmark.search import protocol_weights, table_folder

    folder = table_folder("distant_match_k2")
    bench = load(str(folder))
    protocol = ProxyProtocol.from_dict(bench.manifest["protocol"])
    return (
        bench,
        protocol,
        FeatureCache(protocol, protocol_weights(protocol, folder, work / "proxy")),
    )


def run_one(name: str, seed: int, work: Path) -> dict[str, Any]:
    """One search of variant ``name`` with ``seed``; both derived cells placed on the table."""
    from attnas.benchmark.search import (
        derive_by_position,
        proxy_oneshot,
        proxy_selection,
        run_proxy_search,
    )
    from attnas.space import load_space
    from attnas.supergraph.search import DifferentiableSearchConfig

    bench, protocol, cache = _table(work)
    space = load_space("attention_nas")
    variant = dict(VARIANTS[name])
    epochs = variant.pop(SEARCH_EPOCHS, protocol.train.epochs)
    rules = tuple(variant.pop(ONLY_RULES, RULES))
    config = DifferentiableSearchConfig(**{**DEMO, **variant, "alpha": 1, "beta": 1})
    searched = protocol.replace(train=protocol.train.replace(epochs=epochs))
    start = time.perf_counter()
    # the a1b1 cell is the search's own derivation: without that rule, no selection there
    search_config = config if "a1b1" in rules else dataclasses.replace(config, selection="weights")
    result = run_proxy_search(searched, cache, space, search_config, seed)
    search_s = time.perf_counter() - start
    weights = next(iter(result.weights.values()))
    seeds = [int(s) for s in bench.manifest["seeds"]]
    # joint mode: the network trained on every cached training clip
    score, tune = proxy_selection(result.model, protocol, cache, config.selection, seed)

    def derived(alpha: int, beta: int) -> Any:
        return derive_by_position(result.weights, ["all"], alpha, beta, score, tune)["all"]

    def exported() -> Any:  # the cell the search exports: its rule's, or the one-shot choice
        if config.selection == "oneshot":
            store = work / "oneshot_retrain"
            return proxy_oneshot(result.model, protocol, cache, space, config, seed, store)
        return derived(space.alpha, space.beta)

    derive = {"a1b1": lambda: result.cell, "a2b1": lambda: derived(2, 1), "space": exported}
    cells = {rule: derive[rule]() for rule in rules}
    select_s = time.perf_counter() - start - search_s
    last = result.telemetry[-1]["positions"]["all"]
    run = {
        "variant": name,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "search_epochs": epochs,
        "search_s": round(search_s, 1),
        "select_s": round(select_s, 1),
        "supergraph_val_top1": result.history[-1]["val_top1"],
        "sink_entropy_ratio": last["entropy/sink"] / last["entropy_max/sink"],
        "top_sink_share": last["top_sink_share"],
        "stable_epochs": stable_epochs(result.telemetry),
        "epochs": len(result.telemetry),
        "cells_per_epoch": [t["positions"]["all"]["cell"] for t in result.telemetry],
        "weights": weights.to_dict(),
        "placements": {
            rule: _placement(bench, protocol, cache, cell, seeds, work / "retrain" / cell.hash())
            for rule, cell in cells.items()
        },
        "table": {"cells": len(bench), "complete": bench.complete},
    }
    run["wall_s"] = round(time.perf_counter() - start, 1)
    return run


def replace_on(bench: Any, placed: dict[str, Any]) -> dict[str, Any]:
    """``placed`` again on ``bench`` (the table may have grown since the run): its row when the
    table now has it, otherwise its retrained mean among the table's cell means."""
    if placed["hash"] in bench:
        h = placed["hash"]
        return {
            **placed,
            "in_table": True,
            "mean": bench.mean(h),
            "percentile": bench.percentile(h),
        }
    return {**placed, "in_table": False, "percentile": bench.percentile_of(placed["mean"])}


def summarise(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Per variant and derivation rule: percentile, against non-local, stability, entropy."""
    nonlocal_values = [float(v) for v in bench.baseline("nonlocal")]
    nl_mean = statistics.fmean(nonlocal_values)
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        need = max(2, math.ceil(STABLE_FRACTION * mine[0]["epochs"]))
        entry: dict[str, Any] = {
            "seeds": [r["seed"] for r in mine],
            "stable_seeds": sum(r["stable_epochs"] >= need for r in mine),
            "stable_need_epochs": need,
            "sink_entropy_ratio": bootstrap([r["sink_entropy_ratio"] for r in mine]),
            "top_sink_share": bootstrap([r["top_sink_share"] for r in mine]),
            "supergraph_val_top1": bootstrap([r["supergraph_val_top1"] for r in mine], np.mean),
            "search_s": statistics.median(r["search_s"] for r in mine),
        }
        if all("select_s" in r for r in mine):  # runs before the selection step lack it
            entry["select_s"] = statistics.median(r["select_s"] for r in mine)
        for rule in RULES:
            placed = [
                replace_on(bench, r["placements"][rule])
                for r in mine
                if "percentile" in r["placements"].get(rule, {})  # runs before a2b1 lack it
            ]
            if not placed:
                continue
            means = [p["mean"] for p in placed]
            entry[rule] = {
                "percentile_median": bootstrap([p["percentile"] for p in placed]),
                "percentiles": [round(p["percentile"], 1) for p in placed],
                "mean": bootstrap(means, np.mean),
                "minus_nonlocal": bootstrap([m - nl_mean for m in means], np.mean),
                "distinct_cells": len({p["hash"] for p in placed}),
                "two_op_cells": sum(p["num_ops"] == 2 for p in placed),
                "in_table": sum(p["in_table"] for p in placed),
                "failed": len(mine) - len(placed),
            }
        out[name] = entry
    return {
        "nonlocal_mean": nl_mean,
        "nonlocal_values": nonlocal_values,
        "variants": out,
        "against_reference": paired_against(runs, bench, REFERENCE),
        "against_rerun": _paired_with(runs, bench, RERUN_OF_REFERENCE),
        "against_other": _paired_with(runs, bench, ALSO_AGAINST),
        "selection_signal": selection_signal(runs, bench),
        "oneshot_signal": oneshot_signal(runs, bench),
        "random_control": random_control(bench),
    }


def _paired_with(
    runs: list[dict[str, Any]], bench: Any, partners: dict[str, str]
) -> dict[str, Any]:
    """``paired_against`` for each variant of ``partners`` with its own partner variant."""
    return {
        name: paired[name]
        for name, other in partners.items()
        if name in (paired := paired_against(_of(runs, name, other), bench, other))
    }


def _of(runs: list[dict[str, Any]], *variants: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["variant"] in variants]


def _sink_rises(run: dict[str, Any]) -> tuple[str, dict[str, float]] | None:
    """``(method, scores)`` behind a run's space-rule cell: when perturbation selected it, the
    sink stage's loss rise per node; when pruning did, each node's survival (0 for the first
    pruned, 1 for the next, ...; the kept nodes above every pruned one, in the order of their
    last rises); None when the weights did."""
    cell = run["placements"].get("space", {}).get("cell", {})
    derivation = cell.get("meta", {}).get("derivation", {})
    method = derivation.get("method")
    if method == "perturbation":
        return method, derivation["sink_scores"]
    if method != "pruning":
        return None
    order = [p["node"] for p in derivation["selection"]["pruned"]]
    scores = derivation["sink_scores"]
    kept = sorted((n for n in scores if n not in order), key=lambda n: scores[n])
    return method, {n: float(i) for i, n in enumerate(order + kept)}


def selection_signal(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Per variant whose space-rule cells were selected by perturbation: does the sink stage's
    loss rise of a node follow what the table says its (type, dim) is worth? (Selected by
    pruning: does the order in which its nodes survive?)

    A node's worth is the mean of the table's cell means over the cells with an op of its
    (type, dim). Per run, Kendall τ between the 12 nodes' rises and their worth (a level-1 and
    a level-2 node of one (type, dim) share a worth); its median over runs with a bootstrap
    interval; the τ of the rises averaged over runs; the node with the largest mean rise; and
    the median ratio of each run's second-largest rise to its largest (how far the selection
    still sees a difference after its first pick)."""
    from experiments.oneshot_ranking import kendall

    worth: dict[str, list[float]] = {}
    for cell in bench.cells():
        for kind in {f"{o.op.type}/{o.op.dim}" for o in cell.ops}:
            worth.setdefault(kind, []).append(bench.mean(cell))
    value = {k: statistics.fmean(v) for k, v in worth.items()}
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        found = [got for r in runs if r["variant"] == name and (got := _sink_rises(r))]
        if not found:
            continue
        method, rises = found[0][0], [scores for _, scores in found]
        nodes = list(rises[0])
        truth = np.array([value[n.split(".", 1)[1]] for n in nodes])
        taus = [kendall(np.array([r[n] for n in nodes]), truth) for r in rises]
        mean_rise = np.array([statistics.fmean(r[n] for r in rises) for n in nodes])
        tops = [] if method == "pruning" else [sorted(r.values())[-2:] for r in rises]
        second = [b / a for b, a in tops if a > 0]  # a run none of whose rises is positive: none
        out[name] = {
            "method": method,
            "runs": len(rises),
            "tau_per_run": bootstrap(taus),
            "tau_of_mean_rise": kendall(mean_rise, truth),
            "top_node": nodes[int(mean_rise.argmax())],
            "best_worth": max(value, key=value.get),
            "second_over_first": bootstrap(second) if second else None,
            "mean_rise": {n: float(v) for n, v in zip(nodes, mean_rise)},
        }
    return out


def oneshot_signal(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Per variant whose space-rule cells were chosen by one-shot selection: where the table
    puts each run's 10 best one-shot candidates (recorded in the derived cell's ``meta``). Per
    run, the table percentile of each; over runs, the median (bootstrap interval) of the
    candidates' mean percentile, of how many of the 10 are in the table's top 10 % (chance: 1),
    and of the best table percentile among them (what retraining the 10 best would find)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        ranked = []
        for r in runs:
            cell = r["placements"].get("space", {}).get("cell", {})
            derivation = cell.get("meta", {}).get("derivation", {})
            if r["variant"] == name and derivation.get("method") == "oneshot":
                ranked.append([bench.percentile(c["hash"]) for c in derivation["ranked"]])
        if not ranked:
            continue
        out[name] = {
            "runs": len(ranked),
            "candidates": len(ranked[0]),
            "percentiles": [[round(p, 1) for p in r] for r in ranked],
            "mean_percentile": bootstrap([statistics.fmean(r) for r in ranked]),
            "in_top10": bootstrap([float(sum(p >= 90 for p in r)) for r in ranked]),
            "best_percentile": bootstrap([max(r) for r in ranked]),
        }
    return out


RANDOM_CONTROL = (10, 20)  # cells a random search trains once each (the top-10 variant: 20 runs)
RANDOM_DRAWS = 20_000


def random_control(bench: Any, ks: tuple[int, ...] = RANDOM_CONTROL, seed: int = 0) -> dict:
    """A random search on the table itself, the control for a selection that trains candidates:
    ``k`` distinct cells drawn uniformly, the best by the table's first seed picked, judged by
    its percentile among the second seed's values (an independent training of every cell), and
    the same with the two seeds' roles swapped. Per ``k``: the median and mean percentile over
    ``RANDOM_DRAWS`` draws per direction, and the share at or above 90. A single seed judges it
    (the table has two for every cell), so it is noisier than a mean-of-two percentile."""
    cells = bench.cells()
    first, second = sorted(int(s) for s in bench.manifest["seeds"])[:2]
    by_seed = np.array(
        [[next(r.val_top1 for r in bench.rows(c) if r.seed == s) for s in (first, second)]
         for c in cells]
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"seeds": [first, second]}
    for k in ks:
        pct = []
        for pick_by, judge_by in ((0, 1), (1, 0)):
            judged = np.sort(by_seed[:, judge_by])
            for _ in range(RANDOM_DRAWS):
                drawn = rng.choice(len(cells), size=min(k, len(cells)), replace=False)
                best = drawn[int(np.argmax(by_seed[drawn, pick_by]))]
                value = by_seed[best, judge_by]
                pct.append(100.0 * np.searchsorted(judged, value, side="right") / len(cells))
        x = np.array(pct)
        out[str(k)] = {
            "median": float(np.median(x)),
            "mean": float(x.mean()),
            "at_least_90": float((x >= 90).mean()),
        }
    return out


def same_search(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs trained the same supergraph: the same derived cell after every epoch,
    the same final sink entropy and the same val top-1 (a variant that only changes the
    selection after the search, e.g. ``dirichlet_pt`` against ``dirichlet``)."""
    keys = ("cells_per_epoch", "sink_entropy_ratio", "supergraph_val_top1")
    return all(a[k] == b[k] for k in keys)


def paired_against(runs: list[dict[str, Any]], bench: Any, reference: str) -> dict[str, Any]:
    """Per variant: its space-rule cell's mean minus the ``reference`` variant's, paired over
    the search seeds both ran (``diff``: mean and bootstrap interval), those seeds, in how many
    of them the two trained the same supergraph (``same_search``), and the same difference for
    every rule (``rules``: rule -> ``{"seeds", "diff"}``, over the seeds both placed)."""
    by_key = {(r["variant"], r["seed"]): r for r in runs}

    def means(rule: str) -> dict[tuple[str, int], float]:
        return {
            key: replace_on(bench, r["placements"][rule])["mean"]
            for key, r in by_key.items()
            if "mean" in r["placements"].get(rule, {})
        }

    by_rule = {rule: means(rule) for rule in RULES}
    out: dict[str, Any] = {}
    for name in dict.fromkeys(v for v, _ in by_rule["space"]):
        if name == reference:
            continue
        rules = {}
        for rule, m in by_rule.items():
            seeds = sorted(s for v, s in m if v == name and (reference, s) in m)
            if seeds:
                diffs = [m[(name, s)] - m[(reference, s)] for s in seeds]
                rules[rule] = {"seeds": seeds, "diff": bootstrap(diffs, np.mean)}
        if "space" not in rules:
            continue
        seeds = rules["space"]["seeds"]
        same = sum(same_search(by_key[(name, s)], by_key[(reference, s)]) for s in seeds)
        out[name] = {**rules["space"], "same_search": same, "rules": rules}
    return out


def ci_text(t: tuple[float, ...], scale: float = 1.0, digits: int = 1) -> str:
    p, lo, hi = (v * scale for v in t)
    return f"{p:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(summary: dict[str, Any], bench: Any) -> str:
    nl = summary["nonlocal_mean"]
    nl_pct = bench.percentile_of(nl)
    lines = [
        "# Derived cells on the table, over search seeds (issue 14)",
        "",
        "`python -m experiments.derived_cell_study` — `make demo`'s search (joint, "
        "position-agnostic, `attention_nas` space, the table's proxy protocol, 8 epochs × 16 "
        "steps; `dirichlet_warmup2`: the first 2 with the connection weights frozen; "
        "`dirichlet_epochs24`: 24 epochs, the derived cells retrained with the protocol's 8) "
        "with one remedy changed per variant (`dirichlet_pt`: `dirichlet`'s search, each "
        "rule's choices ranked by perturbation, `attnas.supergraph.select`; its stability "
        "column is that of the weights' own per-epoch derivation; `dirichlet_prune`: the same "
        "search, the space rule's sink pruned one node at a time with an epoch of the "
        "protocol's training after each structural decision, the space rule only; "
        "`dirichlet_oneshot`: the same search, its space-rule place taken by the one-shot "
        "selection's cell: the best of the table space's 1,452 cells by the weights they "
        "inherit, so a cell of the table placed by its row; `dirichlet_oneshot_top10`: the "
        "same, the 10 best of them trained from scratch under the protocol with 2 fresh seeds "
        "each and the best mean derived; `dirichlet_again`: `dirichlet` rerun on the machine "
        "the one-shot variants ran on, the space rule only; `anneal`, `dirichlet_anneal`: the "
        "mixing temperature annealed geometrically from 1 to 0.1 over the epochs, its sink "
        "entropy that of the tempered softmax; `beta_decay1`: `demo`'s softmax search with "
        "β-decay, λ = 1; `gumbel`: `demo`'s search with GDAS-style one-hot sampled mixing, "
        "straight through its Gumbel-softmax relaxation; `gumbel_lr0.1`: the same at "
        "`lr0.1_wd0`'s learning rate 0.1 without weight decay; `gumbel_oneshot_top10`: "
        "`dirichlet_oneshot_top10`'s filter on `gumbel`'s supergraph); each seed's derived cell is "
        "placed on "
        f"`distant_match_k2` ({len(bench)} of {bench.manifest.get('cells_total', len(bench))} cells"
        + ("" if bench.complete else ", partial: percentiles rank among a uniform random sample")
        + "). `a1b1`: α = 1, β = 1 (1 or 2 ops with the top node the only output: never a cell "
        "of the table's space, whose cells output every op, so trained with the table's seeds); "
        "`a2b1`: α = 2, β = 1 (a cell of the table's space when it has 2 ops, both outputs: "
        "its row once the table has it; otherwise trained; runs older than this rule lack it); "
        "`space`: the space's α = 3, β = 1 "
        "(outside the K = 2 table, always trained with the table's seeds). Intervals: "
        "percentile bootstrap 95 % over search seeds. Non-local baseline: "
        f"{100 * nl:.1f} % (percentile {nl_pct:.0f}).",
        "",
        "| variant | seeds | a1b1 median pct | a1b1 − non-local (pp) | a2b1 seeds / in table | "
        "a2b1 median pct | a2b1 − non-local (pp) | space median pct | "
        "space − non-local (pp) | stable last 20 % | sink H ÷ uniform | top sink share | "
        "supergraph val top-1 |",
        "| --- | ---: | --- | --- | ---: | --- | --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for name, e in summary["variants"].items():
        cols = []
        for rule in RULES:
            r = e.get(rule)
            cols += (
                [ci_text(r["percentile_median"]), ci_text(r["minus_nonlocal"], 100)]
                if r
                else ["—", "—"]
            )
        a = e.get("a2b1")
        placed = f"{len(a['percentiles'])} / {a['in_table']}" if a else "—"
        lines.append(
            f"| {name} | {len(e['seeds'])} | {cols[0]} | {cols[1]} | {placed} | "
            f"{cols[2]} | {cols[3]} | {cols[4]} | {cols[5]} | "
            f"{e['stable_seeds']} of {len(e['seeds'])} | {ci_text(e['sink_entropy_ratio'], 1, 3)} "
            f"| {ci_text(e['top_sink_share'], 1, 3)} | {ci_text(e['supergraph_val_top1'], 100)} |"
        )
    paired = summary.get("against_reference", {})
    if paired:
        lines += [
            "",
            f"Space-rule cell's mean − `{REFERENCE}`'s, paired over search seeds (in brackets "
            "after it: the other rules' paired differences, over the seeds both placed):",
            "",
        ]
        for name, d in paired.items():
            same = d.get("same_search")
            others = "; ".join(
                f"{rule} {ci_text(r['diff'], 100, 2)} pp, {len(r['seeds'])} seeds"
                for rule, r in d.get("rules", {}).items()
                if rule != "space"
            )
            lines.append(
                f"- {name}: {ci_text(d['diff'], 100, 2)} pp ({len(d['seeds'])} seeds"
                + (f"; the same trained supergraph in {same} of them" if same else "")
                + ")"
                + (f" ({others})" if others else "")
            )
    for name, d in summary.get("against_rerun", {}).items():
        lines += [
            "",
            f"`{name}` against `{RERUN_OF_REFERENCE[name]}` (`{REFERENCE}` rerun on the machine "
            f"`{name}` ran on), paired: {ci_text(d['diff'], 100, 2)} pp ({len(d['seeds'])} seeds; "
            f"the same trained supergraph in {d['same_search']} of them).",
        ]
    for name, d in summary.get("against_other", {}).items():
        lines += [
            "",
            f"`{name}` against `{ALSO_AGAINST[name]}`, paired: {ci_text(d['diff'], 100, 2)} pp "
            f"({len(d['seeds'])} seeds).",
        ]
    for name, e in summary.get("selection_signal", {}).items():
        what, mean = (
            ("the order in which the sink's nodes survive the pruning", "survival rank")
            if e.get("method") == "pruning"
            else ("the sink stage's loss rises", "rise")
        )
        lines += [
            "",
            f"`{name}`: {what} against what the table says each node's "
            "(type, dim) is worth (the mean over the cells with such an op), "
            f"{e['runs']} runs: Kendall τ per run {ci_text(e['tau_per_run'], 1, 2)} (median), "
            f"τ of the {mean}s averaged over runs {e['tau_of_mean_rise']:.2f}; largest mean "
            f"{mean} "
            f"`{e['top_node']}` (the table's most valuable kind: `{e['best_worth']}`)"
            + (
                "; the second-largest rise of a run is "
                f"{ci_text(e['second_over_first'], 1, 2)} × its largest (median)."
                if e["second_over_first"]
                else "."
            ),
        ]
    for name, e in summary.get("oneshot_signal", {}).items():
        lines += [
            "",
            f"`{name}`: the table percentiles of each run's {e['candidates']} best cells by "
            f"one-shot top-1, {e['runs']} runs (medians over runs): their mean percentile "
            f"{ci_text(e['mean_percentile'])}; of the {e['candidates']} in the table's top 10 % "
            f"{ci_text(e['in_top10'])} (chance: {e['candidates'] / 10:.0f}); the best table "
            f"percentile among them {ci_text(e['best_percentile'])} (what retraining the "
            f"{e['candidates']} would find).",
        ]
    control = summary.get("random_control")
    if control:
        a, b = control["seeds"]
        lines += [
            "",
            "Control, a random search on the table itself: k cells drawn at random, the best by "
            f"the table's seed {a} picked and judged by its percentile among seed {b}'s values "
            "(and the other way round; one seed judges, so noisier than a mean of two): "
            + "; ".join(
                f"k = {k}: median percentile {c['median']:.1f}, mean {c['mean']:.1f}, ≥ 90 in "
                f"{100 * c['at_least_90']:.0f} %"
                for k in RANDOM_CONTROL
                if (c := control.get(str(k)))
            )
            + ".",
        ]
    timed = {n: e for n, e in summary["variants"].items() if "select_s" in e}
    if timed:
        lines += [
            "",
            "Median seconds per search seed: the search with the `a1b1` selection (when the "
            "variant places that rule), then the other rules' selections:",
            "",
        ]
        lines += [
            f"- {name}: search {e['search_s']:.0f} s, selection {e['select_s']:.0f} s"
            for name, e in timed.items()
        ]
    lines += [
        "",
        "Goals (issue 14): median percentile ≥ 90; better than non-local in mean; stable over "
        "the last 20 % of epochs in ≥ 4 of 5 seeds; sink entropy ≤ 0.7 × uniform.",
        "",
    ]
    return "\n".join(lines)


def run_path(work: Path, variant: str, seed: int) -> Path:
    """Where one finished run of the study is kept under ``work``."""
    return work / "runs" / f"{variant}_seed{seed}.json"


def restore_runs(results: Path, work: Path, key: str = "variant") -> int:
    """Put the runs recorded in ``results`` (a previous summary's JSON, which is committed) back
    under ``work`` where they are missing, so that a fresh checkout resumes the study and
    re-summarises it without rerunning them; ``key`` names what a run varies (``variant``;
    the position study's ``mode``). Returns how many were restored."""
    if not results.is_file():
        return 0
    restored = 0
    for run in json.loads(results.read_text()).get("runs", []):
        path = run_path(work, run[key], run["seed"])
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(run, indent=1))
            restored += 1
    return restored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="demo,lr0.1_wd0,anneal,dirichlet")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--work", default="runs/derived_cell_study")
    parser.add_argument("--out", default="experiments/results/derived_cell_study")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    from attnas.benchmark import load
    from attnas.benchmark.search import table_folder

    work = Path(args.work)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    restore_runs(out.with_suffix(".json"), work)
    if not args.summary_only:
        for name in args.variants.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                path = run_path(work, name, seed)
                if path.is_file():
                    continue
                run = run_one(name, seed, work)
                path.write_text(json.dumps(run, indent=1))
                a, s = run["placements"].get("a1b1", {}), run["placements"]["space"]
                print(
                    f"{name} seed {seed}: a1b1 pct {a.get('percentile', float('nan')):.1f} "
                    f"space pct {s.get('percentile', float('nan')):.1f} "
                    f"H {run['sink_entropy_ratio']:.3f} stable {run['stable_epochs']} "
                    f"({run['wall_s']:.0f} s)",
                    flush=True,
                )
    wanted = set(args.variants.split(","))
    runs = [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*.json"))]
    runs = [r for r in runs if r["variant"] in wanted]
    order = {n: i for i, n in enumerate(args.variants.split(","))}
    runs.sort(key=lambda r: (order[r["variant"]], r["seed"]))
    bench = load(str(table_folder("distant_match_k2")))
    summary = summarise(runs, bench)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    out.with_suffix(".md").write_text(markdown(summary, bench))
    print(markdown(summary, bench))


if __name__ == "__main__":
    main()
