"""Benchmark 4: position-specific ÷ position-agnostic search, epoch time and peak memory.

Both runs are the search of benchmark 3 (``i3d_tiny``, a supergraph at each of the 5 default
positions, the same synthetic batches, joint network + connection-weight steps); they differ
only in the connection weights: one ``ArchitectureWeights`` shared by every supergraph
(agnostic) or one per position (specific), which adds only the small weight tensors and
their softmaxes. Goal: both ratios <= 1.02.
"""

from __future__ import annotations

import torch

from attnas.space import load_space
from experiments.bench import (
    MIB,
    BenchConfig,
    BenchResult,
    interleaved_times,
    ms,
    paired_ratio,
    profile_lines,
    ratio_result,
)
from experiments.bench.search_cost import (
    epoch_fn,
    step_peak,
    supergraph_model,
    synthetic_batches,
    workload,
)

NAME = "position_specific"


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Epoch-time and peak-memory ratios of position-specific over position-agnostic search."""
    space = load_space("attention_nas")
    batches = synthetic_batches(cfg)
    models = {}
    for key, specific in (("agnostic", False), ("specific", True)):
        model, arch, factory = supergraph_model(cfg, space, specific)
        models[key] = (model, arch, len(factory.weights))
    fns = {key: epoch_fn(model, batches, arch) for key, (model, arch, _) in models.items()}
    times = interleaved_times(fns, cfg.rounds(5, 7), min(cfg.warmup, 1), cfg.device)
    peaks = {key: step_peak(model, batches[0], cfg.device) for key, (model, _, _) in models.items()}
    w = workload(cfg)
    common = {
        "backbone": "i3d_tiny",
        "batch": w["batch"],
        "clip": list(w["clip"]),
        "steps_per_epoch": w["steps"],
        "epoch": "fixed number of steps on synthetic batches (no data loading)",
        "weight_sets": {key: n for key, (_, _, n) in models.items()},
        "arch_parameters": {
            key: sum(p.numel() for p in arch) for key, (_, arch, _) in models.items()
        },
    }
    time_details = {
        **common,
        "rounds": len(times["specific"]),
        "specific_epoch_ms": ms(times["specific"]),
        "agnostic_epoch_ms": ms(times["agnostic"]),
    }
    mem_details = {
        **common,
        "specific_step_peak_mib": round(peaks["specific"] / MIB, 3),
        "agnostic_step_peak_mib": round(peaks["agnostic"] / MIB, 3),
    }
    specific_model = models["specific"][0]
    x, y = batches[0]

    def specific_step() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(specific_model(x), y)

    return [
        ratio_result(
            f"{NAME}/epoch_time",
            1.02,
            paired_ratio(times["specific"], times["agnostic"]),
            time_details,
            limit=lambda: profile_lines(fns["specific"], cfg.device),
            goal="position-specific <= 1.02x position-agnostic epoch time",
        ),
        ratio_result(
            f"{NAME}/peak_memory",
            1.02,
            peaks["specific"] / max(peaks["agnostic"], 1),
            mem_details,
            limit=lambda: profile_lines(lambda: specific_step().backward(), cfg.device, "memory"),
            goal="position-specific <= 1.02x position-agnostic peak memory",
        ),
    ]
