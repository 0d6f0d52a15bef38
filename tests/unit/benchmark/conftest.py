"""A synthetic table over a small space (no training): the fixture of the benchmark tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from attnas.benchmark import Benchmark, BenchmarkRow, write_table
from attnas.benchmark.build import distinct_cells
from attnas.space import load_space

SPACE_K1 = load_space("attention_nas").with_overrides(num_ops=1)


def synthetic_rows(space=SPACE_K1, seeds=(0, 1), wall_s=2.0) -> list[BenchmarkRow]:
    """Rows whose cell means increase with the cell's index, plus seed noise."""
    rng = random.Random(0)
    rows = []
    for i, cell in enumerate(distinct_cells(space)):
        for seed in seeds:
            top1 = 0.5 + 0.01 * i + rng.uniform(-0.002, 0.002)
            rows.append(
                BenchmarkRow(
                    kind="cell",
                    cell_hash=cell.hash(),
                    vector=tuple(space.encode(cell)),
                    cell=cell.to_dict(),
                    seed=seed,
                    val_top1=top1,
                    val_top1_epochs=(0.5, (0.5 + top1) / 2, top1),
                    train_loss=0.6,
                    val_loss=0.7,
                    wall_s=wall_s * (1 + i % 3),
                    params=1000 + i,
                    flops=10**6,
                )
            )
    for kind, value in (("backbone", 0.52), ("nonlocal", 0.7)):
        for seed in seeds:
            rows.append(
                BenchmarkRow(
                    kind,
                    kind,
                    None,
                    None,
                    seed,
                    value + 0.01 * seed,
                    (0.5, value),
                    0.6,
                    0.7,
                    1.0,
                    900,
                    10**6,
                )
            )
    return rows


def manifest(space=SPACE_K1) -> dict:
    return {"name": "synthetic", "space": space.to_dict(), "complete": True}


@pytest.fixture
def bench() -> Benchmark:
    return Benchmark(synthetic_rows(), manifest(), name="synthetic")


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    import json

    folder = tmp_path / "synthetic"
    folder.mkdir()
    write_table(folder / "table.csv", synthetic_rows())
    (folder / "manifest.json").write_text(json.dumps(manifest()))
    return folder
