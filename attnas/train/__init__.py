"""Training and evaluation of one model: ``run_trial(spec) -> TrialResult`` and the ``Trainer``.

``run_trial`` is the single code path of ``attnas-train``, every GPB trial and the supergraph
search's weight updates (through ``Trainer`` hooks). ``python -m attnas.train SPEC.json`` (or
``torchrun --nproc_per_node N -m attnas.train SPEC.json``) runs a spec file, data-parallel
under torchrun.
"""

from __future__ import annotations

from attnas.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from attnas.train.datasets import build_datasets, heldout_loader, split_dataset
from attnas.train.distributed import (
    DistInfo,
    all_reduce_sum,
    cleanup_distributed,
    dist_info,
    init_distributed,
)
from attnas.train.run import build_model, cell_factory, run_trial
from attnas.train.seeding import derive_seed, deterministic_mode, seed_everything, seed_worker
from attnas.train.spec import TrainConfig, TrialResult, TrialSpec
from attnas.train.temporal import set_temporal_kernels_to_one
from attnas.train.trainer import (
    NonFiniteLossError,
    NonFiniteOutputError,
    Trainer,
    TrainerHook,
    WarmupCosine,
    unscale_and_check,
)

__all__ = [
    "DistInfo",
    "NonFiniteLossError",
    "NonFiniteOutputError",
    "TrainConfig",
    "Trainer",
    "TrainerHook",
    "TrialResult",
    "TrialSpec",
    "WarmupCosine",
    "all_reduce_sum",
    "build_datasets",
    "build_model",
    "cell_factory",
    "cleanup_distributed",
    "derive_seed",
    "deterministic_mode",
    "dist_info",
    "heldout_loader",
    "init_distributed",
    "load_checkpoint",
    "rng_state",
    "run_trial",
    "save_checkpoint",
    "seed_everything",
    "seed_worker",
    "set_rng_state",
    "set_temporal_kernels_to_one",
    "split_dataset",
    "unscale_and_check",
]
