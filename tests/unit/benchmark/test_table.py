"""The table's schema and the loader's lookups (by cell, hash, and isomorphic variants)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from attnas.benchmark import COLUMNS, Benchmark, load, read_table
from attnas.space import CellSpec, OpSpec, load_space

from .conftest import SPACE_K1, manifest, synthetic_rows


def test_csv_round_trip_keeps_every_field(table_dir):
    rows = read_table(table_dir / "table.csv")
    assert rows == synthetic_rows()
    with (table_dir / "table.csv").open() as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == COLUMNS


def test_load_by_path_and_by_name(table_dir, monkeypatch):
    by_path = load(str(table_dir))
    monkeypatch.setenv("ATTNAS_BENCHMARKS", str(table_dir.parent))
    by_name = load("synthetic")
    assert len(by_path) == len(by_name) == 24
    assert by_name.space.to_dict() == SPACE_K1.to_dict()


def test_missing_table_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNAS_BENCHMARKS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no benchmark 'nope'.*" + str(tmp_path)):
        load("nope")


def test_bad_row_names_file_and_line(table_dir):
    path = table_dir / "table.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",0.", ",zero.", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"table\.csv:4"):
        read_table(path)


def test_statistics_match_the_rows(bench: Benchmark):
    cells = bench.cells()
    assert len(cells) == 24 and len({c.hash() for c in cells}) == 24
    c = cells[5]
    values = bench.values(c)
    assert len(values) == 2 and bench.seeds(c) == [0, 1]
    assert bench.mean(c) == pytest.approx(sum(values) / 2)
    assert bench.std(c) == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert bench.curves(c)[0][-1] == values[0]
    assert all(0.0 <= v <= 1.0 for cell in cells for v in bench.values(cell))


def test_percentile_top_and_best(bench: Benchmark):
    ranked = sorted(bench.cells(), key=bench.mean)
    assert bench.percentile(ranked[-1]) == 100.0
    assert bench.percentile(ranked[0]) == pytest.approx(100 / 24)
    assert bench.percentile(ranked[11]) == pytest.approx(50.0)
    assert bench.best() == ranked[-1] and bench.optimum() == bench.mean(ranked[-1])
    top = bench.top(0.1)  # ceil(2.4) = 3 cells
    assert [c.hash() for c in top] == [c.hash() for c in ranked[::-1][:3]]
    assert bench.percentile_of(0.0) == 0.0 and bench.percentile_of(1.0) == 100.0
    with pytest.raises(ValueError, match="fraction"):
        bench.top(0.0)


def test_baselines(bench: Benchmark):
    assert bench.baseline("backbone") == pytest.approx([0.52, 0.53])
    assert bench.baseline("nonlocal") == pytest.approx([0.70, 0.71])
    with pytest.raises(KeyError, match="unknown baseline"):
        bench.baseline("resnet")


def test_lookup_by_hash_dict_and_isomorphic_variant():
    space = load_space("attention_nas").with_overrides(num_ops=2)
    a, b = OpSpec("dot", "spatial", "softmax"), OpSpec("map", "temporal", "relu")
    cell = CellSpec.from_dict(
        {"ops": [{**a.to_dict(), "inputs": [0]}, {**b.to_dict(), "inputs": [0]}], "outputs": [1, 2]}
    )
    swapped = CellSpec.from_dict(
        {"ops": [{**b.to_dict(), "inputs": [0]}, {**a.to_dict(), "inputs": [0]}], "outputs": [1, 2]}
    )
    assert space.encode(cell) != space.encode(swapped)
    rows = [r for r in synthetic_rows(space) if r.kind != "cell"]
    rows += [
        r.__class__(**{**r.__dict__, "cell_hash": cell.hash(), "cell": cell.to_dict()})
        for r in synthetic_rows(space)[:2]
    ]
    bench = Benchmark(rows, manifest(space))
    assert bench.values(swapped) == bench.values(cell) == bench.values(cell.hash())
    assert bench.values(swapped.to_dict()) == bench.values(cell)
    assert swapped in bench
    other = CellSpec.from_dict(
        {"ops": [{**a.to_dict(), "inputs": [0]}, {**b.to_dict(), "inputs": [1]}], "outputs": [1, 2]}
    )
    assert other not in bench
    with pytest.raises(KeyError, match="not in benchmark"):
        bench.mean(other)


def test_unknown_kind_is_refused():
    rows = synthetic_rows()
    rows[0] = rows[0].__class__(**{**rows[0].__dict__, "kind": "resnet"})
    with pytest.raises(ValueError, match="unknown row kind 'resnet'"):
        Benchmark(rows, manifest())


def test_manifest_json_is_plain(table_dir):
    assert json.loads((table_dir / "manifest.json").read_text())["complete"] is True
