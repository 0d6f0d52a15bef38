"""The quality of a tabular benchmark: seed-to-seed rank agreement, spread, cost, histogram.

Reads a table (``attnas.benchmark.load``; partial tables work) and writes
``experiments/results/benchmark_<name>.json``, ``.md`` and ``_hist.png``:

- the Spearman rank correlation of the cells' values under one seed against another, for every
  pair of table seeds, over the cells that have both (the issue's aim: at least 0.7), with a
  95 % bootstrap interval over cells;
- the distribution of cell means (histogram, percentiles), with the bare backbone and
  + non-local marked;
- where the non-local-like cells fall (cells whose ops are all dot, spatiotemporal, softmax);
- how early a run tells its final rank (the case for or against early stopping of poor trials
  with the table's per-epoch curves): for each epoch, the Spearman correlation of one seed's
  validation top-1 after that epoch with *another* seed's final value (so the two share no
  noise; at the last epoch it is the seed-to-seed agreement above), and how many of the top 1 %
  cells (by mean) are in the top half of the cells after that epoch, i.e. would survive a
  median stopping rule there, and what that rule would do to random search's expected
  CPU-seconds to its first top 1 % cell (``random_cpu_ratio``: the mean cost of a trial, a
  stopped one paying e of E epochs, divided by the share of top cells kept; below 1 the rule
  saves time; None when it keeps no top cell). The median is the table's own, which a rule
  acting during a search only estimates, so the ratio is an optimistic bound;
- the cost: trial-seconds spent, per row and in all, and how complete the table is.

Usage::

    .venv/bin/python -m experiments.benchmark_report            # the default table
    .venv/bin/python -m experiments.benchmark_report --name tiny
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnas.benchmark import Benchmark, load
from experiments.tasks import RESULTS_DIR


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho with average ranks for ties."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    vy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (vx * vy) if vx and vy else float("nan")


def seed_pairs(bench: Benchmark, resamples: int = 1000) -> list[dict[str, Any]]:
    """Spearman between every pair of table seeds, with a bootstrap 95 % interval over cells."""
    seeds = sorted({s for c in bench.cells() for s in bench.seeds(c)})
    out = []
    rng = random.Random(0)
    for i, a in enumerate(seeds):
        for b in seeds[i + 1 :]:
            pairs = []
            for c in bench.cells():
                by_seed = dict(zip(bench.seeds(c), bench.values(c)))
                if a in by_seed and b in by_seed:
                    pairs.append((by_seed[a], by_seed[b]))
            if len(pairs) < 10:
                continue
            rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
            boots = []
            for _ in range(resamples):
                sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
                boots.append(spearman([p[0] for p in sample], [p[1] for p in sample]))
            boots = sorted(v for v in boots if not math.isnan(v))
            lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
            out.append({"seeds": [a, b], "cells": len(pairs), "spearman": rho, "ci95": [lo, hi]})
    return out


def early_epochs(bench: Benchmark) -> list[dict[str, Any]]:
    """Per epoch: how well one run's value after it predicts another run's final value, and how
    many top 1 % cells a median stopping rule at that epoch would keep (module docstring)."""
    pairs = []  # (first seed's curve, second seed's final value) of cells with two seeds
    curves, means = [], []  # first seed's curve and the mean, of every cell
    for c in bench.cells():
        rows = sorted(bench.rows(c), key=lambda r: r.seed)
        curves.append(rows[0].val_top1_epochs)
        means.append(bench.mean(c))
        if len(rows) > 1:
            pairs.append((rows[0].val_top1_epochs, rows[1].val_top1))
    epochs = min((len(c) for c in curves), default=0)
    cut = _pct(means, 99) if means else math.inf
    top = [i for i, m in enumerate(means) if m >= cut]
    out = []
    for e in range(epochs):
        at_e = [c[e] for c in curves]
        median = _pct(at_e, 50)
        kept = sum(at_e[i] > median for i in top)
        cost = sum(1.0 if v > median else (e + 1) / epochs for v in at_e) / len(at_e)
        out.append({
            "epoch": e + 1,
            "cells": len(pairs),
            "spearman_vs_other_seed_final": (
                spearman([p[0][e] for p in pairs], [p[1] for p in pairs])
                if len(pairs) >= 10 else None
            ),
            "top1pct_cells": len(top),
            "top1pct_above_median": kept,
            "random_cpu_ratio": cost * len(top) / kept if kept else None,  # None: never
        })  # fmt: skip
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def report(bench: Benchmark) -> dict[str, Any]:
    """Every figure of the report as plain data."""
    means = [bench.mean(c) for c in bench.cells()]
    stds = [bench.std(c) for c in bench.cells()]
    nl_like = [
        c for c in bench.cells()
        if all((o.op.type, o.op.dim, o.op.activation) == ("dot", "spatiotemporal", "softmax")
               for o in c.ops)
    ]  # fmt: skip
    rows = sum(len(bench.values(c)) for c in bench.cells())
    seconds = sum(r.wall_s for c in bench.cells() for r in bench.rows(c))
    return {
        "name": bench.name,
        "complete": bench.complete,
        "cells_done": len(bench),
        "cells_total": bench.manifest.get("cells_total"),
        "rows": rows,
        "seed_spearman": seed_pairs(bench),
        "early_epochs": early_epochs(bench),
        "mean_of_cell_std": sum(stds) / len(stds),
        "cell_means": {q: _pct(means, q) for q in (0, 10, 25, 50, 75, 90, 100)},
        "spread_p90_p10_pp": 100 * (_pct(means, 90) - _pct(means, 10)),
        "backbone": bench.baseline("backbone"),
        "nonlocal": bench.baseline("nonlocal"),
        "nonlocal_like_cells": [
            {"cell": c.describe(), "mean": bench.mean(c), "percentile": bench.percentile(c)}
            for c in nl_like
        ],
        "trial_seconds": seconds,
        "seconds_per_row": seconds / rows if rows else None,
        "seconds_spent_manifest": bench.manifest.get("seconds_spent"),
    }


def histogram(bench: Benchmark, path: Path) -> None:
    """Histogram of the cell means with the baselines marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = [100 * bench.mean(c) for c in bench.cells()]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.hist(means, bins=40, color="#4c72b0", alpha=0.85)
    for name, colour in (("backbone", "#c44e52"), ("nonlocal", "#55a868")):
        vals = bench.baseline(name)
        if vals:
            ax.axvline(100 * sum(vals) / len(vals), color=colour, lw=2,
                       label=f"{name} (mean of {len(vals)} seeds)")  # fmt: skip
    ax.set_xlabel("cell mean val top-1 (%)")
    ax.set_ylabel("cells")
    ax.set_title(f"{bench.name}: {len(bench)} cells" + ("" if bench.complete else " (partial)"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(data: dict[str, Any]) -> str:
    """The report as a short Markdown page."""

    def pct(v: float) -> str:
        return f"{100 * v:.1f}"

    m = data["cell_means"]
    lines = [
        f"# Benchmark `{data['name']}`",
        "",
        f"{data['cells_done']} of {data['cells_total']} cells, {data['rows']} rows"
        + ("" if data["complete"] else " (the build is still growing)"),
        "",
        "| quality figure | value |",
        "| --- | --- |",
    ]
    for p in data["seed_spearman"]:
        lines.append(
            f"| Spearman seed {p['seeds'][0]} vs {p['seeds'][1]} ({p['cells']} cells) | "
            f"{p['spearman']:.3f} (95 % CI {p['ci95'][0]:.3f}-{p['ci95'][1]:.3f}; aim 0.7) |"
        )
    bb, nl = data["backbone"], data["nonlocal"]
    lines += [
        f"| cell means p0 / p10 / p50 / p90 / p100 | {pct(m[0])} / {pct(m[10])} / {pct(m[50])} "
        f"/ {pct(m[90])} / {pct(m[100])} % |",
        f"| p90 - p10 of cell means | {data['spread_p90_p10_pp']:.1f} pp |",
        f"| mean seed std of a cell | {100 * data['mean_of_cell_std']:.1f} pp |",
        f"| bare backbone ({len(bb)} seeds) | {', '.join(pct(v) for v in bb)} % |",
        f"| + non-local ({len(nl)} seeds) | {', '.join(pct(v) for v in nl)} % |",
        f"| trial-seconds spent | {data['trial_seconds']:.0f} s "
        f"({data['seconds_per_row'] or 0:.1f} s a row) |",
    ]
    for e in data.get("early_epochs", []):
        rho = e["spearman_vs_other_seed_final"]
        lines.append(
            f"| after epoch {e['epoch']}: Spearman vs the other seed's final "
            f"({e['cells']} cells); top 1 % cells above the median; random search's "
            f"CPU to a top 1 % cell under a median rule there | "
            f"{'n/a' if rho is None else f'{rho:.3f}'}; "
            f"{e['top1pct_above_median']} of {e['top1pct_cells']}; "
            + ("never" if e["random_cpu_ratio"] is None else f"{e['random_cpu_ratio']:.2f}x")
            + " |"
        )
    for c in data["nonlocal_like_cells"]:
        lines.append(
            f"| non-local-like cell: {c['cell'].replace(chr(10), '; ')} | {pct(c['mean'])} % "
            f"(percentile {c['percentile']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=None, help="table name or folder (default table)")
    args = parser.parse_args(argv)
    bench = load(args.name)
    data = report(bench)
    base = RESULTS_DIR / f"benchmark_{bench.name}"
    base.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown(data))
    histogram(bench, base.parent / f"{base.name}_hist.png")
    print(markdown(data))


if __name__ == "__main__":
    main()
