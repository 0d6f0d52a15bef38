"""Costs and result of the differentiable search on the embedded task (issue 5's closing note).

``python experiments/supergraph_costs.py [timing|memory|accuracy|all] [--size 32] [--seeds 0]``

- ``timing``: one training step (forward, backward, network AdamW step; for supergraphs also the
  connection-weight Adam step, as in joint search) of i3d_tiny at its 5 default positions with
  (a) position-agnostic supergraphs, (b) position-specific supergraphs, (c) the derived cell
  (the α=3, β=1 cell derived from (a)'s weights), (d) nothing. Variants run interleaved
  (a, b, c, d, a, b, ...) on the same batch after warm-up; reported: median step time of each,
  the median of the per-round ratios, and the epoch time they imply (steps × median step).
- ``memory``: the same step in a fresh subprocess per variant; peak RSS (``ru_maxrss``) after
  building the model and after 3 training steps; the growth is the training's peak memory.
- ``accuracy``: ``run_differentiable_search(..., retrain=True)`` (joint, position-agnostic):
  the derived cell, the backbone alone and the backbone + non-local blocks at the same
  positions, each retrained from scratch with the same budget; val top-1 per seed.

Threads: ``OMP_NUM_THREADS`` as set by the caller (record it with the numbers).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attnas.backbones import build_backbone, insert_cells
from attnas.space import load_space
from attnas.supergraph import derive_cell
from attnas.supergraph.search import (
    DifferentiableSearchConfig,
    SupergraphFactory,
    derived_cell_factory,
    run_differentiable_search,
)
from attnas.train import TrainConfig, TrialSpec

VARIANTS = ("agnostic", "specific", "derived", "backbone")
BATCH = 16
NUM_CLASSES = 4  # moving digits' classes at the default settings


def _build(variant: str, size: int, frames: int, seed: int = 0) -> tuple[nn.Module, list]:
    """The model of a variant and its connection weights (empty for non-supergraph ones)."""
    torch.manual_seed(seed)
    space = load_space("attention_nas")
    model = build_backbone("i3d_tiny", NUM_CLASSES, (3, frames, size, size))
    if variant in ("agnostic", "specific"):
        factory = SupergraphFactory(space, position_specific=variant == "specific")
        insert_cells(model, None, factory)
        return model, factory.attach(model)
    if variant == "derived":
        probe = SupergraphFactory(space, position_specific=False)
        probe_model = build_backbone("i3d_tiny", NUM_CLASSES, (3, frames, size, size))
        insert_cells(probe_model, None, probe)
        weights = probe.weights["all"]
        with torch.no_grad():  # a fixed, non-degenerate set of connection weights
            g = torch.Generator().manual_seed(123)
            for p in weights.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        cell = derive_cell(weights, space.alpha, space.beta)
        positions = list(model.default_positions)
        insert_cells(
            model, None, derived_cell_factory({p: cell for p in positions}, space.op_channel_ratio)
        )
    return model, []


class _Stepper:
    """One joint-search training step for a model (network AdamW + connection-weight Adam)."""

    def __init__(self, model: nn.Module, arch: list, x: torch.Tensor, y: torch.Tensor):
        self.model, self.x, self.y = model.train(), x, y
        ids = {id(p) for p in arch}
        self.opt = torch.optim.AdamW([p for p in model.parameters() if id(p) not in ids], lr=2e-3)
        self.arch_opt = torch.optim.Adam(arch, lr=3e-3, betas=(0.5, 0.999)) if arch else None

    def __call__(self) -> None:
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        if self.arch_opt is not None:
            self.arch_opt.step()


def timing(size: int, frames: int, rounds: int, steps_per_epoch: int) -> dict[str, Any]:
    x = torch.randn(BATCH, 3, frames, size, size)  # (B, 3, T, H, W)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    steppers = {v: _Stepper(*_build(v, size, frames), x, y) for v in VARIANTS}
    for step in steppers.values():  # warm-up
        step()
        step()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v, step in steppers.items():
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(t) for v, t in times.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))

    return {
        "step_s_median": med,
        "epoch_s_implied": {v: med[v] * steps_per_epoch for v in VARIANTS},
        "ratio_supergraph_over_derived": ratio("agnostic", "derived"),
        "ratio_specific_over_agnostic": ratio("specific", "agnostic"),
        "ratio_derived_over_backbone": ratio("derived", "backbone"),
        "ratio_supergraph_over_backbone": ratio("agnostic", "backbone"),
        "rounds": rounds,
        "steps_per_epoch": steps_per_epoch,
    }


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _memory_child(variant: str, size: int, frames: int) -> None:
    x = torch.randn(BATCH, 3, frames, size, size)  # (B, 3, T, H, W)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    model, arch = _build(variant, size, frames)
    params = sum(p.numel() for p in model.parameters())
    built = _maxrss_mib()
    step = _Stepper(model, arch, x, y)
    for _ in range(3):
        step()
    peak = _maxrss_mib()
    print(
        json.dumps(
            {
                "variant": variant,
                "params": params,
                "rss_built_mib": built,
                "rss_peak_mib": peak,
                "train_growth_mib": peak - built,
            }
        )
    )


def memory(size: int, frames: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in VARIANTS:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "_memory_child",
                "--variant",
                v,
                "--size",
                str(size),
                "--frames",
                str(frames),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out[v] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_ratio_specific_over_agnostic"] = (
        out["specific"]["rss_peak_mib"] / out["agnostic"]["rss_peak_mib"]
    )
    out["growth_ratio_specific_over_agnostic"] = (
        out["specific"]["train_growth_mib"] / out["agnostic"]["train_growth_mib"]
    )
    return out


def accuracy(
    size: int,
    frames: int,
    seeds: list[int],
    epochs: int,
    train_clips: int,
    val_clips: int,
    out_dir: Path,
) -> dict[str, Any]:
    space = load_space("attention_nas")
    rows = []
    for seed in seeds:
        spec = TrialSpec(
            backbone="i3d_tiny",
            dataset="moving_digits",
            dataset_kwargs={"num_frames": frames, "size": size},
            train_kwargs={"num_clips": train_clips},
            val_kwargs={"num_clips": val_clips},
            train=TrainConfig(
                epochs=epochs,
                batch_size=BATCH,
                optimizer="adamw",
                lr=2e-3,
                progress=False,
                device="cpu",
                seed=seed,
            ),
            tracker="none",
        )
        t0 = time.perf_counter()
        result = run_differentiable_search(
            space, spec, DifferentiableSearchConfig(retrain=True), out_dir / f"seed{seed}"
        )
        row = {
            "seed": seed,
            "cell": next(iter(result.cells.values())).canonical(),
            "search_top1": result.search.top1,
            "search_epoch_s": [h["epoch_time_s"] for h in result.search.history],
            "wall_s": time.perf_counter() - t0,
        }
        for name, r in result.retrained.items():
            row[f"{name}_top1"] = r.top1
            row[f"{name}_epoch_s"] = [h["epoch_time_s"] for h in r.history]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"epochs": epochs, "train_clips": train_clips, "val_clips": val_clips, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["timing", "memory", "accuracy", "all", "_memory_child"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-clips", type=int, default=512)
    parser.add_argument("--val-clips", type=int, default=256)
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=Path("outputs/supergraph_costs"))
    args = parser.parse_args(argv)
    if args.what == "_memory_child":
        _memory_child(args.variant, args.size, args.frames)
        return
    report: dict[str, Any] = {
        "size": args.size,
        "frames": args.frames,
        "batch": BATCH,
        "threads": torch.get_num_threads(),
    }
    if args.what in ("timing", "all"):
        report["timing"] = timing(args.size, args.frames, args.rounds, args.train_clips // BATCH)
        print(json.dumps(report["timing"], indent=1), flush=True)
    if args.what in ("memory", "all"):
        report["memory"] = memory(args.size, args.frames)
        print(json.dumps(report["memory"], indent=1), flush=True)
    if args.what in ("accuracy", "all"):
        report["accuracy"] = accuracy(
            args.size,
            args.frames,
            args.seeds,
            args.epochs,
            args.train_clips,
            args.val_clips,
            args.out,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"report_{args.what}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
