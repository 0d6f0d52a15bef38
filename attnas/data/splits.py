"""Stratified, group-aware train/validation splits and k-fold cross-validation.

Design choices (the spec is silent on them):

- Groups are the unit of assignment: every item of a group lands on the same side (weizmann4's
  mirror pairs; clips cut from one recording). Each group is assigned the majority label of its
  items and the groups of each class are shuffled and split separately, which stratifies the
  split at the group level (exact class balance when groups are the same size).
- ``val_fraction`` is rounded per class, with at least one validation group and one training
  group for every class that has two or more groups, so no class disappears from either side.
- k-fold: the shuffled groups of each class are dealt round-robin to the folds, the dealing
  starting where the previous class stopped, so fold sizes differ by at most one group overall
  and per class; every group is the validation set of exactly one fold.
- Everything is a pure function of (labels, groups, seed): numpy ``default_rng(seed)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def _groups_by_class(
    labels: Sequence[int], groups: Sequence[Hashable] | None
) -> tuple[dict[int, list[Hashable]], dict[Hashable, list[int]]]:
    if groups is None:
        groups = list(range(len(labels)))
    if len(groups) != len(labels):
        raise ValueError(f"labels ({len(labels)}) and groups ({len(groups)}) differ in length")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    by_class: dict[int, list[Hashable]] = {}
    for g, idx in members.items():  # insertion order: first appearance, deterministic
        majority = Counter(int(labels[i]) for i in idx).most_common(1)[0][0]
        by_class.setdefault(majority, []).append(g)
    return dict(sorted(by_class.items())), members


def stratified_group_split(
    labels: Sequence[int],
    groups: Sequence[Hashable] | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """Split item indices into train and validation, stratified by label, keeping groups whole.

    Args:
        labels: class index of every item.
        groups: group key of every item (None: every item its own group).
        val_fraction: fraction of each class's groups that go to validation.
        seed: RNG seed; the split is a pure function of the inputs and the seed.

    Returns:
        ``(train_indices, val_indices)``, each sorted.

    Raises:
        ValueError: for a ``val_fraction`` outside (0, 1) or mismatched lengths.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_class, members = _groups_by_class(labels, groups)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for class_groups in by_class.values():
        order = rng.permutation(len(class_groups))
        n = len(class_groups)
        n_val = round(n * val_fraction)
        if n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        for rank, j in enumerate(order):
            (val if rank < n_val else train).extend(members[class_groups[j]])
    return sorted(train), sorted(val)


def stratified_group_kfold(
    labels: Sequence[int],
    groups: Sequence[Hashable] | None = None,
    num_folds: int = 5,
    seed: int = 0,
) -> list[tuple[list[int], list[int]]]:
    """Stratified group k-fold cross-validation for tiny datasets.

    Args:
        labels: class index of every item.
        groups: group key of every item (None: every item its own group).
        num_folds: number of folds k (>= 2, at most the number of groups).
        seed: RNG seed.

    Returns:
        ``k`` pairs ``(train_indices, val_indices)`` (sorted); the validation sets partition the
        items and each group appears in exactly one of them.

    Raises:
        ValueError: for ``num_folds < 2`` or more folds than groups.
    """
    by_class, members = _groups_by_class(labels, groups)
    num_groups = sum(len(g) for g in by_class.values())
    if num_folds < 2 or num_folds > num_groups:
        raise ValueError(
            f"num_folds must be in [2, {num_groups}] (number of groups), got {num_folds}"
        )
    rng = np.random.default_rng(seed)
    fold_items: list[list[int]] = [[] for _ in range(num_folds)]
    start = 0
    for class_groups in by_class.values():
        order = rng.permutation(len(class_groups))
        for rank, j in enumerate(order):
            fold_items[(start + rank) % num_folds].extend(members[class_groups[j]])
        start = (start + len(class_groups)) % num_folds
    everything = set(range(len(labels)))
    return [(sorted(everything - set(v)), sorted(v)) for v in fold_items]
