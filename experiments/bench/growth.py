"""Benchmark 9: how the supergraph and each op type grow with positions N and levels m.

Measured, not stated: one training step (forward + backward of a random linear functional) of

- a one-level supergraph holding one op type's nodes (map: its spatial, temporal and
  spatiotemporal nodes; likewise dot), and of each single (type, dim) node, as the supergraph
  runs them (4 activations mixed, the sink and its BatchNorm included);
- the paper's supergraph (2 levels of every (type, dim) node),

at feature maps of C = 64 channels (C_op = 16, i3d_tiny's Mixed_4 widths) whose positions
N = T·H·W double along a ladder (W, then H, then T grow), and the paper's node set at m = 1, 2,
4 (and 8 in full mode) levels. All variants run interleaved (see ``experiments.bench``), each
timed call right after an untimed one of the same variant (the N = 2048 dot nodes' N×N tensors
flush the caches a small variant would otherwise be timed with); each one's median time over
the rounds is kept. On CPU the fits use the process's CPU time
(``time.process_time``), which other jobs on a shared machine do not inflate (wall-clock
medians are in the details too); on CUDA the wall clock.

The growth exponent k: the local slope of log cost on log N between the two largest N, where a
fixed per-call cost (dispatch, the sink's BatchNorm, ...) weighs least; every local slope, the
plain log-log slope and a fit of ``cost = a + b·N^k`` are in the details. At quick sizes the
fixed cost still weighs, so k reads low there. FLOPs (``torch.utils.flop_counter``: matrix
products only, 2 per multiply-add) and parameters are counted for every variant and fitted the
same way: deterministic companions of the timing (a time exponent above the FLOP exponent is
memory traffic: tensors outgrowing the caches, and on Linux the page faults of buffers over
glibc's 32 MB mmap threshold, mapped afresh on every call; ``sys_share`` is the kernel's part
of the CPU time, ``user_exponent`` the exponent of the rest).

Set against what each type must pay: dot attention forms the N×N weights of its dim (O(N²) for
spatiotemporal; its spatial and temporal nodes attend within frames or over frames, in
between), map attention forms N weights (O(N)). Goals: dot exponent <= 2.2 (O(N²), 0.2 for
timing noise), map exponent <= 1.2 (O(N); a map node growing faster is a defect), levels
exponent <= 1.2 (m levels cost m times one).

``map_parameter_exponent`` fits the map nodes' parameter count the same way, against the same
O(N): it is where map attention is not linear. G2, the MLP N -> max(8, N // 4) -> N over the
positions (``MapAttention``), holds N²/2 weights, against C_in·(C' + C_op) for G1 and G3. Its
multiply-adds are a small share at these widths (``mlp_flop_share``), but its weights are read
and written on every step, and at the paper's I3D Mixed_4b (512, 16, 14, 14) one (map,
spatiotemporal) node holds 5.05M parameters, 4.92M of them in G2
(``paper_map_spatiotemporal_node``; the whole I3D has about 12M). On a missed goal
``details["limit"]`` holds the top profile lines of the variant at the largest N (or m), or for
the parameters where they sit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from attnas.ops import build_op
from attnas.ops.map_attention import MapAttention
from attnas.space import load_space
from attnas.supergraph import SuperGraph
from experiments.bench import BenchConfig, BenchResult, profile_lines
from experiments.bench.search_cost import interleaved_clock_times

NAME = "growth"
CHANNELS, OP_CHANNELS = 64, 16
ACTIVATIONS = ("none", "relu", "sigmoid", "softmax")
DIMS = ("spatial", "temporal", "spatiotemporal")
TYPES = ("map", "dot")
GOALS = {"map": 1.2, "dot": 2.2, "levels": 1.2}


def ladder(cfg: BenchConfig) -> list[tuple[int, int, int]]:
    """The (T, H, W) of each rung; N doubles from one to the next."""
    full = [(4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8), (8, 8, 16), (8, 16, 16)]
    return cfg.pick([(2, 2, 2), (2, 2, 4), (2, 4, 4)], full[:5], full)


def workload(cfg: BenchConfig) -> dict[str, Any]:
    """Batch, the N ladder, the levels and the shape the levels are measured at."""
    return {
        "batch": cfg.pick(1, 2, 4),
        "ladder": ladder(cfg),
        "levels": cfg.pick((1, 2), (1, 2, 4), (1, 2, 4, 8)),
        "levels_shape": cfg.pick((2, 2, 4), (4, 4, 8), (4, 8, 8)),
    }


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any]:
    """The growth exponent k of ``y ∝ x^k`` where x is largest.

    ``k`` is the local slope ``log(y_n / y_{n-1}) / log(x_n / x_{n-1})`` between the two
    largest x: there the fixed per-call cost weighs least. The details keep every local slope,
    the plain log-log slope over all points and the fit of ``y = a + b·x^k`` (a, b >= 0, least
    squares relative to y over k in [0, 3]; it needs >= 3 points).

    Returns:
        ``{"k", "method": "top slope", "slopes", "log_log", "fixed_power": {"k", "fixed": a /
        y_0} or None}``.
    """
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    slopes = [(b - a) / (d - c) for a, b, c, d in zip(ly, ly[1:], lx, lx[1:])]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((u - mx) ** 2 for u in lx)
    log_log = sum((u - mx) * (v - my) for u, v in zip(lx, ly)) / den if den else float("nan")
    return {
        "k": round(slopes[-1], 3),
        "method": "top slope",
        "slopes": [round(v, 3) for v in slopes],
        "log_log": round(log_log, 3),
        "fixed_power": _fixed_power(xs, ys) if len(xs) >= 3 else None,
    }


def _fixed_power(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """``y = a + b·x^k`` (a, b >= 0) by least squares relative to y, k on a 0.005 grid in [0, 3]."""
    best: tuple[float, float, float] | None = None  # (error, k, a)
    w = [1.0 / y**2 for y in ys]
    for step in range(601):
        k = step * 0.005
        us = [x**k for x in xs]
        s1, su = sum(w), sum(wi * u for wi, u in zip(w, us))
        suu = sum(wi * u * u for wi, u in zip(w, us))
        sy, suy = (
            sum(wi * y for wi, y in zip(w, ys)),
            sum(wi * u * y for wi, u, y in zip(w, us, ys)),
        )
        det = s1 * suu - su * su
        a, b = (
            ((suu * sy - su * suy) / det, (s1 * suy - su * sy) / det) if det > 1e-300 else (-1, 0)
        )
        if a < 0 or b < 0:
            a, b = 0.0, suy / suu  # no fixed cost
        err = sum(wi * (a + b * u - y) ** 2 for wi, u, y in zip(w, us, ys))
        if best is None or err < best[0] - 1e-15:
            best = (err, k, a)
    assert best is not None
    return {"k": round(best[1], 3), "fixed": round(best[2] / ys[0], 3)}


def _supergraph(
    levels: int, nodes: Sequence[tuple[str, str]], thw: tuple[int, int, int], device: torch.device
) -> SuperGraph:
    sg = SuperGraph(
        levels, list(nodes), CHANNELS, OP_CHANNELS, (CHANNELS, *thw), [ACTIVATIONS] * len(nodes)
    ).to(device)
    sg.arch_weights.to(device)
    with torch.no_grad():  # a live residual branch (the zero init would cut the sink's gradient)
        sg.out_norm.weight.fill_(1.0)
    return sg.train()


def _step(sg: SuperGraph, x: torch.Tensor, proj: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of ``<sg(x), proj>``, gradients reset first."""

    def step() -> None:
        sg.zero_grad(set_to_none=True)
        sg.arch_weights.zero_grad(set_to_none=True)
        (sg(x) * proj).sum().backward()

    return step


def _flops(sg: SuperGraph, x: torch.Tensor) -> tuple[int, int]:
    """FLOPs of one forward: in all, and in the map nodes' G2 MLPs."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        sg(x)
    counts = counter.get_flop_counts()
    mlp = sum(
        sum(v.values())
        for k, v in counts.items()
        if k.endswith(".g2")
        and isinstance(sg.get_submodule(k.split(".", 1)[1]), torch.nn.Sequential)
    )
    return int(counter.get_total_flops()), int(mlp)


def _node_parameters(sg: SuperGraph) -> tuple[int, int]:
    """Parameters of the nodes (sink and BatchNorm left out), and of the map nodes' G2 MLPs."""
    total = sum(p.numel() for p in sg.nodes.parameters())
    mlp = sum(
        p.numel()
        for row in sg.nodes
        for op in row
        if isinstance(op, MapAttention)
        for p in op.g2.parameters()
    )
    return total, mlp


def paper_map_node(shape: tuple[int, int, int, int] = (512, 16, 14, 14)) -> dict[str, int]:
    """A (map, spatiotemporal) node at the paper's I3D Mixed_4b (64×224² clips), on the meta
    device: its parameters and its G2 MLP's."""
    with torch.device("meta"):
        op = build_op(("map", "spatiotemporal", "softmax"), shape[0], shape[0] // 4, shape)
    return {
        "shape": list(shape),
        "N": math.prod(shape[1:]),
        "parameters": sum(p.numel() for p in op.parameters()),
        "mlp_parameters": sum(p.numel() for p in op.g2.parameters()),
    }


def _variants(cfg: BenchConfig) -> dict[str, tuple[str, int, tuple[int, int, int], list]]:
    """``{key: (family, levels, (T, H, W), nodes)}`` of every measured supergraph."""
    paper = list(load_space("attention_nas").supergraph.nodes)
    w = workload(cfg)
    out: dict[str, tuple[str, int, tuple[int, int, int], list]] = {}
    for thw in w["ladder"]:
        n = math.prod(thw)
        for ty in TYPES:
            out[f"{ty}@N={n}"] = (ty, 1, thw, [(ty, d) for d in DIMS])
            for d in DIMS:
                out[f"{ty}/{d}@N={n}"] = (f"{ty}/{d}", 1, thw, [(ty, d)])
        out[f"supergraph@N={n}"] = ("supergraph", 2, thw, paper)
    for m in w["levels"]:
        out[f"supergraph@m={m}"] = ("levels", m, w["levels_shape"], paper)
    return out


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Fitted exponents in N of each op type and the supergraph, and in m of the supergraph."""
    dev = cfg.device
    w = workload(cfg)
    fns, flops, mlp_flops, params, mlp_params = {}, {}, {}, {}, {}
    variants = _variants(cfg)
    for key, (_, levels, thw, nodes) in variants.items():
        torch.manual_seed(cfg.seed)
        sg = _supergraph(levels, nodes, thw, dev)
        x = torch.randn(w["batch"], CHANNELS, *thw, device=dev)  # (B, C, T, H, W)
        proj = torch.randn_like(x)
        fns[key] = _step(sg, x, proj)
        flops[key], mlp_flops[key] = _flops(sg, x)
        params[key], mlp_params[key] = _node_parameters(sg)
    clocks = interleaved_clock_times(fns, cfg.rounds(5, 7), max(cfg.warmup, 1), dev, rewarm=True)
    clock = "cpu" if dev.type == "cpu" else "wall"
    times = clocks[clock]
    median_ms = {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()}
    wall_ms = {k: round(statistics.median(v) * 1e3, 3) for k, v in clocks["wall"].items()}
    sys_share = {  # the kernel's part of the CPU time (page faults of fresh large buffers)
        k: round(sum(clocks["sys"][k]) / max(sum(clocks["cpu"][k]), 1e-12), 3) for k in fns
    }
    user_ms = {k: max(median_ms[k] * (1 - sys_share[k]), 1e-6) for k in fns}

    def series(family: str) -> tuple[list[str], list[int]]:
        chosen = [(k, v) for k, v in variants.items() if v[0] == family]
        xs = [v[1] if family == "levels" else math.prod(v[2]) for _, v in chosen]
        return [k for k, _ in chosen], xs

    fits: dict[str, dict[str, Any]] = {}
    for family in {v[0] for v in variants.values()}:
        keys, xs = series(family)
        fits[family] = {
            "x": xs,
            "ms": [median_ms[k] for k in keys],
            "wall_ms": [wall_ms[k] for k in keys],
            "sys_share": [sys_share[k] for k in keys],
            "flops": [flops[k] for k in keys],
            "mlp_flops": [mlp_flops[k] for k in keys],
            "parameters": [params[k] for k in keys],
            "mlp_parameters": [mlp_params[k] for k in keys],
            "time": fit_exponent(xs, [median_ms[k] for k in keys]),
            "user_exponent": fit_exponent(xs, [user_ms[k] for k in keys])["k"],
            "flop_exponent": fit_exponent(xs, [flops[k] for k in keys])["k"],
            "parameter_exponent": fit_exponent(xs, [params[k] for k in keys])["k"],
        }
    ns = [math.prod(t) for t in w["ladder"]]
    common = {
        "channels": CHANNELS,
        "op_channels": OP_CHANNELS,
        "batch": w["batch"],
        "ladder_thw": [list(t) for t in w["ladder"]],
        "N": ns,
        "rounds": len(next(iter(times.values()))),
        "clock": "process CPU time (time.process_time)" if clock == "cpu" else "wall clock",
        "step": "forward + backward of <supergraph(x), random projection>, 4 activations mixed",
    }
    map_crossover = {
        "level_1": 2 * CHANNELS * (OP_CHANNELS + OP_CHANNELS),
        "level_2": 2 * OP_CHANNELS * (OP_CHANNELS + OP_CHANNELS),
    }
    results = []
    for ty, bound, order in (("map", GOALS["map"], "O(N)"), ("dot", GOALS["dot"], "O(N^2)")):
        fit = fits[ty]
        details = {
            **common,
            "nodes": [f"{ty}/{d}" for d in DIMS],
            "ms": fit["ms"],
            "wall_ms": fit["wall_ms"],
            "sys_share": fit["sys_share"],
            "user_exponent": fit["user_exponent"],
            "flops": fit["flops"],
            "fit": fit["time"],
            "flop_exponent": fit["flop_exponent"],
            "per_dim": {
                d: {
                    "ms": fits[f"{ty}/{d}"]["ms"],
                    "exponent": fits[f"{ty}/{d}"]["time"]["k"],
                    "fit": fits[f"{ty}/{d}"]["time"],
                    "flop_exponent": fits[f"{ty}/{d}"]["flop_exponent"],
                }
                for d in DIMS
            },
            "expected": order,
        }
        if ty == "map":
            details["map_mlp_crossover_N"] = map_crossover
        largest = f"{ty}@N={ns[-1]}"
        results.append(
            _exponent_row(
                f"{NAME}/{ty}_exponent",
                f"{ty} nodes: growth exponent in N <= {bound:g} ({order})",
                fit["time"]["k"],
                bound,
                details,
                lambda f=fns[largest], fit=fit: [
                    f"at N={ns[-1]}: time exponent {fit['time']['k']:.2f}, FLOP exponent "
                    f"{fit['flop_exponent']:.2f} (time above FLOPs: memory traffic); "
                    f"{100 * fit['sys_share'][-1]:.0f}% of the CPU time in the kernel (page "
                    "faults: glibc maps every buffer over 32 MB afresh)",
                    *profile_lines(f, dev),
                ],
            )
        )
    mp = fits["map"]
    paper = paper_map_node()
    results.append(
        _exponent_row(
            f"{NAME}/map_parameter_exponent",
            f"map nodes: growth exponent in N of their parameters <= {GOALS['map']:g} (O(N))",
            mp["parameter_exponent"],
            GOALS["map"],
            {
                **common,
                "parameters": mp["parameters"],
                "mlp_parameters": mp["mlp_parameters"],
                "mlp_flop_share": [round(a / b, 4) for a, b in zip(mp["mlp_flops"], mp["flops"])],
                "per_dim": {
                    d: {
                        "parameters": fits[f"map/{d}"]["parameters"],
                        "mlp_parameters": fits[f"map/{d}"]["mlp_parameters"],
                        "exponent": fits[f"map/{d}"]["parameter_exponent"],
                    }
                    for d in DIMS
                },
                "paper_map_spatiotemporal_node": paper,
            },
            lambda: [
                "G2, the MLP N -> max(8, N // 4) -> N over the positions (MapAttention), holds "
                f"{mp['mlp_parameters'][-1]:,} of the map nodes' {mp['parameters'][-1]:,} "
                f"parameters at N={ns[-1]}: N²/2, against G1 and G3's C_in·(C' + C_op)",
                f"at the paper's I3D Mixed_4b {tuple(paper['shape'])} (N={paper['N']}) one "
                f"map/spatiotemporal node holds {paper['parameters']:,} parameters, "
                f"{paper['mlp_parameters']:,} of them in G2",
            ],
        )
    )
    sg_fit = fits["supergraph"]
    results.append(
        BenchResult(
            name=f"{NAME}/supergraph_exponent",
            goal="reported: growth exponent in N of the paper's supergraph (2 levels, 6 nodes)",
            value=sg_fit["time"]["k"],
            unit="exponent",
            met=None,
            details={
                **common,
                "ms": sg_fit["ms"],
                "flops": sg_fit["flops"],
                "fit": sg_fit["time"],
                "flop_exponent": sg_fit["flop_exponent"],
                "cost_over_smallest": [round(t / sg_fit["ms"][0], 3) for t in sg_fit["ms"]],
            },
        )
    )
    lv = fits["levels"]
    results.append(
        _exponent_row(
            f"{NAME}/levels_exponent",
            f"paper's supergraph: growth exponent in levels m <= {GOALS['levels']:g} (O(m))",
            lv["time"]["k"],
            GOALS["levels"],
            {
                **common,
                "levels": lv["x"],
                "shape_thw": list(w["levels_shape"]),
                "ms": lv["ms"],
                "flops": lv["flops"],
                "fit": lv["time"],
                "flop_exponent": lv["flop_exponent"],
                "cost_over_one_level": [round(t / lv["ms"][0], 3) for t in lv["ms"]],
            },
            lambda: (
                [f"at m={lv['x'][-1]}", *profile_lines(fns[f"supergraph@m={lv['x'][-1]}"], dev)]
            ),
        )
    )
    return results


def _exponent_row(
    name: str,
    goal: str,
    value: float,
    bound: float,
    details: dict[str, Any],
    limit: Callable[[], list[str]],
) -> BenchResult:
    met = bool(value <= bound)
    if not met:
        details = {**details, "limit": limit()}
    return BenchResult(name, goal, round(float(value), 3), "exponent", met, details)
