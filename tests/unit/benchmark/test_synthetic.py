"""Synthetic complete tables: every distinct cell, structured means, seeded and reproducible."""

from __future__ import annotations

import statistics

from attnas.benchmark import Benchmark
from attnas.benchmark.synthetic import synthetic_benchmark, synthetic_mean
from attnas.space import load_space

SPACE = load_space("attention_nas").with_overrides(
    num_ops=2,
    op_types={
        "map": {"dims": ["spatial", "temporal"], "activations": ["none", "relu"]},
        "dot": {"dims": ["spatial", "temporal"], "activations": ["none", "relu"]},
    },
    supergraph={"levels": 2, "nodes": "all"},
)


def test_a_complete_table_of_every_distinct_cell():
    bench = synthetic_benchmark(SPACE, seeds=(0, 1, 2))
    assert isinstance(bench, Benchmark) and bench.complete
    assert len(bench) == len({c.hash() for c in SPACE.enumerate()}) == 164
    for cell in SPACE.enumerate():  # every vector, isomorphic spellings included, has a row
        assert cell in bench and len(bench.values(cell)) == 3
    cell = bench.best()
    assert abs(bench.mean(cell) - synthetic_mean(cell)) < 0.02  # seed noise around the mean
    assert bench.std(cell) > 0
    assert bench.curves(cell)[0][-1] == bench.values(cell)[0]
    assert bench.top(0.01) and bench.optimum() == bench.mean(cell)


def test_seeded_landscapes():
    a, b = synthetic_benchmark(SPACE, seed=0), synthetic_benchmark(SPACE, seed=0)
    assert [a.mean(c) for c in a.cells()] == [b.mean(c) for c in a.cells()]
    other = synthetic_benchmark(SPACE, seed=1)
    assert a.best() != other.best() or a.optimum() != other.optimum()
    means = [a.mean(c) for c in a.cells()]
    assert statistics.pstdev(means) > 0.01  # structure to find, not a flat table
