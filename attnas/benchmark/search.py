"""A differentiable search under a benchmark's proxy protocol, so its table can judge it.

``run_proxy_search`` trains supergraphs at the protocol's positions on the cached features,
exactly as a table trial trains a cell (same pre-trained frozen prefix, readout, branch opening,
budget and data), with the connection weights stepped by the search's ``ArchitectureStep`` hook
(joint mode: both minimise the training loss; bilevel mode: the network trains on one half of
the cached training clips and the connection weights step on the other, held-out half, as
``run_differentiable_search`` splits them), then derives the cell with the top-α / top-β
rule: one cell shared by every position, or with ``config.position_specific`` one cell per
position, each from its own supergraph's weights (``ProxySearchResult.cells``; train them
together through ``ProxySearchResult.cell_set``). ``config.sink_bn_init``, when set, replaces
the protocol's ``branch_init`` for the supergraphs. The derived cell is then placed on the
table: its row when the table holds it, otherwise its mean over the table's seeds under the
same protocol (``run_proxy_trial``) placed among the cell means with
``Benchmark.percentile_of`` (``place_on_table``).
``protocol_weights`` finds the protocol's pre-trained backbone (the table's own file when it
ships one) and ``retrain_under_protocol`` trains a cell or a baseline once per seed, as
``make demo`` does (``attnas.cli.search_proxy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attnas.benchmark.protocol import FeatureCache, ProxyProtocol, build_proxy_model
from attnas.space import CellSpec, SearchSpace
from attnas.supergraph.select import Readaptation, derive_by_position


@dataclass
class ProxySearchResult:
    """What a proxy search produced.

    Attributes:
        cell: The derived cell: the shared cell of a position-agnostic search, the first
            position's cell of a position-specific one (``cells`` has them all).
        weights: The learned connection weights (``ArchitectureWeights`` per key: ``"all"``
            for a position-agnostic search, each position for a position-specific one).
        history: The search run's per-epoch metrics.
        telemetry: One dict per epoch from the search hook (entropies, derived cell, ...).
        arch_steps: Architecture optimiser steps taken.
        model: The trained network (the supergraphs inserted, the connection weights attached
            as ``model.architecture``), e.g. to evaluate cells by their inherited weights
            (``attnas.supergraph.oneshot``).
        cells: The derived cell of every position, in the protocol's order (the same cell at
            each for a position-agnostic search).
    """

    cell: CellSpec
    weights: dict[str, Any]
    history: list[dict[str, Any]]
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    arch_steps: int = 0
    model: nn.Module | None = None
    cells: dict[str, CellSpec] = field(default_factory=dict)

    def cell_set(self, protocol: ProxyProtocol) -> Any:
        """The derived cells as one ``CellSet`` built as the protocol builds its cells, to
        retrain them together (``retrain_under_protocol``)."""
        from attnas.supergraph.search import derived_cell_factory

        return derived_cell_factory(self.cells, protocol.op_channel_ratio)


def run_proxy_search(
    protocol: ProxyProtocol,
    cache: FeatureCache,
    space: SearchSpace,
    config: Any,
    seed: int,
    telemetry_path: str | Path | None = None,
) -> ProxySearchResult:
    """Train supergraphs under the protocol (joint or bilevel mode) and derive the cell.

    Args:
        protocol: The table's protocol.
        cache: Its feature cache.
        space: The search space (supergraph levels, nodes and activations; α/β defaults).
        config: A ``DifferentiableSearchConfig`` (``mode`` joint or bilevel, the held-out
            share ``heldout_fraction`` of the training clips; ``position_specific``: one
            supergraph's weights, and one derived cell, per position of the protocol;
            ``selection="perturbation"``: the choices ranked by the trained network's
            validation loss without each, ``proxy_score``; ``"pruning"``: the same with the
            sink pruned one node at a time and the network re-adapted for an epoch of the
            protocol's training after each structural decision, ``Readaptation``, the
            network restored afterwards; ``"oneshot"``: the space's cell with
            ``config.oneshot_ops`` ops that scores best by its inherited weights,
            ``proxy_oneshot``).
        seed: The search seed.
        telemetry_path: Where the hook appends one JSON line per epoch (None: a temporary file).

    Returns:
        The ``ProxySearchResult``.
    """
    import json
    import tempfile

    from attnas.supergraph.search import ArchitectureStep, SupergraphFactory
    from attnas.train import heldout_loader, split_dataset
    from attnas.train.trainer import Trainer

    alpha, beta = config.alpha or space.alpha, config.beta or space.beta
    factory = SupergraphFactory.from_config(space, config)

    def supergraph(name: str, shape: tuple[int, int, int, int]) -> nn.Module:
        return factory(name, shape)

    model = build_proxy_model(protocol, cache, supergraph, seed)
    if config.sink_bn_init is not None:  # the search's choice, over the protocol's branch_init
        factory.open_sinks(config.sink_bn_init)
    arch = factory.attach(model)
    train, heldout = cache.data["train"], None
    if config.mode == "bilevel":
        train, held = split_dataset(train, config.heldout_fraction, seed)
        heldout = heldout_loader(held, protocol.train.batch_size, seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(telemetry_path or Path(tmp) / "telemetry.jsonl")
        hook = ArchitectureStep(factory, config, alpha, beta, heldout, path)
        trainer = Trainer(
            model,
            train,
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
    if config.selection == "oneshot":
        chosen = proxy_oneshot(model, protocol, cache, space, config, seed)
        cells = {p: chosen for p in protocol.positions}
    else:
        score, tune = proxy_selection(model, protocol, cache, config.selection, seed, train)
        cells = derive_by_position(weights, protocol.positions, alpha, beta, score, tune)
    cell = next(iter(cells.values()))
    return ProxySearchResult(cell, weights, history, telemetry, hook.steps, model, cells)


def proxy_selection(
    model: nn.Module,
    protocol: ProxyProtocol,
    cache: FeatureCache,
    selection: str,
    seed: int,
    train: Any = None,
) -> tuple[Any, Readaptation | None]:
    """``(score, tune)`` for ``derive_by_position`` under ``selection``: ``(None, None)`` for
    the weights; ``proxy_score`` for perturbation; and for pruning also a ``Readaptation`` on
    ``train`` (the clips the network trained on; None: every cached training clip) with the
    protocol's training and the search seed."""
    if selection not in ("perturbation", "pruning"):
        return None, None
    score = proxy_score(model, protocol, cache)
    if selection != "pruning":
        return score, None
    clips = cache.data["train"] if train is None else train
    return score, Readaptation(model, clips, protocol.train, seed=seed)


def proxy_oneshot(
    model: nn.Module,
    protocol: ProxyProtocol,
    cache: FeatureCache,
    space: SearchSpace,
    config: Any,
    seed: int,
    store: str | Path | None = None,
) -> CellSpec:
    """The one-shot selection's cell of a trained (position-agnostic) search network: the
    space's cell with ``config.oneshot_ops`` ops scoring the best validation top-1 on the cached
    clips by the weights it inherits, BatchNorms re-estimated per cell on the first training
    batches (``attnas.supergraph.select.derive_by_oneshot``); with ``config.oneshot_retrain``,
    the best of that many by their mean top-1 trained under the protocol with
    ``config.oneshot_retrain_seeds`` seeds derived from the search ``seed``
    (``select.oneshot_seeds``), each trial kept under ``store/<hash>`` when given."""
    from attnas.supergraph.select import select_oneshot

    calibration, val = _unshuffled(cache, protocol.train.batch_size)

    def train(cell: CellSpec, seeds: list[int]) -> list[float | None]:
        where = None if store is None else Path(store) / cell.hash()
        results = retrain_under_protocol(protocol, cache, cell, seeds, store=where)
        return [r.top1 if r.ok else None for r in results]

    return select_oneshot(model, space, config, val, calibration, seed, train)


def proxy_score(model: nn.Module, protocol: ProxyProtocol, cache: FeatureCache) -> Any:
    """The perturbation selection's ``score()`` of a trained search network: its validation
    loss on the cached clips, BatchNorms re-estimated on the first training batches
    (``attnas.supergraph.select.supergraph_loss``)."""
    from attnas.supergraph.select import supergraph_loss

    calibration, val = _unshuffled(cache, protocol.train.batch_size)
    return supergraph_loss(model, val, calibration)


def recalibrated_top1(
    model: nn.Module, cache: FeatureCache, batch_size: int, batches: int = 4
) -> float:
    """Validation top-1 of a trained search network with the running statistics of its
    trainable BatchNorms re-estimated on the first ``batches`` (unshuffled) training batches
    under the evaluation-mode mixing weights. ``model`` is as it was afterwards.

    Under Dirichlet mixing the statistics gathered in training are those of sampled mixing
    weights, and the network evaluated with their mean can sit at chance: on the complete
    table's task 49.8 % as trained, 70.7 % re-estimated (``experiments/results/
    oneshot_ranking.md``, the same re-estimation as a one-shot score's).
    """
    from attnas.supergraph.oneshot import evaluate_recalibrated

    train, val = _unshuffled(cache, batch_size)
    return evaluate_recalibrated(model, val, train, batches).top1


def _unshuffled(cache: FeatureCache, batch_size: int) -> tuple[Any, Any]:
    """Unshuffled loaders of the cache's training clips (``batch_size``) and validation clips,
    for evaluations that must see the same batches every time."""
    from torch.utils.data import DataLoader

    train = DataLoader(cache.data["train"], batch_size=batch_size, shuffle=False)
    return train, DataLoader(cache.data["val"], batch_size=256, shuffle=False)


def table_folder(name: str) -> Path:
    """The folder of a table (a name under ``benchmark_dirs()`` or a folder path)."""
    from attnas.benchmark.table import MANIFEST_FILENAME, benchmark_dirs

    candidates = [Path(name)] if Path(name).is_dir() else [d / name for d in benchmark_dirs()]
    for folder in candidates:
        if (folder / MANIFEST_FILENAME).is_file():
            return folder
    raise FileNotFoundError(
        f"no benchmark {name!r}: looked for {MANIFEST_FILENAME} in "
        + ", ".join(str(c) for c in candidates)
    )


def protocol_weights(protocol: ProxyProtocol, folder: str | Path, cache_dir: str | Path) -> Path:
    """The protocol's pre-trained backbone in ``cache_dir``: copied from the table's folder when
    the table ships it (``pretrained_<backbone>_<key>.pt``), trained once otherwise (about 8 CPU
    minutes for the default protocol; ``pretrained_weights``)."""
    import shutil

    from attnas.benchmark.protocol import pretrained_weights

    name = f"pretrained_{protocol.backbone}_{protocol.pretrain_key()}.pt"
    shipped, kept = Path(folder) / name, Path(cache_dir) / name
    if shipped.is_file() and not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, kept)
    return pretrained_weights(protocol, cache_dir)


@dataclass(frozen=True)
class TablePlacement:
    """Where a cell falls among a table's cell means.

    Attributes:
        in_table: Whether the table has the cell's row.
        percentile: ``Benchmark.percentile`` of its row when it has one, otherwise
            ``Benchmark.percentile_of`` the retrained mean (100 = best).
        value: The mean that was placed (the row's mean, or the retrained mean).
        table_seeds: Seeds of the cell's row (0 when it has none).
        cells: Cells the table holds.
        complete: Whether the table holds every cell of its space.
    """

    in_table: bool
    percentile: float
    value: float
    table_seeds: int
    cells: int
    complete: bool


def place_on_table(bench: Any, cell: CellSpec, retrained_mean: float) -> TablePlacement:
    """Place ``cell`` on ``bench``: its row's percentile, or ``percentile_of`` its retrained
    mean when the table has no row for it (a partial table, or a cell outside its space)."""
    if cell in bench:
        return TablePlacement(
            True, bench.percentile(cell), bench.mean(cell), len(bench.values(cell)),
            len(bench), bench.complete,
        )  # fmt: skip
    return TablePlacement(
        False, bench.percentile_of(retrained_mean), retrained_mean, 0, len(bench), bench.complete
    )


def retrain_under_protocol(
    protocol: ProxyProtocol,
    cache: FeatureCache,
    cell: Any,
    seeds: list[int],
    store: str | Path | None = None,
) -> list[Any]:
    """Train ``cell`` (a ``CellSpec``, ``"none"``, ``"nonlocal"`` or a ``CellSet`` with a cell
    for every position) once per seed under the protocol (``run_proxy_trial``).

    Args:
        protocol: The protocol.
        cache: Its feature cache.
        cell: What to train.
        seeds: One trial per seed.
        store: A folder keeping each finished trial as ``seed<k>.json``; a trial found there is
            not trained again (a resumed run continues).

    Returns:
        The ``TrialResult`` of every seed, in ``seeds`` order.
    """
    import json

    from attnas.benchmark.protocol import count_proxy_cost, run_proxy_trial
    from attnas.train.spec import TrialResult

    cost = None
    results = []
    for seed in seeds:
        path = None if store is None else Path(store) / f"seed{seed}.json"
        if path is not None and path.is_file():
            results.append(TrialResult.from_dict(json.loads(path.read_text())))
            continue
        if cost is None:
            cost = count_proxy_cost(protocol, cell)  # the same for every seed
        result = run_proxy_trial(protocol, cache, cell, seed, cost=cost)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result.to_dict()))
        results.append(result)
    return results
