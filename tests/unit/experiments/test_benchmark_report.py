"""The benchmark report (``experiments/benchmark_report.py``) on tables whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attnas.benchmark import Benchmark, BenchmarkRow
from attnas.benchmark.build import distinct_cells
from attnas.space import load_space

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `experiments` is a folder of scripts, not an installed package

from experiments import benchmark_report as br  # noqa: E402

SPACE = load_space("attention_nas").with_overrides(num_ops=1)


def table(curve) -> Benchmark:
    """Cell i's final value rises with i (seed 1 a little above seed 0); ``curve(i, n, final)``
    gives its 3-epoch curve, which ends at the final value."""
    cells = distinct_cells(SPACE)
    rows = []
    for i, cell in enumerate(cells):
        for seed in (0, 1):
            final = 0.5 + 0.4 * i / len(cells) + 0.001 * seed
            rows.append(
                BenchmarkRow("cell", cell.hash(), tuple(SPACE.encode(cell)), cell.to_dict(),
                             seed, final, curve(i, len(cells), final), 0.6, 0.7, 2.0, 100, 10)
            )  # fmt: skip
    space = {"name": "t", "space": SPACE.to_dict(), "complete": True}
    return Benchmark(rows, space, name="t")


def test_early_epochs_tell_a_late_ranking_from_an_early_one():
    # epoch 1 ranks the cells backwards, epoch 2 says nothing (all equal), epoch 3 is final
    bench = table(lambda i, n, final: (0.9 - 0.4 * i / n, 0.5, final))
    early = br.early_epochs(bench)
    n = len(bench)
    assert n >= 20 and [e["epoch"] for e in early] == [1, 2, 3]
    assert all(e["cells"] == n for e in early)
    assert early[0]["spearman_vs_other_seed_final"] == pytest.approx(-1.0)
    assert early[2]["spearman_vs_other_seed_final"] == pytest.approx(1.0)
    top = early[0]["top1pct_cells"]
    assert top == sum(bench.mean(c) >= br._pct([bench.mean(d) for d in bench.cells()], 99)
                      for c in bench.cells())  # fmt: skip
    # a median rule after epoch 1 stops every top cell; after epoch 2 (ties) none is above the
    # median either; after the last epoch every one survives
    assert [e["top1pct_above_median"] for e in early] == [0, 0, top]
    # so it never reaches a top cell early; stopping at the last epoch changes nothing
    assert [e["random_cpu_ratio"] for e in early] == [None, None, pytest.approx(1.0)]
    assert "after epoch 1: Spearman" in br.markdown(br.report(bench))


def test_early_epochs_need_two_seeds_for_the_correlation():
    bench = table(lambda i, n, final: (0.5, final, final))
    one_seed = Benchmark([r for c in bench.cells() for r in bench.rows(c)[:1]], bench.manifest)
    early = br.early_epochs(one_seed)
    assert all(e["cells"] == 0 and e["spearman_vs_other_seed_final"] is None for e in early)
    assert early[1]["top1pct_above_median"] == early[1]["top1pct_cells"] > 0
    # epoch 2 already ranks as the end: stopping the lower half after 2 of 3 epochs keeps every
    # top cell and saves a third of their time
    assert early[1]["random_cpu_ratio"] == pytest.approx((0.5 * 1 + 0.5 * 2 / 3) / 1)
