"""Plain-data descriptions of a training run: ``TrainConfig``, ``TrialSpec``, ``TrialResult``.

All three are frozen dataclasses that round-trip through ``to_dict`` / ``from_dict`` (and so
JSON/YAML): a GPB trial travels to a worker process or a Ray actor as a dict, and the resolved
config logged by the tracker is ``spec.to_dict()``. ``from_dict`` rejects unknown keys with a
message naming them, so a typo in a config fails before any training.

Design choices where the spec is silent:

- ``warmup_epochs`` may be fractional; the schedule is per optimiser step (``warmup_steps =
  round(warmup_epochs * steps_per_epoch)``).
- ``amp`` applies on CUDA only; on CPU training runs in float32 whatever ``amp`` says (CPU
  autocast is slower than float32 for 3D convolutions on the machines this was measured on).
- The per-trial seed is ``derive_seed(master_seed, trial_key)`` when ``trial_key`` is given,
  else ``train.seed``.
- Programmatic pieces (a module factory such as the supergraph's, trainer hooks, parameters
  excluded from the network optimiser) are keyword arguments of ``run_trial``, not spec
  fields, so that a spec stays plain data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from attnas.train.seeding import derive_seed

_T = TypeVar("_T")

_OPTIMIZERS = ("sgd", "adamw")
_AMP = ("none", "bf16", "fp16")


def _check_keys(cls: type, data: Mapping[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KeyError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, schedule, precision, batch, determinism.

    Attributes:
        epochs: Training epochs.
        batch_size: Clips per optimiser step *per process* (the global batch under DDP is
            ``batch_size * world_size``).
        val_batch_size: Evaluation batch (None: ``batch_size``).
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr: Peak learning rate (reached at the end of warm-up).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        betas: AdamW betas.
        weight_decay: Decoupled for AdamW, L2 for SGD (as torch implements them).
        warmup_epochs: Linear warm-up length in epochs (fractional allowed).
        min_lr_ratio: Final learning rate of the cosine as a fraction of ``lr``.
        label_smoothing: Cross-entropy label smoothing for training (evaluation loss is plain).
        grad_clip: Max global gradient norm (None: no clipping).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast (CUDA only; fp16 uses a GradScaler).
        channels_last: Use ``torch.channels_last_3d`` memory format (CUDA only).
        deterministic: Deterministic algorithms and seeded data order/workers.
        seed: The run's seed (see ``TrialSpec.trial_key`` for per-trial seeds).
        num_workers: DataLoader workers.
        drop_last: Drop the last incomplete training batch (keeps BatchNorm and DDP batches
            full-sized).
        max_steps_per_epoch: Cap on optimiser steps per epoch (None: the whole loader).
        sync_batchnorm: Convert BatchNorm to SyncBatchNorm under DDP.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        progress: Show a tqdm bar (None: only when stderr is a terminal).
        checkpoint_every: Save a checkpoint every this many epochs (0: never; the last epoch
            is always saved when checkpointing is on).
        max_val_nonfinite: Largest fraction of the last epoch's validation clips whose outputs
            may be non-finite (NaN or infinite logits) before the trial fails. Such clips
            always count as errors in top-1/top-5, are left out of ``val_loss`` and are
            reported (``val_nonfinite``, every epoch); a larger fraction at the last epoch
            raises ``NonFiniteOutputError``. Default 0.0: any non-finite output in the trial's
            final evaluation fails it, as a non-finite training loss does (1.0 never fails).
    """

    epochs: int = 1
    batch_size: int = 16
    val_batch_size: int | None = None
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    deterministic: bool = False
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = True
    max_steps_per_epoch: int | None = None
    sync_batchnorm: bool = False
    device: str = "auto"
    progress: bool | None = None
    checkpoint_every: int = 1
    max_val_nonfinite: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"TrainConfig.optimizer must be one of {list(_OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.amp not in _AMP:
            raise ValueError(f"TrainConfig.amp must be one of {list(_AMP)}, got {self.amp!r}")
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_epochs < 0:
            raise ValueError(f"TrainConfig.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 <= self.max_val_nonfinite <= 1:
            raise ValueError(
                f"TrainConfig.max_val_nonfinite must be in [0, 1], got {self.max_val_nonfinite}"
            )
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain dict.

        Raises:
            KeyError: For unknown keys (the message names them).
        """
        _check_keys(cls, data)
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrialSpec:
    """One training + evaluation run: backbone, inserted modules, data, training config.

    Attributes:
        backbone: Registry name (``attnas.backbones.list_backbones()``).
        cell: What to insert at each position: ``"none"``, ``"nonlocal"`` (``NonLocalBlock(C,
            C // 2)``), a cell file path (YAML/JSON), or a ``CellSpec`` as a dict.
        positions: Insertion points (None: the backbone's 5 default positions).
        op_channel_ratio: ``C_op = max(1, round(C * op_channel_ratio))`` for cells.
        op_params: Per-op-type options for ``build_op`` (a space file's ``op_types.*.params``).
        dataset: Registry name (``attnas.data.list_datasets()``).
        dataset_kwargs: Builder arguments for both splits.
        train_kwargs: Builder arguments for the train split only.
        val_kwargs: Builder arguments for the val split only.
        num_classes: Classes (None: the dataset's ``num_classes``).
        input_shape: Clip shape ``(3, T, H, W)`` (None: the dataset's ``clip_shape``).
        backbone_kwargs: Extra backbone builder arguments.
        backbone_checkpoint: Local weights for the backbone, loaded strictly except for a
            classifier head of another size (``load_backbone_checkpoint``).
        temporal_kernels_one: Replace every temporal kernel by 1 (a frame-wise control model,
            see ``attnas.train.temporal``).
        train: The training config.
        master_seed: Master seed of the search/experiment.
        trial_key: Key that derives this trial's seed from ``master_seed`` (None: use
            ``train.seed``).
        run_dir: Where checkpoints, ``metrics.jsonl`` and ``result.json`` go (None: nowhere).
        resume: Continue from ``run_dir``'s last checkpoint when there is one.
        tracker: ``"jsonl"``, ``"wandb"`` or ``"none"`` (JSONL is written whenever there is a
            ``run_dir``).
        raise_on_failure: Re-raise trial failures instead of returning ``status="failed"``.
        name: Human-readable name (wandb run name).
    """

    backbone: str = "i3d_tiny"
    cell: str | dict[str, Any] = "none"
    positions: tuple[str, ...] | None = None
    op_channel_ratio: float = 0.25
    op_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: str = "moving_digits"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    val_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: tuple[int, int, int, int] | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_checkpoint: str | None = None
    temporal_kernels_one: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    master_seed: int = 0
    trial_key: str | None = None
    run_dir: str | None = None
    resume: bool = False
    tracker: str = "jsonl"
    raise_on_failure: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.train, Mapping):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(self.positions))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if not 0 < self.op_channel_ratio <= 1:
            raise ValueError(
                f"TrialSpec.op_channel_ratio must be in (0, 1], got {self.op_channel_ratio}"
            )
        if self.run_dir is not None:
            object.__setattr__(self, "run_dir", str(self.run_dir))

    @property
    def seed(self) -> int:
        """The trial's seed: ``derive_seed(master_seed, trial_key)`` or ``train.seed``."""
        if self.trial_key is None:
            return self.train.seed
        return derive_seed(self.master_seed, self.trial_key)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the nested ``train`` config included)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["train"] = self.train.to_dict()
        return _plain(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        """Build from a plain dict (``train`` may be a dict).

        Raises:
            KeyError: For unknown keys (the message names them).
        """
        _check_keys(cls, data)
        return cls(**dict(data))

    def to_json(self) -> str:
        """JSON text of ``to_dict()``."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrialSpec:
        """Parse the JSON written by ``to_json``."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> TrialSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrialResult:
    """What a trial returns (and what the trial store records).

    Attributes:
        status: ``"completed"`` or ``"failed"``.
        error: Error text of a failed trial (exception type, message and traceback tail).
        top1: Final validation top-1 accuracy in [0, 1] (None if not reached).
        top5: Final validation top-5 accuracy (top-k with k = min(5, classes)).
        val_loss: Final validation cross-entropy (over the clips with finite outputs).
        val_nonfinite: Validation clips of the last evaluated epoch whose outputs were not
            finite (counted as errors in ``top1``/``top5``; see
            ``TrainConfig.max_val_nonfinite``).
        history: One dict per completed epoch: ``epoch``, ``train_loss``, ``train_acc``,
            ``val_loss``, ``val_top1``, ``val_top5``, ``val_nonfinite``, ``lr``,
            ``epoch_time_s``, ``clips_per_s``, ``skipped_items``.
        wall_time_s: Seconds from the start of ``run_trial`` to the end.
        peak_memory_mb: Peak CUDA memory allocated (CUDA) or the process's peak resident set
            size (CPU; a lifetime maximum of the process, so an upper bound for one trial).
        num_parameters: Trainable and frozen parameters of the model with inserted modules.
        flops: FLOPs of one forward pass of one clip (``attnas.backbones.count_flops``).
        seed: The seed the trial ran with.
        epochs_completed: Epochs finished (including those restored by resume).
        data_failures: ``"<split> <kind>: path: reason"`` of every video dropped as unreadable
            when the dataset opened it or skipped by the data loaders.
        num_classes: Classes of the classifier (top-5 says nothing with 5 or fewer).
        data_report: ``{split: {kind: {path: detail}}}`` with kinds ``unreadable``,
            ``decode_failed`` and ``padded`` (``attnas.train.run.data_report``); ``{}`` when
            every video was read in full.
        run_dir: The run directory, if any.
    """

    status: Literal["completed", "failed"]
    error: str | None = None
    top1: float | None = None
    top5: float | None = None
    val_loss: float | None = None
    val_nonfinite: int | None = None
    history: tuple[dict[str, float], ...] = ()
    wall_time_s: float = 0.0
    peak_memory_mb: float | None = None
    num_parameters: int | None = None
    flops: int | None = None
    seed: int | None = None
    epochs_completed: int = 0
    data_failures: tuple[str, ...] = ()
    data_report: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    run_dir: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("completed", "failed"):
            raise ValueError(
                f"TrialResult.status must be 'completed' or 'failed', got {self.status!r}"
            )
        object.__setattr__(self, "history", tuple(dict(h) for h in self.history))
        object.__setattr__(self, "data_failures", tuple(self.data_failures))

    @property
    def ok(self) -> bool:
        """Whether the trial completed."""
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialResult:
        """Build from a plain dict.

        Raises:
            KeyError: For unknown keys (the message names them).
        """
        _check_keys(cls, data)
        return cls(**dict(data))
