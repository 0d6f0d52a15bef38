"""Complete synthetic tables: a structured function of the cell plus seed noise, no training.

The searcher study (``experiments/searcher_study.py``) and its tests need a complete table
while the real one is still being built. ``synthetic_benchmark(space)`` returns a ``Benchmark``
with every distinct cell of ``space`` (one per canonical hash) and the same columns as a real
table, so everything that reads a table reads it unchanged.

The mean top-1 of a cell is

    0.60 + sum over ops k of [a(type_k) + b(dim_k) + c(activation_k) + d(op_k)]
         + sum over edges i -> k between ops of e(op_i, op_k) + sum over ops reading f0 of r
         + a small per-cell term,

with every effect drawn once from a generator seeded by ``seed`` (factor effects with standard
deviation 0.03, the op and edge interactions 0.015 and 0.02, the per-cell term 0.005), clipped to
[0.05, 0.99]; each recorded seed adds Gaussian noise of standard deviation ``noise``. So a
cell's value is mostly additive over its factors (which a model can learn from few trials),
with interactions a searcher must find by looking. Trial wall times depend on the ops (dot
product and spatiotemporal ops take longer), so asynchronous workers finish out of order.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from attnas.benchmark.table import Benchmark, BenchmarkRow
from attnas.space import CellSpec, OpSpec, SearchSpace


def _distinct_cells(space: SearchSpace) -> list[CellSpec]:
    seen: dict[str, CellSpec] = {}
    for cell in space.enumerate():
        seen.setdefault(cell.hash(), cell)
    return list(seen.values())


class _Effects:
    """Lazily drawn, seeded random effects keyed by name."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[str, float] = {}

    def __call__(self, key: str, scale: float) -> float:
        if key not in self._cache:
            text = f"attnas.synthetic:{self.seed}:{key}".encode()
            rng = random.Random(int.from_bytes(hashlib.sha256(text).digest()[:8], "big"))
            self._cache[key] = rng.gauss(0.0, scale)
        return self._cache[key]


def synthetic_mean(cell: CellSpec, seed: int = 0) -> float:
    """The structured mean top-1 of ``cell`` (module docstring)."""
    effect = _Effects(seed)

    def op_value(op: OpSpec) -> float:
        return (
            effect(f"type:{op.type}", 0.03)
            + effect(f"dim:{op.dim}", 0.03)
            + effect(f"act:{op.activation}", 0.03)
            + effect(f"op:{op}", 0.015)
        )

    value = 0.60 + sum(op_value(node.op) for node in cell.ops)
    for node in cell.ops:
        for i in node.inputs:
            if i == 0:
                value += effect("reads_input", 0.01)
            else:
                value += effect(f"edge:{cell.ops[i - 1].op}->{node.op}", 0.02)
    value += effect(f"cell:{cell.hash()}", 0.005)
    return min(0.99, max(0.05, value))


def _wall_s(cell: CellSpec) -> float:
    cost = {"spatial": 1.0, "temporal": 0.8, "spatiotemporal": 1.6}
    return 60.0 * sum(
        cost.get(n.op.dim, 1.0) * (1.5 if n.op.type == "dot" else 1.0) for n in cell.ops
    )


def synthetic_benchmark(
    space: SearchSpace,
    *,
    seeds: tuple[int, ...] = (0, 1),
    noise: float = 0.005,
    seed: int = 0,
    epochs: int = 4,
    name: str = "synthetic",
) -> Benchmark:
    """A complete synthetic table over ``space`` (module docstring).

    Args:
        space: the search space (enumerated: keep it small, e.g. K <= 2).
        seeds: the recorded trial seeds of every cell.
        noise: standard deviation of a seed's top-1 around the cell's mean.
        seed: draws the effects (another seed, another landscape).
        epochs: length of each row's per-epoch curve.
        name: the table's name.

    Returns:
        The ``Benchmark`` (``complete`` is True; the manifest's ``synthetic`` says how it was
        made).
    """
    rows = []
    for cell in _distinct_cells(space):
        mean = synthetic_mean(cell, seed)
        wall = _wall_s(cell)
        for s in seeds:
            rng = random.Random(f"attnas.synthetic.noise:{seed}:{cell.hash()}:{s}")
            top1 = min(1.0, max(0.0, mean + rng.gauss(0.0, noise)))
            curve = tuple(0.5 + (top1 - 0.5) * (e + 1) / epochs for e in range(epochs))
            rows.append(
                BenchmarkRow(
                    kind="cell",
                    cell_hash=cell.hash(),
                    vector=tuple(space.encode(cell)),
                    cell=cell.to_dict(),
                    seed=s,
                    val_top1=top1,
                    val_top1_epochs=curve,
                    train_loss=None,
                    val_loss=None,
                    wall_s=wall * (1.0 + 0.1 * rng.random()),
                    params=None,
                    flops=None,
                )
            )
    for kind, value in (("backbone", 0.55), ("nonlocal", 0.62)):
        for s in seeds:
            rows.append(
                BenchmarkRow(
                    kind, kind, None, None, s, value, (value,), None, None, 60.0, None, None
                )
            )
    manifest: dict[str, Any] = {
        "name": name,
        "space": space.to_dict(),
        "complete": True,
        "seeds": list(seeds),
        "synthetic": {"seed": seed, "noise": noise, "function": "attnas.benchmark.synthetic"},
    }
    return Benchmark(rows, manifest, name=name)
