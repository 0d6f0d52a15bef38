"""The benchmark's proxy protocol: a digit-pretrained backbone, frozen below the cells.

A trial of the tabular benchmark must cost a few CPU-seconds, and the attention-sensitive task
(``distant_match``) must be learnable within that budget by a network whose attention can carry
one digit's identity to the other digit's place. Training a 3D CNN from scratch does neither: a
pilot (i3d_tiny, 1,024 clips, 6 epochs, about 70 s) left the bare backbone and + non-local at
chance. So the protocol does what video backbones do in practice (I3D is inflated from ImageNet
weights): the backbone is first trained once on single-digit recognition (``digit_glyphs``,
which says nothing about relations), its stages up to and including ``split`` are then frozen
(eval mode, no gradient), and every trial trains only what follows: the cells inserted at
``positions`` (the first of which is ``split``), the remaining stages and the head.

Because the frozen prefix is deterministic and the clips are not augmented, its output is
computed once per process and cached (``FeatureCache``): a trial then runs the trainable part
on cached features, which is exactly the same computation as running the whole network with a
frozen prefix, at a fraction of the cost.

Everything a trial depends on is in ``ProxyProtocol`` (plain data, stored in the benchmark's
manifest); ``run_proxy_trial(protocol, cell, seed)`` is the one code path of the table build,
of its calibration and of the ground-truth retraining of derived cells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from attnas.train.spec import TrainConfig, TrialResult

logger = logging.getLogger("attnas.benchmark")

_READOUTS = ("backbone", "frozen", "local")


@dataclass(frozen=True)
class ProxyProtocol:
    """Everything a benchmark trial depends on.

    Attributes:
        backbone: Backbone registry name.
        split: Last frozen stage; the cached features are its output.
        positions: Insertion points of the cells (after ``split``, in stage order; the first is
            usually ``split`` itself).
        dataset: Task registry name.
        dataset_kwargs: Task builder options for both splits (difficulty knobs).
        train_clips: Training clips.
        val_clips: Validation clips.
        data_seed: Seed of the task's clips (fixed across trials: every cell sees the same data).
        op_channel_ratio: ``C_op = max(1, round(C * ratio))``.
        readout: What reads the cells' output: ``"backbone"`` (the pre-trained stages after
            ``split`` and the head, all trained), ``"frozen"`` (those stages frozen too; only
            the cells and the head train) or ``"local"`` (the stages after the last position
            are dropped; a new position-wise head reads the features: a 1×1×1 conv to
            ``readout_width`` channels, BatchNorm, ReLU, global average pool, linear).
        readout_width: Hidden width of the ``"local"`` readout.
        branch_init: Initial weight of the final BatchNorm of every inserted module (cell or
            non-local block). 0 is the identity-at-insertion convention of DESIGN.md; a proxy
            whose readout is trained from scratch may start the attention branch open instead.
        train: Training config of a trial (its ``seed`` is replaced by the trial's seed).
        pretrain_dataset: Pre-training task registry name.
        pretrain_clips: Pre-training clips.
        pretrain: Pre-training config.
    """

    backbone: str = "i3d_tiny"
    split: str = "Conv3d_2c_3x3"
    positions: tuple[str, ...] = ("Conv3d_2c_3x3",)
    dataset: str = "distant_match"
    dataset_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "num_frames": 4,
            "size": 32,
            "min_distance": 16.0,
            "show_frames": 1,
            "digit_classes": [0, 1],
        }
    )
    train_clips: int = 1024
    val_clips: int = 512
    data_seed: int = 0
    op_channel_ratio: float = 0.25
    readout: str = "local"
    readout_width: int = 64
    branch_init: float = 1.0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8,
            batch_size=64,
            optimizer="adamw",
            lr=3e-3,
            weight_decay=0.01,
            warmup_epochs=0.25,
            device="cpu",
            progress=False,
            checkpoint_every=0,
        )
    )
    pretrain_dataset: str = "digit_glyphs"
    pretrain_clips: int = 4096
    pretrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8,
            batch_size=32,
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.01,
            warmup_epochs=0.25,
            device="cpu",
            progress=False,
            checkpoint_every=0,
        )
    )

    def __post_init__(self) -> None:
        for name in ("train", "pretrain"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, TrainConfig.from_dict(value))
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "dataset_kwargs", dict(self.dataset_kwargs))
        if self.readout not in _READOUTS:
            raise ValueError(
                f"ProxyProtocol.readout must be one of {list(_READOUTS)}, got {self.readout!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["train"], data["pretrain"] = self.train.to_dict(), self.pretrain.to_dict()
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProxyProtocol:
        """Build from ``to_dict()`` output; unknown keys raise ``KeyError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise KeyError(f"ProxyProtocol: unknown key(s) {unknown}; valid: {sorted(names)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> ProxyProtocol:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def pretrain_key(self) -> str:
        """Hash of what the pre-trained weights depend on (names their file)."""
        keep = {
            k: self.to_dict()[k]
            for k in ("backbone", "pretrain_dataset", "pretrain_clips", "pretrain")
        }
        keep["size"] = {k: self.dataset_kwargs.get(k) for k in ("num_frames", "size")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]

    def clip_shape(self) -> tuple[int, int, int, int]:
        """The clip shape ``(3, T, H, W)`` of the task."""
        kw = self.dataset_kwargs
        size = int(kw.get("size", 32))
        return (3, int(kw.get("num_frames", 8)), size, size)


def _task_kwargs(protocol: ProxyProtocol) -> dict[str, Any]:
    return {k: v for k, v in protocol.dataset_kwargs.items()}


def pretrained_weights(protocol: ProxyProtocol, cache_dir: str | Path) -> Path:
    """The pre-trained backbone weights for a protocol, trained once and kept in ``cache_dir``.

    Training is deterministic (seed 0, deterministic mode), so every worker and every rebuild
    gets the same weights; the file is written atomically and named by
    ``protocol.pretrain_key()``.

    Returns:
        Path of a ``state_dict`` file of the backbone (loaded with ``weights_only=True``).
    """
    from attnas.backbones import build_backbone
    from attnas.data import build_dataset
    from attnas.train.seeding import seed_everything
    from attnas.train.trainer import Trainer

    cache_dir = Path(cache_dir)
    path = cache_dir / f"pretrained_{protocol.backbone}_{protocol.pretrain_key()}.pt"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    kw = {
        k: protocol.dataset_kwargs[k]
        for k in ("num_frames", "size")
        if k in protocol.dataset_kwargs
    }
    train = build_dataset(
        protocol.pretrain_dataset, split="train", num_clips=protocol.pretrain_clips, seed=0, **kw
    )
    val = build_dataset(protocol.pretrain_dataset, split="val", seed=0, **kw)
    seed_everything(0)
    model = build_backbone(protocol.backbone, int(train.num_classes), protocol.clip_shape())
    start = time.perf_counter()
    trainer = Trainer(
        model, train, val, protocol.pretrain.replace(seed=0, deterministic=True), seed=0
    )
    history = trainer.fit()
    logger.info(
        "pre-trained %s on %s in %.1f s: val top-1 %.3f",
        protocol.backbone,
        protocol.pretrain_dataset,
        time.perf_counter() - start,
        history[-1]["val_top1"],
    )
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "history": history}, tmp)
    tmp.replace(path)
    return path


class FeatureCache:
    """The frozen prefix's output for the task's train and val clips, computed once.

    Args:
        protocol: The protocol (backbone, split, task).
        weights: Pre-trained weights file (``pretrained_weights``).
        store: A folder to keep the features in between processes (each trial of a build is
            its own process). The file is named by the SHA-256 of the protocol and of the
            weights, so it is only ever reused for the same computation; it holds the very
            tensors a fresh computation gives, so loading it changes no result.
    """

    def __init__(
        self, protocol: ProxyProtocol, weights: str | Path, store: str | Path | None = None
    ) -> None:
        from attnas.backbones import build_backbone

        self.protocol = protocol
        model = build_backbone(protocol.backbone, 10, protocol.clip_shape())
        model.load_state_dict(torch.load(weights, weights_only=True)["state_dict"])
        model.eval()
        names = list(model.stages)
        if protocol.split not in names:
            raise ValueError(
                f"protocol split {protocol.split!r} is not a stage of {protocol.backbone}; "
                f"stages: {names}"
            )
        self.prefix = names[: names.index(protocol.split) + 1]
        self.state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
        path = None
        if store is not None:
            key = hashlib.sha256(json.dumps(protocol.to_dict(), sort_keys=True).encode())
            key.update(Path(weights).read_bytes())
            path = Path(store) / f"features_{key.hexdigest()[:16]}.pt"
        if path is not None and path.exists():
            saved = torch.load(path, weights_only=True)
            self.num_classes = int(saved["num_classes"])
            self.data = {k: TensorDataset(*saved[k]) for k in ("train", "val")}
            return
        self._compute(model)
        if path is not None:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            payload = {k: list(d.tensors) for k, d in self.data.items()}
            torch.save({**payload, "num_classes": self.num_classes}, tmp)
            os.replace(tmp, path)  # atomic: a concurrent reader sees all of it or nothing

    def _compute(self, model: nn.Module) -> None:
        from attnas.data import build_dataset

        protocol = self.protocol
        kw = _task_kwargs(protocol)
        self.data: dict[str, TensorDataset] = {}
        self.num_classes = 2
        for split, n in (("train", protocol.train_clips), ("val", protocol.val_clips)):
            ds = build_dataset(
                protocol.dataset, split=split, num_clips=n, seed=protocol.data_seed, **kw
            )
            self.num_classes = int(ds.num_classes)
            self.data[split] = self._features(model, ds)

    @torch.no_grad()
    def _features(self, model: nn.Module, ds: Dataset) -> TensorDataset:
        feats, labels = [], []
        loader = torch.utils.data.DataLoader(ds, batch_size=128)
        for x, y in loader:
            for name in self.prefix:
                x = model.stages[name](x)  # (B, C, T', H', W')
            feats.append(x)
            labels.append(y)
        return TensorDataset(torch.cat(feats), torch.cat(labels))


class _FrozenPrefix(nn.Module):
    """Stands in for a frozen stage whose output is already in the input (cached)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Frozen(nn.Module):
    """A pre-trained stage kept frozen: no gradient to its weights, BatchNorm in eval mode."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> _Frozen:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class LocalReadout(nn.Module):
    """Position-wise readout: 1×1×1 conv, BatchNorm, ReLU, global average pool, linear.

    Every position is read on its own before the pool, so whatever relates two far-apart
    positions must come from the modules before it (the cells).

    Shape:
        - Input: ``(B, C, T, H, W)``
        - Output: ``(B, num_classes)``
    """

    def __init__(self, channels: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, width, 1, bias=False)
        self.bn = nn.BatchNorm3d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))  # (B, width, T, H, W)
        return self.fc(x.mean(dim=(2, 3, 4)))  # (B, num_classes)


def build_proxy_model(
    protocol: ProxyProtocol, cache: FeatureCache, cell: Any, seed: int
) -> nn.Module:
    """The backbone with the pre-trained weights, frozen stages cut, and ``cell`` inserted.

    Args:
        protocol: The protocol.
        cache: Its feature cache (holds the pre-trained weights).
        cell: ``"none"``, ``"nonlocal"``, a ``CellSpec`` or its dict, or a module factory
            ``factory(position, shape) -> nn.Module`` (e.g. a supergraph factory).
        seed: Seed of the new parameters (cells, and nothing else: the rest is pre-trained).

    Returns:
        A model taking cached features ``(B, C, T, H, W)`` of the split stage.
    """
    from attnas.backbones import build_backbone, insert_cells
    from attnas.space import CellSpec
    from attnas.train.run import cell_factory
    from attnas.train.seeding import seed_everything

    seed_everything(seed)
    model = build_backbone(protocol.backbone, cache.num_classes, protocol.clip_shape())
    missing, unexpected = model.load_state_dict(cache.state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise RuntimeError(
            f"pre-trained weights do not fit: missing {missing}, unexpected {unexpected}"
        )
    for name in cache.prefix:
        model.stages[name] = _FrozenPrefix()
    names = list(model.stages)
    if protocol.readout == "frozen":
        for name in names[len(cache.prefix) :]:
            model.stages[name] = _Frozen(model.stages[name])
    elif protocol.readout == "local":
        last = max(names.index(p) for p in protocol.positions)
        for name in names[last + 1 :]:
            model.stages[name] = _FrozenPrefix()
        channels = model.insertion_points()[names[last]][0]
        model.head = LocalReadout(channels, protocol.readout_width, cache.num_classes)
    if isinstance(cell, CellSpec):
        cell = cell.to_dict()
    factory = cell if callable(cell) else cell_factory(cell, protocol.op_channel_ratio)
    if factory is not None:
        insert_cells(model, list(protocol.positions), factory)  # type: ignore[arg-type]
        if protocol.branch_init:
            for module in model.inserted.values():
                norm = getattr(module, "out_norm", None) or getattr(module, "norm", None)
                if not isinstance(norm, nn.BatchNorm3d):
                    raise TypeError(f"{type(module).__name__} has no final BatchNorm to open")
                nn.init.constant_(norm.weight, protocol.branch_init)
    return model


def count_proxy_cost(protocol: ProxyProtocol, cell: Any) -> tuple[int, int | None]:
    """Parameters and FLOPs per clip of the *whole* network with ``cell`` (not only the
    trained part), as a user would count them."""
    from attnas.backbones import build_backbone, count_flops, insert_cells
    from attnas.space import CellSpec
    from attnas.train.run import cell_factory

    model = build_backbone(protocol.backbone, 2, protocol.clip_shape())
    if isinstance(cell, CellSpec):
        cell = cell.to_dict()
    factory = cell if callable(cell) else cell_factory(cell, protocol.op_channel_ratio)
    if factory is not None:
        insert_cells(model, list(protocol.positions), factory)  # type: ignore[arg-type]
    params = sum(p.numel() for p in model.parameters())
    try:
        flops: int | None = count_flops(model, protocol.clip_shape())
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
        logger.warning("could not count FLOPs: %s", err)
        flops = None
    return params, flops


def run_proxy_trial(
    protocol: ProxyProtocol,
    cache: FeatureCache,
    cell: Any,
    seed: int,
    cost: tuple[int, int | None] | None = None,
) -> TrialResult:
    """Train and evaluate one cell (or baseline) under the protocol with one seed.

    Args:
        protocol: The protocol.
        cache: Its feature cache.
        cell: ``"none"``, ``"nonlocal"``, a ``CellSpec`` or its dict, or a module factory
            ``factory(position, shape)`` such as a ``CellSet`` (a cell per position).
        seed: The trial seed (new parameters and data order).
        cost: ``count_proxy_cost(protocol, cell)`` when the caller has it already (it does
            not depend on the seed, and counting FLOPs takes seconds).

    Returns:
        The ``TrialResult`` (``history`` holds every epoch's validation top-1).
    """
    from attnas.train.trainer import Trainer

    start = time.perf_counter()
    try:
        model = build_proxy_model(protocol, cache, cell, seed)
        params, flops = cost or count_proxy_cost(protocol, cell)
        trainer = Trainer(
            model,
            cache.data["train"],
            cache.data["val"],
            protocol.train.replace(seed=seed),
            seed=seed,
        )
        history = trainer.fit()
    except Exception as err:  # a failed trial is a result, as in run_trial
        logger.warning("proxy trial failed: %s: %s", type(err).__name__, err)
        return TrialResult(
            status="failed",
            error=f"{type(err).__name__}: {err}",
            seed=seed,
            wall_time_s=time.perf_counter() - start,
        )
    last = history[-1]
    return TrialResult(
        status="completed",
        top1=last["val_top1"],
        top5=last.get("val_top5"),
        val_loss=last["val_loss"],
        history=tuple(history),
        wall_time_s=time.perf_counter() - start,
        num_parameters=params,
        flops=flops,
        seed=seed,
        epochs_completed=len(history),
    )
