"""The tabular benchmark: one row per (cell, seed) of a proxy training, and its loader.

A table lives in ``benchmarks/<name>/`` as ``table.csv`` (plain text, one row per trained
(cell, seed); the bare backbone and + non-local are rows too, with ``kind`` saying which) and
``manifest.json`` (the protocol, the search space, the seeds, how complete the table is, the
code commit, the machine, the torch version and the seconds spent).

Columns of ``table.csv``:

===================  ==========================================================================
column               meaning
===================  ==========================================================================
kind                 ``cell``, ``backbone`` or ``nonlocal``
cell_hash            canonical hash (``CellSpec.hash()``; isomorphic cells share it; the kind
                     for the baselines)
vector               the cell's choice vector in the table's space (``-``-joined), or empty
cell                 the cell as compact JSON (``CellSpec.to_dict()``), or empty
seed                 the trial seed
val_top1             final validation top-1 in [0, 1]
val_top1_epochs      validation top-1 after every epoch (``;``-joined)
train_loss           final training loss
val_loss             final validation loss
wall_s               seconds the trial took
params               parameters of the whole network with the cell
flops                FLOPs of one forward pass of one clip
===================  ==========================================================================

Design choices where the spec is silent:

- ``std`` is the sample standard deviation (``ddof=1``); 0 for a single seed.
- ``percentile(cell)`` is ``100 * (number of cells whose mean is <= the cell's mean) / number of
  cells``: the best cell is 100, ties share the higher value. ``percentile_of(value)`` places any
  mean (e.g. of a retrained derived cell) in the same distribution.
- ``top(fraction)`` holds the ``ceil(fraction * n)`` best cells by mean, plus any cell tied with
  the last of them.
- Lookups accept a ``CellSpec``, its dict, or its hash; isomorphic variants find the same row.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnas.space import CellSpec, SearchSpace

TABLE_FILENAME = "table.csv"
MANIFEST_FILENAME = "manifest.json"
DEFAULT_BENCHMARK = "distant_match_k2"
COLUMNS = (
    "kind",
    "cell_hash",
    "vector",
    "cell",
    "seed",
    "val_top1",
    "val_top1_epochs",
    "train_loss",
    "val_loss",
    "wall_s",
    "params",
    "flops",
)
BASELINES = ("backbone", "nonlocal")


@dataclass(frozen=True)
class BenchmarkRow:
    """One trained (cell, seed) of a table (see the module docstring for the fields)."""

    kind: str
    cell_hash: str
    vector: tuple[int, ...] | None
    cell: dict[str, Any] | None
    seed: int
    val_top1: float
    val_top1_epochs: tuple[float, ...]
    train_loss: float | None
    val_loss: float | None
    wall_s: float
    params: int | None
    flops: int | None

    def to_csv(self) -> dict[str, str]:
        """The row as CSV fields."""

        def num(v: float | int | None) -> str:
            return "" if v is None else repr(v)

        return {
            "kind": self.kind,
            "cell_hash": self.cell_hash,
            "vector": "" if self.vector is None else "-".join(map(str, self.vector)),
            "cell": "" if self.cell is None else json.dumps(self.cell, separators=(",", ":")),
            "seed": str(self.seed),
            "val_top1": repr(self.val_top1),
            "val_top1_epochs": ";".join(repr(v) for v in self.val_top1_epochs),
            "train_loss": num(self.train_loss),
            "val_loss": num(self.val_loss),
            "wall_s": f"{self.wall_s:.3f}",
            "params": num(self.params),
            "flops": num(self.flops),
        }

    @classmethod
    def from_csv(cls, row: Mapping[str, str], where: str = "<table>") -> BenchmarkRow:
        """Parse a CSV row; a bad field raises ``ValueError`` naming the file, line and column."""
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"{where}: missing column(s) {missing}")

        def opt(name: str, kind: type) -> Any:
            text = row[name]
            return None if text == "" else kind(float(text)) if kind is int else kind(text)

        try:
            return cls(
                kind=row["kind"],
                cell_hash=row["cell_hash"],
                vector=tuple(int(v) for v in row["vector"].split("-")) if row["vector"] else None,
                cell=json.loads(row["cell"]) if row["cell"] else None,
                seed=int(row["seed"]),
                val_top1=float(row["val_top1"]),
                val_top1_epochs=tuple(float(v) for v in row["val_top1_epochs"].split(";") if v),
                train_loss=opt("train_loss", float),
                val_loss=opt("val_loss", float),
                wall_s=float(row["wall_s"]),
                params=opt("params", int),
                flops=opt("flops", int),
            )
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: {err}") from err


def write_table(path: str | Path, rows: Iterable[BenchmarkRow]) -> None:
    """Write rows to a CSV file atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_csv())
    os.replace(tmp, path)


def read_table(path: str | Path) -> list[BenchmarkRow]:
    """Read a ``table.csv``; errors name the file and line."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return [BenchmarkRow.from_csv(r, f"{path}:{i + 2}") for i, r in enumerate(reader)]


class Benchmark:
    """A loaded table: per-cell seed values, curves and cost, and the baselines.

    Args:
        rows: The table's rows.
        manifest: Its manifest (protocol, space, completeness, provenance).
        name: The table's name.

    Attributes:
        name: The table's name.
        manifest: The manifest dict.
        space: The ``SearchSpace`` its cells come from.
    """

    def __init__(
        self, rows: Iterable[BenchmarkRow], manifest: Mapping[str, Any], name: str = "<table>"
    ) -> None:
        self.name = name
        self.manifest = dict(manifest)
        self.space = SearchSpace.from_dict(self.manifest["space"], source=f"{name} manifest")
        self._cells: dict[str, list[BenchmarkRow]] = {}
        self._baselines: dict[str, list[BenchmarkRow]] = {b: [] for b in BASELINES}
        for row in rows:
            if row.kind == "cell":
                self._cells.setdefault(row.cell_hash, []).append(row)
            elif row.kind in self._baselines:
                self._baselines[row.kind].append(row)
            else:
                raise ValueError(f"{name}: unknown row kind {row.kind!r}")
        for group in (*self._cells.values(), *self._baselines.values()):
            group.sort(key=lambda r: r.seed)
        self._specs = {h: CellSpec.from_dict(g[0].cell or {}) for h, g in self._cells.items()}
        self._means = {h: _mean([r.val_top1 for r in g]) for h, g in self._cells.items()}
        self._sorted_means = sorted(self._means.values())

    # ------------------------------------------------------------------ lookups
    def _key(self, cell: CellSpec | Mapping[str, Any] | str) -> str:
        if isinstance(cell, str):
            key = cell
        elif isinstance(cell, CellSpec):
            key = cell.hash()
        else:
            key = CellSpec.from_dict(cell).hash()
        if key not in self._cells:
            raise KeyError(f"cell {key} is not in benchmark {self.name!r}")
        return key

    def __contains__(self, cell: object) -> bool:
        try:
            self._key(cell)  # type: ignore[arg-type]
        except (KeyError, ValueError):
            return False
        return True

    def __len__(self) -> int:
        return len(self._cells)

    def cells(self) -> list[CellSpec]:
        """The distinct cells (one per canonical hash), in the table's order."""
        return list(self._specs.values())

    def rows(self, cell: CellSpec | Mapping[str, Any] | str) -> list[BenchmarkRow]:
        """Every seed's row of a cell (seed order)."""
        return list(self._cells[self._key(cell)])

    def values(self, cell: CellSpec | Mapping[str, Any] | str) -> list[float]:
        """Per-seed final validation top-1 of a cell, in [0, 1] (seed order)."""
        return [r.val_top1 for r in self._cells[self._key(cell)]]

    def seeds(self, cell: CellSpec | Mapping[str, Any] | str) -> list[int]:
        """The seeds recorded for a cell."""
        return [r.seed for r in self._cells[self._key(cell)]]

    def curves(self, cell: CellSpec | Mapping[str, Any] | str) -> list[tuple[float, ...]]:
        """Per-seed validation top-1 after every epoch (for multi-fidelity methods)."""
        return [r.val_top1_epochs for r in self._cells[self._key(cell)]]

    def mean(self, cell: CellSpec | Mapping[str, Any] | str) -> float:
        """Mean over seeds of the final validation top-1."""
        return self._means[self._key(cell)]

    def std(self, cell: CellSpec | Mapping[str, Any] | str) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        return _std(self.values(cell))

    def percentile_of(self, value: float) -> float:
        """Where a mean top-1 falls among the cell means: 100 * share of means <= value."""
        import bisect

        return 100.0 * bisect.bisect_right(self._sorted_means, value) / len(self._sorted_means)

    def percentile(self, cell: CellSpec | Mapping[str, Any] | str) -> float:
        """The cell's percentile among all cell means (100 = best)."""
        return self.percentile_of(self.mean(cell))

    def top(self, fraction: float) -> list[CellSpec]:
        """The cells in the top ``fraction`` by mean (ties with the last one included)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        ranked = sorted(self._means, key=lambda h: -self._means[h])
        k = max(1, math.ceil(fraction * len(ranked)))
        cut = self._means[ranked[k - 1]]
        return [self._specs[h] for h in ranked if self._means[h] >= cut]

    def best(self) -> CellSpec:
        """The cell with the highest mean."""
        return max(self._specs.values(), key=self.mean)

    def optimum(self) -> float:
        """The highest cell mean."""
        return self._sorted_means[-1]

    def baseline(self, name: str) -> list[float]:
        """Per-seed final top-1 of ``"backbone"`` (no cell) or ``"nonlocal"`` (non-local blocks)."""
        if name not in self._baselines:
            raise KeyError(f"unknown baseline {name!r}; known: {list(BASELINES)}")
        return [r.val_top1 for r in self._baselines[name]]

    def baseline_rows(self, name: str) -> list[BenchmarkRow]:
        """The baseline's rows."""
        if name not in self._baselines:
            raise KeyError(f"unknown baseline {name!r}; known: {list(BASELINES)}")
        return list(self._baselines[name])

    @property
    def complete(self) -> bool:
        """Whether every cell of ``space`` has a row (the manifest's ``complete``)."""
        return bool(self.manifest.get("complete", False))

    def __repr__(self) -> str:
        return (
            f"Benchmark({self.name!r}, cells={len(self)}, complete={self.complete}, "
            f"space={self.space.name!r})"
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def benchmark_dirs() -> list[Path]:
    """Where tables are looked for: ``$ATTNAS_BENCHMARKS``, ``./benchmarks``, the repository's."""
    dirs = []
    if os.environ.get("ATTNAS_BENCHMARKS"):
        dirs.append(Path(os.environ["ATTNAS_BENCHMARKS"]))
    dirs.append(Path.cwd() / "benchmarks")
    dirs.append(Path(__file__).resolve().parents[2] / "benchmarks")
    return dirs


def load(name: str | None = None) -> Benchmark:
    """Load a tabular benchmark by name or folder path (None: the default table).

    Args:
        name: A table name (a folder under one of ``benchmark_dirs()``) or a folder path.

    Returns:
        The ``Benchmark``.

    Raises:
        FileNotFoundError: When no such table exists (the message lists where it looked).
    """
    name = name or DEFAULT_BENCHMARK
    candidates = [Path(name)] if Path(name).is_dir() else [d / name for d in benchmark_dirs()]
    for folder in candidates:
        if (folder / TABLE_FILENAME).is_file() and (folder / MANIFEST_FILENAME).is_file():
            manifest = json.loads((folder / MANIFEST_FILENAME).read_text())
            return Benchmark(read_table(folder / TABLE_FILENAME), manifest, name=folder.name)
    raise FileNotFoundError(
        f"no benchmark {name!r}: looked for {TABLE_FILENAME} and {MANIFEST_FILENAME} in "
        + ", ".join(str(c) for c in candidates)
    )
