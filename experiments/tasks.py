"""CPU-sized tasks and result bookkeeping shared by the experiment scripts.

A *task* is a dataset with its clip settings, sized so that one training run of a tiny backbone
takes seconds (``quick``) to minutes (``full``) on a CPU:

- ``moving_digits``: the embedded motion task (labels are directions of motion, so a model
  without temporal modelling stays near chance), 4 classes, 8 frames of 32×32.
- ``weizmann4``: the small real action set in ``../shared/data/weizmann4`` (72 clips, 4
  classes, mirror-pair-safe split), 8 frames at stride 2 resized to 32×32; used only when the
  folder is present (``weizmann4_available``).

Design choices: the tasks live here rather than in Hydra configs because the experiment
scripts are plain ``argparse`` programs (STYLE.md lets ``experiments/`` know Hydra, but nothing
here needs composition); every number they produce is recomputable from the JSON they write,
which records the full ``TrialSpec`` of each run. Spread over seeds is the sample standard
deviation (``ddof=1``; 0 for a single seed).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attnas.data import DEFAULT_WEIZMANN4_ROOT
from attnas.train import TrainConfig, TrialSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "experiments" / "results"
TASKS = ("moving_digits", "weizmann4")


def weizmann4_available(root: str | Path | None = None) -> bool:
    """Whether the weizmann4 folder (with its ``clips.csv``) is present."""
    return (Path(root or DEFAULT_WEIZMANN4_ROOT) / "clips.csv").is_file()


def task_spec(
    task: str,
    *,
    backbone: str = "i3d_tiny",
    train_clips: int = 256,
    val_clips: int = 128,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 2e-3,
    data_seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str = "auto",
) -> TrialSpec:
    """The ``TrialSpec`` of one training run on a task (cell ``"none"``; callers replace it).

    Args:
        task: ``"moving_digits"`` or ``"weizmann4"``.
        backbone: backbone registry name.
        train_clips: training clips (moving_digits only; weizmann4 has its own 54/18 split).
        val_clips: validation clips (moving_digits only).
        epochs: training epochs.
        batch_size: clips per step.
        lr: peak AdamW learning rate (cosine to 0 after a short warm-up; AdamW at 2e-3 is
            what trains the tiny backbones reliably in a few epochs, SGD at 0.05 did not).
        data_seed: the dataset's seed (generation for moving_digits, split for weizmann4).
        cache_dir: decoded-clip cache for weizmann4 (None: decode every epoch).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...

    Returns:
        The spec (no tracker, no run directory).

    Raises:
        ValueError: for an unknown task.
    """
    train = TrainConfig(
        epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=1e-4,
        warmup_epochs=min(0.5, epochs / 4), device=device, progress=False, checkpoint_every=0,
    )  # fmt: skip
    if task == "moving_digits":
        return TrialSpec(
            backbone=backbone,
            dataset="moving_digits",
            dataset_kwargs={"num_frames": 8, "size": 32, "num_classes": 4, "seed": data_seed},
            train_kwargs={"num_clips": train_clips},
            val_kwargs={"num_clips": val_clips},
            train=train,
            tracker="none",
        )
    if task == "weizmann4":
        kwargs: dict[str, Any] = {"num_frames": 8, "stride": 2, "size": 32, "seed": data_seed}
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        return TrialSpec(
            backbone=backbone, dataset="weizmann4", dataset_kwargs=kwargs, train=train,
            tracker="none",
        )  # fmt: skip
    raise ValueError(f"unknown task {task!r}; choose from {list(TASKS)}")


def with_seed(spec: TrialSpec, seed: int) -> TrialSpec:
    """``spec`` trained with another seed (initialisation and data order)."""
    return spec.replace(train=spec.train.replace(seed=int(seed)), trial_key=None)


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """``{"mean", "std", "n"}`` of ``values`` (sample std, 0 for one value; NaN when empty)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (user + system)."""
    own = time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + kids.ru_utime + kids.ru_stime


@contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Measure a block: yields a dict filled with ``wall_s`` and ``cpu_s`` when the block ends."""
    out: dict[str, float] = {}
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        yield out
    finally:
        out["wall_s"] = time.perf_counter() - wall
        out["cpu_s"] = cpu_seconds() - cpu


def machine() -> dict[str, Any]:
    """What the numbers were measured on (cores, torch threads, device)."""
    import platform

    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "platform": platform.platform(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
