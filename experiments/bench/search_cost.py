"""Benchmark 3: one search epoch (supergraphs) ÷ one epoch with the derived cells.

The backbone is ``i3d_tiny`` with a module at each of its 5 default insertion points: either
the supergraph of the paper's space (2 levels, every (type, dim) node the space allows, 4
activations each, connection weights shared: position-agnostic) or the cell derived from
connection weights. An "epoch" is a fixed number of training steps on synthetic batches
(random clips and labels, made once and reused), the same batches for both models: forward,
cross-entropy, backward, an SGD step of the network and, for the search, an Adam step of the
connection weights (the joint search's step). Data loading is left out on purpose.

The derived cells come from connection weights drawn at random (seeded) rather than from an
actual search: at initialisation every weight is equal and the tie-break would always pick the
3 level-1 map nodes, the cheapest cell; random weights give a cell with dot attention and
level-2 nodes, like a real search's. The cell is recorded in the details.
Goal (the paper: search costs about one training run): ratio <= 1.5. Peak memory of one step
is reported alongside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attnas.backbones import build_backbone, insert_cells
from attnas.space import SearchSpace, load_space
from attnas.supergraph import derive_cell
from attnas.supergraph.search import SupergraphFactory, derived_cell_factory
from experiments.bench import (
    MIB,
    BenchConfig,
    BenchResult,
    interleaved_times,
    ms,
    paired_ratio,
    peak_memory,
    profile_lines,
    ratio_result,
)

NAME = "search_cost"
BACKBONE = "i3d_tiny"
NUM_CLASSES = 4


def workload(cfg: BenchConfig) -> dict[str, Any]:
    """Batch size, clip shape and steps per epoch for the config's scale."""
    batch, clip, steps = cfg.pick(
        (2, (3, 8, 32, 32), 1), (8, (3, 8, 64, 64), 4), (4, (3, 16, 112, 112), 3)
    )
    return {"batch": batch, "clip": clip, "steps": steps}


def synthetic_batches(cfg: BenchConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` fixed (clips, labels) batches on the config's device."""
    w = workload(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    return [
        (
            torch.randn(w["batch"], *w["clip"], generator=gen).to(cfg.device),  # (B, 3, T, H, W)
            torch.randint(0, NUM_CLASSES, (w["batch"],), generator=gen).to(cfg.device),
        )
        for _ in range(w["steps"])
    ]


def supergraph_model(
    cfg: BenchConfig, space: SearchSpace, position_specific: bool
) -> tuple[nn.Module, list[nn.Parameter], SupergraphFactory]:
    """The backbone with a supergraph at each default position, and its connection weights."""
    torch.manual_seed(cfg.seed)
    model = build_backbone(BACKBONE, NUM_CLASSES, workload(cfg)["clip"])
    factory = SupergraphFactory(space, position_specific)
    insert_cells(model, None, factory)
    arch = factory.attach(model)
    return model.to(cfg.device), arch, factory


def derived_model(cfg: BenchConfig, space: SearchSpace, factory: SupergraphFactory) -> Any:
    """The backbone with the cell derived from seeded random connection weights."""
    weights = next(iter(factory.weights.values()))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        for p in weights.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    cell = derive_cell(weights, space.alpha, space.beta)
    torch.manual_seed(cfg.seed)
    model = build_backbone(BACKBONE, NUM_CLASSES, workload(cfg)["clip"])
    cells = {name: cell for name in model.default_positions}
    insert_cells(model, None, derived_cell_factory(cells, space.op_channel_ratio))
    return model.to(cfg.device), cell


def epoch_fn(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    arch: list[nn.Parameter] | None = None,
) -> Callable[[], None]:
    """One "epoch": a training step on each batch (network SGD, connection-weight Adam)."""
    arch_ids = {id(p) for p in arch or []}
    net = [p for p in model.parameters() if id(p) not in arch_ids]
    opt = torch.optim.SGD(net, lr=1e-3, momentum=0.9)
    arch_opt = torch.optim.Adam(arch, lr=3e-3) if arch else None
    model.train()

    def epoch() -> None:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            if arch_opt is not None:
                arch_opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if arch_opt is not None:
                arch_opt.step()

    return epoch


def step_peak(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
) -> int:
    """Peak bytes of one forward + backward (gradients freed first)."""
    model.zero_grad(set_to_none=True)
    x, y = batch
    return peak_memory(lambda: F.cross_entropy(model(x), y), device)


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Search-epoch time over derived-cell-epoch time."""
    space = load_space("attention_nas")
    batches = synthetic_batches(cfg)
    search, arch, factory = supergraph_model(cfg, space, position_specific=False)
    derived, cell = derived_model(cfg, space, factory)
    with torch.no_grad():  # back to uniform connection weights (the search's start)
        for p in arch:
            p.zero_()
    fns = {"search": epoch_fn(search, batches, arch), "derived": epoch_fn(derived, batches)}
    times = interleaved_times(fns, cfg.rounds(5, 5), min(cfg.warmup, 1), cfg.device)
    peaks = {
        "search": step_peak(search, batches[0], cfg.device),
        "derived": step_peak(derived, batches[0], cfg.device),
    }
    w = workload(cfg)
    details = {
        "backbone": BACKBONE,
        "positions": list(search.default_positions),
        "batch": w["batch"],
        "clip": list(w["clip"]),
        "steps_per_epoch": w["steps"],
        "epoch": "fixed number of steps on synthetic batches (no data loading)",
        "supergraph": {"levels": space.supergraph.levels, "nodes": len(space.supergraph.nodes)},
        "derived_cell": cell.canonical(),
        "rounds": len(times["search"]),
        "search_epoch_ms": ms(times["search"]),
        "derived_epoch_ms": ms(times["derived"]),
        "search_step_peak_mib": round(peaks["search"] / MIB, 2),
        "derived_step_peak_mib": round(peaks["derived"] / MIB, 2),
        "peak_memory_ratio": round(peaks["search"] / max(peaks["derived"], 1), 4),
    }
    return [
        ratio_result(
            f"{NAME}/epoch_time",
            1.5,
            paired_ratio(times["search"], times["derived"]),
            details,
            limit=lambda: profile_lines(fns["search"], cfg.device),
            goal="search epoch <= 1.5x derived-cell epoch",
        )
    ]
