"""Position-specific against position-agnostic search at two positions (issue 14).

``python -m experiments.position_study [--modes agnostic,specific] [--seeds 0,1,2,3,4]``

The table's proxy protocol (``distant_match_k2``: the same task, pre-trained backbone, frozen
prefix, local readout and training budget) with a second insertion point: cells at
``Conv3d_2c_3x3`` (24 × 4 × 8 × 8, the table's position) and at ``Mixed_3b`` (32 × 4 × 4 × 4,
after the next pooling; the readout moves after it, so ``Mixed_3b`` trains too). For each mode
and search seed, ``make demo``'s search (``dirichlet``: joint, Dirichlet mixing, the
``attention_nas`` space) runs under that protocol (``run_proxy_search``):

- ``agnostic``: one set of connection weights shared by both supergraphs, one derived cell
  used at both positions;
- ``specific``: one set per position, one derived cell each.

The cells are derived with the space's rule (α = 3, β = 1, as ``make demo`` derives) and
trained together (a ``CellSet``: each cell at its position) under the two-position protocol
with the table's baseline seeds, as are the two baselines (no cell; a non-local block at both
positions). The table cannot place these cells (its cells sit at one position), so they are
judged against the baselines trained under the same protocol, and the two modes against each
other over the same search seeds (paired). Per run it also records the connection weights,
the sink entropy ÷ uniform and top sink share of each set of weights at the end, and how many
of the last epochs derived the final cell (the hook's α = 1, β = 1 derivation).

Each finished run and baseline is kept under ``--work`` (refilled from the committed results
JSON in a fresh checkout) so an interrupted study resumes; results go to
``experiments/results/position_study.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.derived_cell_study import (
    DEMO,
    STABLE_FRACTION,
    VARIANTS,
    bootstrap,
    ci_text,
    restore_runs,
    run_path,
    stable_epochs,
)

POSITIONS = ("Conv3d_2c_3x3", "Mixed_3b")
MODES = {"agnostic": False, "specific": True}
VARIANT = "dirichlet"  # make demo's search
BASELINES = ("none", "nonlocal")


@functools.lru_cache(maxsize=1)
def setting(work: Path) -> tuple[Any, Any, Any, list[int]]:
    """(table, two-position protocol, its feature cache, retraining seeds)."""
    from attnas.benchmark import FeatureCache, ProxyProtocol, load
    from attnas.benchmark.search import protocol_weights, table_folder

    folder = table_folder("distant_match_k2")
    bench = load(str(folder))
    protocol = ProxyProtocol.from_dict(bench.manifest["protocol"]).replace(positions=POSITIONS)
    cache = FeatureCache(protocol, protocol_weights(protocol, folder, work / "proxy"))
    return bench, protocol, cache, [int(s) for s in bench.manifest["baseline_seeds"]]


def cells_key(cells: dict[str, Any]) -> str:
    """A folder name for a set of cells (their hashes by position)."""
    return "_".join(cells[p].hash()[:12] for p in POSITIONS)


def run_one(mode: str, seed: int, work: Path) -> dict[str, Any]:
    """One search of ``mode`` with ``seed``; its derived cells retrained together."""
    from attnas.benchmark.search import (
        derive_by_position,
        retrain_under_protocol,
        run_proxy_search,
    )
    from attnas.space import load_space
    from attnas.supergraph.search import DifferentiableSearchConfig, derived_cell_factory

    _, protocol, cache, seeds = setting(work)
    space = load_space("attention_nas")
    config = DifferentiableSearchConfig(
        **{**DEMO, **VARIANTS[VARIANT], "alpha": 1, "beta": 1, "position_specific": MODES[mode]}
    )
    start = time.perf_counter()
    result = run_proxy_search(protocol, cache, space, config, seed)
    search_s = time.perf_counter() - start
    cells = derive_by_position(result.weights, POSITIONS, space.alpha, space.beta)
    cell_set = derived_cell_factory(cells, protocol.op_channel_ratio)
    trials = retrain_under_protocol(
        protocol, cache, cell_set, seeds, store=work / "retrain" / cells_key(cells)
    )
    last = result.telemetry[-1]["positions"]
    weights_stats = {
        key: {
            "sink_entropy_ratio": last[key]["entropy/sink"] / last[key]["entropy_max/sink"],
            "top_sink_share": last[key]["top_sink_share"],
            "stable_epochs": stable_epochs(result.telemetry, key),
        }
        for key in result.weights
    }
    return {
        "mode": mode,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "search_s": round(search_s, 1),
        "supergraph_val_top1": result.history[-1]["val_top1"],
        "epochs": len(result.telemetry),
        "weights_stats": weights_stats,
        "weights": {k: w.to_dict() for k, w in result.weights.items()},
        "cells": {p: c.to_dict() for p, c in cells.items()},
        "hashes": {p: c.hash() for p, c in cells.items()},
        "num_ops": {p: len(c.ops) for p, c in cells.items()},
        "retrained": [float(t.top1) if t.ok else None for t in trials],
        "failed": [t.error for t in trials if not t.ok],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def run_baselines(work: Path, kept: dict[str, list[float]]) -> dict[str, list[float]]:
    """Top-1 of each baseline per retraining seed (``kept``: from the committed results)."""
    from attnas.benchmark.search import retrain_under_protocol

    out: dict[str, list[float]] = {}
    _, protocol, cache, seeds = setting(work)
    for name in BASELINES:
        if len(kept.get(name, [])) == len(seeds):
            out[name] = kept[name]
            continue
        trials = retrain_under_protocol(protocol, cache, name, seeds, work / "retrain" / name)
        out[name] = [float(t.top1) for t in trials]
        print(f"baseline {name}: {np.mean(out[name]):.4f}", flush=True)
    return out


def summarise(runs: list[dict[str, Any]], baselines: dict[str, list[float]]) -> dict[str, Any]:
    """Per mode: the derived cells' mean against the baselines, stability, entropy; and the
    paired specific − agnostic difference over the search seeds both modes ran."""
    nl = statistics.fmean(baselines["nonlocal"])
    modes: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode and not r["failed"]]
        means = [statistics.fmean(r["retrained"]) for r in mine]
        need = max(2, math.ceil(STABLE_FRACTION * mine[0]["epochs"]))
        stats = [s for r in mine for s in r["weights_stats"].values()]
        modes[mode] = {
            "seeds": [r["seed"] for r in mine],
            "mean": bootstrap(means, np.mean),
            "minus_nonlocal": bootstrap([m - nl for m in means], np.mean),
            "minus_none": bootstrap(
                [m - statistics.fmean(baselines["none"]) for m in means], np.mean
            ),
            "stable_seeds": sum(
                all(s["stable_epochs"] >= need for s in r["weights_stats"].values()) for r in mine
            ),
            "stable_need_epochs": need,
            "sink_entropy_ratio": bootstrap([s["sink_entropy_ratio"] for s in stats]),
            "top_sink_share": bootstrap([s["top_sink_share"] for s in stats]),
            "distinct_cells_across_positions": sum(
                len(set(r["hashes"].values())) > 1 for r in mine
            ),
            "search_s": statistics.median(r["search_s"] for r in mine),
            "supergraph_val_top1": bootstrap([r["supergraph_val_top1"] for r in mine], np.mean),
            "failed": sum(bool(r["failed"]) for r in runs if r["mode"] == mode),
        }
    by = {(r["mode"], r["seed"]): statistics.fmean(r["retrained"]) for r in runs if not r["failed"]}
    paired = sorted(s for m, s in by if m == "specific" and ("agnostic", s) in by)
    diffs = [by[("specific", s)] - by[("agnostic", s)] for s in paired]
    return {
        "positions": list(POSITIONS),
        "baselines": {k: {"values": v, "mean": statistics.fmean(v)} for k, v in baselines.items()},
        "modes": modes,
        "specific_minus_agnostic": {"seeds": paired, "diff": bootstrap(diffs, np.mean)}
        if diffs
        else None,
    }


def markdown(summary: dict[str, Any]) -> str:
    b = summary["baselines"]
    lines = [
        "# Position-specific against position-agnostic search, two positions (issue 14)",
        "",
        "`python -m experiments.position_study` — `make demo`'s search (`dirichlet`) under "
        "the `distant_match_k2` protocol with cells at "
        + " and ".join(f"`{p}`" for p in summary["positions"])
        + "; each seed's cells derived with α = 3, β = 1 and trained together with the "
        f"table's {len(b['none']['values'])} baseline seeds under the same protocol. "
        f"Baselines under this protocol: no cell {100 * b['none']['mean']:.2f} %, non-local at "
        f"both positions {100 * b['nonlocal']['mean']:.2f} %. Intervals: percentile bootstrap "
        "95 % over search seeds (entropy and top share: over every set of weights).",
        "",
        "| mode | seeds | derived top-1 (%) | − non-local (pp) | − no cell (pp) | "
        "stable last 20 % | sink H ÷ uniform | top sink share | different cell per "
        "position | search s (median) |",
        "| --- | ---: | --- | --- | --- | ---: | --- | --- | ---: | ---: |",
    ]
    for mode, e in summary["modes"].items():
        n = len(e["seeds"])
        lines.append(
            f"| {mode} | {n} | {ci_text(e['mean'], 100, 2)} | "
            f"{ci_text(e['minus_nonlocal'], 100, 2)} | "
            f"{ci_text(e['minus_none'], 100, 2)} | {e['stable_seeds']} of {n} | "
            f"{ci_text(e['sink_entropy_ratio'], 1, 3)} | {ci_text(e['top_sink_share'], 1, 3)} | "
            f"{e['distinct_cells_across_positions']} of {n} | {e['search_s']:.0f} |"
        )
    d = summary["specific_minus_agnostic"]
    if d:
        lines += [
            "",
            f"Specific − agnostic, paired over search seeds {d['seeds']}: "
            f"{ci_text(d['diff'], 100, 2)} pp.",
        ]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="agnostic,specific")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--work", default="runs/position_study")
    parser.add_argument("--out", default="experiments/results/position_study")
    parser.add_argument("--skip-baselines", action="store_true", help="another worker runs them")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    results = out.with_suffix(".json")
    restore_runs(results, work, key="mode")  # a fresh checkout resumes from the committed file
    previous = json.loads(results.read_text()) if results.is_file() else {}
    kept = {k: v["values"] for k, v in previous.get("summary", {}).get("baselines", {}).items()}
    baselines_file = work / "baselines.json"
    if baselines_file.is_file():
        kept = {**kept, **json.loads(baselines_file.read_text())}
    if not args.summary_only:
        if not args.skip_baselines:
            kept = run_baselines(work, kept)
            baselines_file.write_text(json.dumps(kept))
        for seed in (int(s) for s in args.seeds.split(",")):
            for mode in args.modes.split(","):
                path = run_path(work, mode, seed)
                if path.is_file():
                    continue
                run = run_one(mode, seed, work)
                path.write_text(json.dumps(run, indent=1))
                top1 = statistics.fmean(x or 0.0 for x in run["retrained"])
                print(
                    f"{mode} seed {seed}: {100 * top1:.2f} % "
                    f"cells {sorted(set(run['hashes'].values()))} ({run['wall_s']:.0f} s)",
                    flush=True,
                )
    runs = [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*.json"))]
    runs.sort(key=lambda r: (list(MODES).index(r["mode"]), r["seed"]))
    if set(BASELINES) - set(kept):
        print("baselines not run yet: no summary")
        return
    summary = summarise(runs, kept)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
