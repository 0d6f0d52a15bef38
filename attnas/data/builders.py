"""Registered builders of the real-video datasets, and ``build_dataloaders``.

Design choices (the spec is silent on them):

- Builders take flat keyword arguments (Hydra-friendly); the sampling/transform ones are those
  of ``ClipOptions`` (``num_frames``, ``stride``, ``sampling``, ``size``, ``num_clips``, ...).
- ``split="train"`` gives random clips and augmentation, ``"val"`` deterministic views.
- ``weizmann4`` groups clips by ``label/pair`` (a pair id is only unique within a class), splits
  with ``stratified_group_split`` (or fold ``fold`` of ``stratified_group_kfold`` when
  ``num_folds`` is given), and turns horizontal flips off by default: the set already holds each
  recording's mirror image, so flipping would only duplicate it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from attnas.data.datasets import (
    ClipOptions,
    CsvVideoDataset,
    VideoClipDataset,
    VideoFolderDataset,
    collate_skip_failed,
)
from attnas.data.registry import build_dataset, register_dataset
from attnas.data.splits import stratified_group_kfold, stratified_group_split

DEFAULT_WEIZMANN4_ROOT = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "weizmann4"
)


def _options(kwargs: dict[str, Any]) -> ClipOptions:
    known = set(ClipOptions.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown dataset options {unknown}; clip options are {sorted(known)}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return ClipOptions(**fixed)


def _train_flag(split: str) -> bool:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return split == "train"


@register_dataset("video_folder")
def video_folder(
    split: str = "train",
    *,
    root: str | Path,
    classes: list[str] | None = None,
    cache_dir: str | Path | None = None,
    validate: bool = True,
    **clip_options: Any,
) -> VideoFolderDataset:
    """Class-subfolder videos under ``root`` (one folder per split: pass each split's root).

    Args:
        split: ``"train"`` or ``"val"``/``"test"``.
        root: dataset folder.
        classes: fixed class order (None: sorted subfolders).
        cache_dir: decoded-video cache folder.
        validate: open headers up front.
        **clip_options: fields of ``ClipOptions``.

    Returns:
        The dataset.
    """
    return VideoFolderDataset(
        root, train=_train_flag(split), options=_options(clip_options), classes=classes,
        cache_dir=cache_dir, validate=validate,
    )  # fmt: skip


@register_dataset("video_csv")
def video_csv(
    split: str = "train",
    *,
    csv_path: str | Path,
    root: str | Path | None = None,
    classes: list[str] | None = None,
    cache_dir: str | Path | None = None,
    validate: bool = True,
    **clip_options: Any,
) -> CsvVideoDataset:
    """Videos listed in a ``path,label[,start_sec,end_sec]`` CSV (one file per split).

    Args:
        split: ``"train"`` or ``"val"``/``"test"``.
        csv_path: annotation file.
        root: base folder of relative paths (None: the CSV's folder).
        classes: fixed class order.
        cache_dir: decoded-video cache folder.
        validate: open headers up front.
        **clip_options: fields of ``ClipOptions``.

    Returns:
        The dataset.
    """
    return CsvVideoDataset(
        csv_path, train=_train_flag(split), options=_options(clip_options), classes=classes,
        root=root, cache_dir=cache_dir, validate=validate,
    )  # fmt: skip


@register_dataset("weizmann4")
def weizmann4(
    split: str = "train",
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.25,
    num_folds: int | None = None,
    fold: int = 0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    validate: bool = True,
    **clip_options: Any,
) -> VideoClipDataset:
    """The weizmann4 action set, split so that mirror pairs never straddle train and val.

    Args:
        split: ``"train"``, ``"val"`` or ``"all"`` (every clip, training mode).
        root: dataset folder holding ``clips.csv`` (None: ``<repo>/../shared/data/weizmann4``).
        val_fraction: fraction of each class's pairs in validation (ignored with ``num_folds``).
        num_folds: use k-fold cross-validation with this k instead of one split.
        fold: which fold is validation (``0 <= fold < num_folds``).
        seed: split seed.
        cache_dir: decoded-video cache folder.
        validate: open headers up front.
        **clip_options: fields of ``ClipOptions`` (``flip_p`` defaults to 0 here).

    Returns:
        The split's dataset (its ``groups`` are ``"<label>/<pair>"``).
    """
    root = DEFAULT_WEIZMANN4_ROOT if root is None else Path(root)
    csv_path = Path(root) / "clips.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"weizmann4: {csv_path} not found (set root= to the dataset folder)"
        )
    clip_options.setdefault("flip_p", 0.0)
    full = CsvVideoDataset(
        csv_path, train=split != "val", options=_options(clip_options),
        group_columns=("label", "pair"), cache_dir=cache_dir, validate=validate,
    )  # fmt: skip
    if split == "all":
        return full
    if split not in ("train", "val"):
        raise ValueError(f"weizmann4 split must be 'train', 'val' or 'all', got {split!r}")
    if num_folds is not None:
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
        train_idx, val_idx = stratified_group_kfold(full.labels, full.groups, num_folds, seed)[fold]
    else:
        train_idx, val_idx = stratified_group_split(full.labels, full.groups, val_fraction, seed)
    return full.subset(train_idx if split == "train" else val_idx)


def build_splits(
    name: str,
    common: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    val_kwargs: dict[str, Any] | None = None,
) -> tuple[Dataset, Dataset]:
    """The training and validation splits of a registered dataset, sharing one class map.

    The class-to-index map comes from the training split (or from an explicit ``classes``
    option) and is passed to the validation builder whenever it takes ``classes``, so a label
    means the same class in every split; a validation class unknown to training is then an
    error naming it.

    Args:
        name: registry name.
        common: builder arguments of both splits.
        train_kwargs: builder arguments of the training split only.
        val_kwargs: builder arguments of the validation split only.

    Returns:
        ``(train, val)``.
    """
    from attnas.data.registry import _DATASETS

    train_opts = {**(common or {}), **(train_kwargs or {})}
    val_opts = {**(common or {}), **(val_kwargs or {})}
    train = build_dataset(name, split="train", **train_opts)
    classes = getattr(train, "classes", None)
    takes_classes = "classes" in inspect.signature(_DATASETS.get(name)).parameters
    if classes is not None and takes_classes and val_opts.get("classes") is None:
        val_opts["classes"] = list(classes)
    val = build_dataset(name, split="val", **val_opts)
    return train, val


def build_dataloaders(
    name: str,
    batch_size: int,
    *,
    num_workers: int = 0,
    seed: int = 0,
    val_batch_size: int | None = None,
    train_kwargs: dict[str, Any] | None = None,
    val_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[DataLoader, DataLoader]:
    """Train and validation DataLoaders of a registered dataset, collating with failure skipping.

    Args:
        name: registry name.
        batch_size: training batch size.
        num_workers: DataLoader worker processes.
        seed: seed of the training shuffle order.
        val_batch_size: validation batch size (None: ``batch_size``).
        train_kwargs: builder arguments for the train split only (e.g. its ``root``).
        val_kwargs: builder arguments for the val split only.
        **kwargs: builder arguments for both splits.

    Returns:
        ``(train_loader, val_loader)``; their batches are ``ClipBatch``es.
    """
    train_ds, val_ds = build_splits(name, kwargs, train_kwargs, val_kwargs)
    common: dict[str, Any] = {
        "num_workers": num_workers,
        "collate_fn": collate_skip_failed,
        "persistent_workers": num_workers > 0,
    }
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=generator, **common)
    val = DataLoader(val_ds, batch_size=val_batch_size or batch_size, shuffle=False, **common)
    return train, val
