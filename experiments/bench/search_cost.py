"""Benchmark 3: what the differentiable search costs, against one training run.

The backbone is ``i3d_tiny`` with a module at each of its 5 default insertion points. Five models
train on the same synthetic batches, interleaved step by step (step 1 of A, B, ..., then step 2
of ..., B, A, ...), so machine noise hits all of them:

- ``search``: the supergraph of the paper's space at each position (2 levels, every (type, dim)
  node the space allows, 4 activations each, connection weights shared: position-agnostic);
- ``derived``: the cell derived from connection weights drawn at random (seeded) rather than
  from an actual search: at initialisation every weight is equal and the tie-break would always
  pick the 3 level-1 map nodes, the cheapest cell; random weights give a cell with dot attention
  and level-2 nodes, like a real search's. The cell is recorded in the details;
- ``search_dirichlet``: the same supergraph with Dirichlet (DrNAS) mixing, the ``make demo``
  searcher's: a Gamma sample per mixing row in every training forward;
- ``bare``: the backbone alone;
- ``op_cell``: an ``AttentionCell`` holding the single op (dot, spatiotemporal, softmax);
- ``oneshot_cell``: a 2-op cell like those ``make demo``'s one-shot selection derives (the
  table's cells have 2 ops; this is the one its README-recorded fresh-clone run derived:
  dot/spatiotemporal/softmax, then dot/spatial/softmax reading f0 and op 1, both outputs);
- ``nonlocal``: ``NonLocalBlock(C, C_op)``, the same computation as ``op_cell`` (checked: with
  the block's weights copied into the cell both give the same output, ``details``).

An "epoch" is a fixed number of training steps: forward, cross-entropy, backward, an SGD step of
the network and, for the search, an Adam step of the connection weights (the joint search's
step). Data loading is left out on purpose.

Rows (values are medians over rounds of the per-round ratio; every round's times are recorded):

- ``epoch_time``: search ÷ derived (the paper: search costs about one training run), goal
  <= 1.25 at every scale;
- ``over_backbone``: search ÷ bare, goal <= 1.5;
- ``cell_machinery``: op_cell ÷ nonlocal, the cost of the cell's wiring around the op, goal
  <= 1.05;
- ``dirichlet_epoch_time``: search_dirichlet ÷ derived, the same goal as ``epoch_time`` (the
  issue asks a remedy to cost no more than the search before it);
- ``dirichlet_over_search``: search_dirichlet ÷ search, reported (no goal): what the remedy adds;
- ``oneshot_epoch_time``: search_dirichlet ÷ oneshot_cell, reported (no goal): the search's
  cost against the cell the shipped selection derives, cheaper than ``derived``'s 5 ops, so
  the ratio is larger than ``dirichlet_epoch_time`` for the same search;
- ``ratio_spread``: max ÷ min of the per-round search ÷ derived ratios (reported, no goal): how
  far one round is to be trusted on this machine.

Times are wall-clock; the CPU time of the process (``time.process_time``, not inflated by other
jobs preempting this one) is recorded alongside for CPU runs, and its ratios in the details.
``--compile`` (``BenchConfig.compile``) runs every model through ``torch.compile``; off by
default (inductor takes minutes per model on a CPU). Where a goal is missed,
``details["limit"]`` holds the profile lines that limit it: the ops whose self time exceeds the
comparator's the most in one profiled epoch. Peak memory of one step is reported for every
model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from attnas.backbones import build_backbone, insert_cells
from attnas.blocks import NonLocalBlock
from attnas.cells import AttentionCell
from attnas.space import CellSpec, OpNode, OpSpec, SearchSpace, load_space
from attnas.supergraph import derive_cell
from attnas.supergraph.search import SupergraphFactory, derived_cell_factory
from experiments.bench import (
    MIB,
    BenchConfig,
    BenchResult,
    ms,
    paired_ratio,
    peak_memory,
    ratio_result,
    synchronize,
)

NAME = "search_cost"
BACKBONE = "i3d_tiny"
NUM_CLASSES = 4
NONLOCAL_OP = OpSpec("dot", "spatiotemporal", "softmax")
ONESHOT_CELL = CellSpec(
    (OpNode(NONLOCAL_OP, (0,)), OpNode(OpSpec("dot", "spatial", "softmax"), (0, 1))), (1, 2)
)
GOALS = {
    "epoch_time": 1.25,
    "over_backbone": 1.5,
    "cell_machinery": 1.05,
    "dirichlet_epoch_time": 1.25,
}


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


def _backbone(cfg: BenchConfig) -> Any:
    torch.manual_seed(cfg.seed)
    return build_backbone(BACKBONE, NUM_CLASSES, workload(cfg)["clip"])


def supergraph_model(
    cfg: BenchConfig, space: SearchSpace, position_specific: bool, dirichlet: bool = False
) -> tuple[nn.Module, list[nn.Parameter], SupergraphFactory]:
    """The backbone with a supergraph at each default position, and its connection weights."""
    model = _backbone(cfg)
    factory = SupergraphFactory(space, position_specific, dirichlet=dirichlet)
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
    model = _backbone(cfg)
    cells = {name: cell for name in model.default_positions}
    insert_cells(model, None, derived_cell_factory(cells, space.op_channel_ratio))
    return model.to(cfg.device), cell


def op_cell_model(cfg: BenchConfig, space: SearchSpace, spec: CellSpec | None = None) -> Any:
    """The backbone with ``spec`` (default: the one-op cell dot/spatiotemporal/softmax) at each
    default position."""
    spec = spec or CellSpec((OpNode(NONLOCAL_OP, (0,)),), (1,))
    model = _backbone(cfg)
    factory = derived_cell_factory(
        {name: spec for name in model.default_positions}, space.op_channel_ratio
    )
    insert_cells(model, None, factory)
    return model.to(cfg.device)


def nonlocal_model(cfg: BenchConfig, space: SearchSpace) -> Any:
    """The backbone with ``NonLocalBlock(C, C_op)`` (softmax, no pooling) at each position."""
    model = _backbone(cfg)
    insert_cells(
        model, None, lambda name, shape: NonLocalBlock(shape[0], space.op_channels(shape[0]))
    )
    return model.to(cfg.device)


def tied_difference(cell: AttentionCell, block: NonLocalBlock, shape: tuple[int, ...]) -> float:
    """Max |cell(x) - block(x)| with the block's weights copied into the one-op cell.

    Both are copied first (the models are left alone) and their last BatchNorm weight set to
    one, so that the output depends on the attention.
    """
    import copy

    cell, block = copy.deepcopy(cell).eval(), copy.deepcopy(block).eval()
    op = cell.ops[0]
    with torch.no_grad():
        nn.init.ones_(block.norm.weight)
        for lin, conv in ((op.g1, block.conv_theta), (op.g2, block.conv_phi)):
            lin.weight.copy_(conv.weight.flatten(1))
            lin.bias.copy_(conv.bias)
        op.g3.load_state_dict(block.conv_g.state_dict())
        cell.out_conv.load_state_dict(block.conv_out.state_dict())
        cell.out_norm.load_state_dict(block.norm.state_dict())
        ref = next(block.parameters())
        x = torch.randn(2, *shape, device=ref.device, dtype=ref.dtype)
        return float((cell(x) - block(x)).abs().max())


def step_fns(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    arch: list[nn.Parameter] | None = None,
) -> list[Callable[[], None]]:
    """One call per batch: a training step (network SGD, connection-weight Adam); together
    one "epoch"."""
    arch_ids = {id(p) for p in arch or []}
    net = [p for p in model.parameters() if id(p) not in arch_ids]
    opt = torch.optim.SGD(net, lr=1e-3, momentum=0.9)
    arch_opt = torch.optim.Adam(arch, lr=3e-3) if arch else None
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if arch_opt is not None:
            arch_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if arch_opt is not None:
            arch_opt.step()

    return [lambda x=x, y=y: step(x, y) for x, y in batches]


def epoch_fn(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    arch: list[nn.Parameter] | None = None,
) -> Callable[[], None]:
    """One "epoch": a training step on each batch (network SGD, connection-weight Adam)."""
    steps = step_fns(model, batches, arch)

    def epoch() -> None:
        for step in steps:
            step()

    return epoch


def step_peak(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
) -> int:
    """Peak bytes of one forward + backward (gradients freed first)."""
    model.zero_grad(set_to_none=True)
    x, y = batch
    return peak_memory(lambda: F.cross_entropy(model(x), y), device)


def interleaved_clock_times(
    fns: Mapping[str, Callable[[], Any] | Sequence[Callable[[], Any]]],
    rounds: int,
    warmup: int,
    device: torch.device,
    rewarm: bool = False,
) -> dict[str, dict[str, list[float]]]:
    """``experiments.bench.interleaved_times`` recording two clocks, interleaved piece by piece.

    A variant is one call or a sequence of pieces (an epoch's steps); a round times every
    variant once, piece i of all variants before piece i + 1, the order reversed from one
    piece (and round) to the next (A, B | B, A | ...), so variants are measured seconds, not
    epochs, apart and a drift of the machine's load hits them alike. ``rewarm`` runs every
    piece once untimed right before its timed call, so that a small variant is not timed
    with the caches a large one just flushed.

    Returns:
        ``{"wall": {name: [s per round, ...]}, "cpu": {...}, "sys": {...}}``: wall-clock
        seconds (device synchronised), the process's CPU seconds (``time.process_time``; on
        CUDA it only counts the host side, so ratios are taken from ``wall`` there) and the
        part of those spent in the kernel.
    """
    pieces = {k: [f] if callable(f) else list(f) for k, f in fns.items()}
    for _ in range(warmup):
        for ps in pieces.values():
            for piece in ps:
                piece()
    out: dict[str, dict[str, list[float]]] = {"wall": {}, "cpu": {}, "sys": {}}
    order = list(pieces)
    n_pieces = max(len(ps) for ps in pieces.values())
    for r in range(rounds):
        wall, cpu = dict.fromkeys(order, 0.0), dict.fromkeys(order, 0.0)
        sys_ = dict.fromkeys(order, 0.0)
        for i in range(n_pieces):
            for name in order if (r * n_pieces + i) % 2 == 0 else order[::-1]:
                if i >= len(pieces[name]):
                    continue
                if rewarm:
                    pieces[name][i]()
                synchronize(device)
                w0, c0, s0 = time.perf_counter(), time.process_time(), _system_time()
                pieces[name][i]()
                synchronize(device)
                wall[name] += time.perf_counter() - w0
                cpu[name] += time.process_time() - c0
                sys_[name] += _system_time() - s0
        for name in order:
            out["wall"].setdefault(name, []).append(wall[name])
            out["cpu"].setdefault(name, []).append(cpu[name])
            out["sys"].setdefault(name, []).append(sys_[name])
    return out


def _system_time() -> float:
    """The process's CPU seconds in the kernel (page faults, ...), 0 where unknown."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _self_times(fn: Callable[[], Any], device: torch.device) -> dict[str, tuple[float, int]]:
    """``{op: (self time in us, calls)}`` of one profiled ``fn()`` call."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    synchronize(device)
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    return {r.key: (getattr(r, attr), r.count) for r in prof.key_averages()}


def excess_profile_lines(
    fn: Callable[[], Any],
    ref: Callable[[], Any],
    device: torch.device,
    ref_name: str,
    top: int = 3,
) -> list[str]:
    """The ops whose self time in ``fn`` exceeds that in ``ref`` the most (one profiled call each).

    Returns:
        Lines like ``"aten::bmm: +41.2 ms self time over derived (52.3 vs 11.1 ms, 360 vs 60
        calls); 31% of the excess"``.
    """
    a, b = _self_times(fn, device), _self_times(ref, device)
    excess = {k: a[k][0] - b.get(k, (0.0, 0))[0] for k in a}
    total = sum(v for v in excess.values() if v > 0) or 1.0
    ranked = sorted(excess, key=lambda k: -excess[k])[:top]
    return [
        f"{k}: +{excess[k] / 1e3:.2f} ms self time over {ref_name} "
        f"({a[k][0] / 1e3:.2f} vs {b.get(k, (0.0, 0))[0] / 1e3:.2f} ms, "
        f"{a[k][1]} vs {b.get(k, (0.0, 0))[1]} calls); {100 * excess[k] / total:.0f}% of the excess"
        for k in ranked
    ]


def _sequence(calls: Sequence[Callable[[], None]]) -> Callable[[], None]:
    def run_all() -> None:
        for call in calls:
            call()

    return run_all


def _ratios(times: Mapping[str, list[float]], a: str, b: str) -> list[float]:
    return [round(x / y, 4) for x, y in zip(times[a], times[b])]


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Search ÷ derived, search ÷ backbone, cell machinery, and the spread of the first."""
    space = load_space("attention_nas")
    batches = synthetic_batches(cfg)
    search, arch, factory = supergraph_model(cfg, space, position_specific=False)
    derived, cell = derived_model(cfg, space, factory)
    with torch.no_grad():  # back to uniform connection weights (the search's start)
        for p in arch:
            p.zero_()
    search_dirichlet, arch_dirichlet, _ = supergraph_model(cfg, space, False, dirichlet=True)
    models = {
        "search": search,
        "search_dirichlet": search_dirichlet,
        "derived": derived,
        "bare": _backbone(cfg).to(cfg.device),
        "op_cell": op_cell_model(cfg, space),
        "nonlocal": nonlocal_model(cfg, space),
        "oneshot_cell": op_cell_model(cfg, space, ONESHOT_CELL),
    }
    if cfg.compile:  # every model alike; the warm-up round compiles them
        for model in models.values():
            model.compile()
    archs = {"search": arch, "search_dirichlet": arch_dirichlet}
    steps = {k: step_fns(m, batches, archs.get(k)) for k, m in models.items()}
    fns = {k: _sequence(v) for k, v in steps.items()}  # one epoch per call (profiles)
    warmup = max(min(cfg.warmup, 1), int(cfg.compile))
    clocks = interleaved_clock_times(steps, cfg.rounds(5, 5), warmup, cfg.device)
    times = clocks["wall"]
    peaks = {k: step_peak(m, batches[0], cfg.device) for k, m in models.items()}
    first = models["op_cell"].default_positions[0]
    shape = models["op_cell"].insertion_points()[first]
    w = workload(cfg)
    pairs = {
        "epoch_time": ("search", "derived"),
        "over_backbone": ("search", "bare"),
        "cell_machinery": ("op_cell", "nonlocal"),
        "dirichlet_epoch_time": ("search_dirichlet", "derived"),
    }
    common = {
        "backbone": BACKBONE,
        "positions": list(search.default_positions),
        "batch": w["batch"],
        "clip": list(w["clip"]),
        "steps_per_epoch": w["steps"],
        "epoch": "fixed number of steps on synthetic batches (no data loading)",
        "rounds": len(times["search"]),
        "clock": "wall (perf_counter); cpu = process_time",
        "compiled": cfg.compile,
    }
    epoch_ms = {k: ms(v) for k, v in times.items()}
    round_ms = {k: [round(t * 1e3, 2) for t in v] for k, v in times.items()}
    details = {
        **common,
        "supergraph": {"levels": space.supergraph.levels, "nodes": len(space.supergraph.nodes)},
        "supergraph_fused": all(m.fused for m in search.inserted.values()),
        "derived_cell": cell.canonical(),
        "op_cell": f"{NONLOCAL_OP}<-0, C_op = C/4; nonlocal: NonLocalBlock(C, C/4)",
        "oneshot_cell": ONESHOT_CELL.canonical(),
        "op_cell_vs_nonlocal_tied_max_abs_diff": tied_difference(
            models["op_cell"].inserted[first], models["nonlocal"].inserted[first], shape
        ),
        "epoch_ms": epoch_ms,
        "round_epoch_ms": round_ms,
        "step_peak_mib": {k: round(v / MIB, 2) for k, v in peaks.items()},
        "peak_memory_ratio": round(peaks["search"] / max(peaks["derived"], 1), 4),
    }
    if cfg.device.type == "cpu":
        details["cpu_epoch_ms"] = {k: ms(v) for k, v in clocks["cpu"].items()}
        details["cpu_ratios"] = {
            key: round(paired_ratio(clocks["cpu"][a], clocks["cpu"][b]), 4)
            for key, (a, b) in pairs.items()
        }
    goals = {
        "epoch_time": "search epoch <= 1.25x derived-cell epoch",
        "over_backbone": "search epoch <= 1.5x bare-backbone epoch",
        "cell_machinery": "backbone + one-op cell (dot/st/softmax) <= 1.05x backbone + non-local",
        "dirichlet_epoch_time": "Dirichlet-mixing search epoch <= 1.25x derived-cell epoch",
    }
    results = []
    for key, (a, b) in pairs.items():
        row_details = {**details, "round_ratios": _ratios(times, a, b)}
        results.append(
            ratio_result(
                f"{NAME}/{key}",
                GOALS[key],
                paired_ratio(times[a], times[b]),
                row_details,
                limit=lambda a=a, b=b: excess_profile_lines(fns[a], fns[b], cfg.device, b),
                goal=goals[key],
            )
        )
    extra = _ratios(times, "search_dirichlet", "search")
    results.append(
        BenchResult(
            name=f"{NAME}/dirichlet_over_search",
            goal="reported: Dirichlet-mixing search epoch / plain search epoch",
            value=round(paired_ratio(times["search_dirichlet"], times["search"]), 4),
            unit="x",
            met=None,
            details={**common, "round_ratios": extra, "epoch_ms": epoch_ms},
        )
    )
    oneshot = _ratios(times, "search_dirichlet", "oneshot_cell")
    results.append(
        BenchResult(
            name=f"{NAME}/oneshot_epoch_time",
            goal="reported: Dirichlet-mixing search epoch / epoch of a 2-op cell as the one-shot "
            "selection derives",
            value=round(paired_ratio(times["search_dirichlet"], times["oneshot_cell"]), 4),
            unit="x",
            met=None,
            details={
                **common,
                "round_ratios": oneshot,
                "epoch_ms": epoch_ms,
                "oneshot_cell": ONESHOT_CELL.canonical(),
            },
        )
    )
    per_round = _ratios(times, "search", "derived")
    results.append(
        BenchResult(
            name=f"{NAME}/ratio_spread",
            goal=f"reported: max / min of the {len(per_round)} rounds' search / derived ratios",
            value=round(max(per_round) / min(per_round), 4),
            unit="x",
            met=None,
            details={
                **common,
                "round_ratios": per_round,
                "median": round(statistics.median(per_round), 4),
                "min": min(per_round),
                "max": max(per_round),
            },
        )
    )
    return results
