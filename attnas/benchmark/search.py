"""A differentiable search under a benchmark's proxy protocol, so its table can judge it.

``run_proxy_search`` trains supergraphs at the protocol's positions on the cached features,
exactly as a table trial trains a cell (same pre-trained frozen prefix, readout, branch opening,
budget and data), with the connection weights stepped by the search's ``ArchitectureStep`` hook
(joint mode: both minimise the training loss), then derives the cell with the top-α / top-β
rule. The derived cell is then placed on the table: its row when the table holds it, otherwise
its mean over the table's seeds under the same protocol (``run_proxy_trial``) placed among the
cell means with ``Benchmark.percentile_of``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attnas.benchmark.protocol import FeatureCache, ProxyProtocol, build_proxy_model
from attnas.space import CellSpec, SearchSpace


@dataclass
class ProxySearchResult:
    """What a proxy search produced.

    Attributes:
        cell: The derived cell (position-agnostic).
        weights: The learned connection weights (``ArchitectureWeights`` per key).
        history: The search run's per-epoch metrics.
        telemetry: One dict per epoch from the search hook (entropies, derived cell, ...).
        arch_steps: Architecture optimiser steps taken.
    """

    cell: CellSpec
    weights: dict[str, Any]
    history: list[dict[str, Any]]
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    arch_steps: int = 0


def run_proxy_search(
    protocol: ProxyProtocol,
    cache: FeatureCache,
    space: SearchSpace,
    config: Any,
    seed: int,
    telemetry_path: str | Path | None = None,
) -> ProxySearchResult:
    """Train supergraphs under the protocol (joint mode) and derive the cell.

    Args:
        protocol: The table's protocol.
        cache: Its feature cache.
        space: The search space (supergraph levels, nodes and activations; α/β defaults).
        config: A ``DifferentiableSearchConfig`` (``mode="joint"``; position-agnostic).
        seed: The search seed.
        telemetry_path: Where the hook appends one JSON line per epoch (None: a temporary file).

    Returns:
        The ``ProxySearchResult``.
    """
    import json
    import tempfile

    from attnas.supergraph import derive_cell
    from attnas.supergraph.search import ArchitectureStep, SupergraphFactory
    from attnas.train.trainer import Trainer

    if config.mode != "joint" or config.position_specific:
        raise ValueError("run_proxy_search supports the position-agnostic joint mode only")
    alpha, beta = config.alpha or space.alpha, config.beta or space.beta
    factory = SupergraphFactory(space, position_specific=False, temperature=config.temperature)

    def supergraph(name: str, shape: tuple[int, int, int, int]) -> nn.Module:
        return factory(name, shape)

    model = build_proxy_model(protocol, cache, supergraph, seed)
    arch = factory.attach(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(telemetry_path or Path(tmp) / "telemetry.jsonl")
        hook = ArchitectureStep(factory, config, alpha, beta, None, path)
        trainer = Trainer(
            model,
            cache.data["train"],
            cache.data["val"],
            protocol.train.replace(seed=seed),
            exclude_parameters=arch,
            hooks=[hook],
            seed=seed,
        )
        history = trainer.fit()
        telemetry = (
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if path.is_file()
            else []
        )
    weights = dict(factory.weights)
    cell = derive_cell(next(iter(weights.values())), alpha, beta)
    return ProxySearchResult(cell, weights, history, telemetry, hook.steps)
