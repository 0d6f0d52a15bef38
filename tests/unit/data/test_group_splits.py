"""Stratified group split and k-fold, on synthetic labels and on weizmann4's clips.csv."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from attnas.data import (
    DEFAULT_WEIZMANN4_ROOT,
    build_dataset,
    stratified_group_kfold,
    stratified_group_split,
)

CLIPS_CSV = DEFAULT_WEIZMANN4_ROOT / "clips.csv"
needs_weizmann = pytest.mark.skipif(not CLIPS_CSV.is_file(), reason="shared data absent")


def _weizmann_rows() -> tuple[list[int], list[str]]:
    with open(CLIPS_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["label"] for r in rows})
    labels = [classes.index(r["label"]) for r in rows]
    groups = [f"{r['label']}/{r['pair']}" for r in rows]
    return labels, groups


@needs_weizmann
def test_weizmann_split_keeps_pairs_and_is_stratified() -> None:
    labels, groups = _weizmann_rows()
    assert len(labels) == 72
    for seed in range(5):
        train, val = stratified_group_split(labels, groups, val_fraction=0.25, seed=seed)
        assert sorted(train + val) == list(range(72))
        train_groups = {groups[i] for i in train}
        val_groups = {groups[i] for i in val}
        assert not train_groups & val_groups
        # 9 pairs per class: round(9 / 4) = 2 pairs (4 clips) of each class in validation
        assert Counter(labels[i] for i in val) == {0: 4, 1: 4, 2: 4, 3: 4}
        assert Counter(labels[i] for i in train) == {0: 14, 1: 14, 2: 14, 3: 14}
    assert stratified_group_split(labels, groups, seed=3) == stratified_group_split(
        labels, groups, seed=3
    )
    assert stratified_group_split(labels, groups, seed=3) != stratified_group_split(
        labels, groups, seed=4
    )


@needs_weizmann
def test_weizmann_kfold_each_group_validates_once() -> None:
    labels, groups = _weizmann_rows()
    folds = stratified_group_kfold(labels, groups, num_folds=3, seed=0)
    seen: Counter[str] = Counter()
    for train, val in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert sorted(train + val) == list(range(72))
        assert Counter(labels[i] for i in val) == {0: 6, 1: 6, 2: 6, 3: 6}  # 3 pairs per class
        seen.update({groups[i] for i in val})
    assert set(seen) == set(groups) and set(seen.values()) == {1}


@needs_weizmann
def test_weizmann4_builder_splits_by_pair() -> None:
    train = build_dataset("weizmann4", split="train", size=32, num_frames=4, validate=False)
    val = build_dataset("weizmann4", split="val", size=32, num_frames=4, validate=False)
    assert (len(train), len(val)) == (56, 16)
    assert not set(train.groups) & set(val.groups)
    assert train.classes == ["bend", "jumping_jack", "wave_one_hand", "wave_two_hands"]
    assert train.options.flip_p == 0.0 and train.train and not val.train
    folds = [
        build_dataset("weizmann4", split="val", num_folds=4, fold=f, validate=False)
        for f in range(4)
    ]
    paths = [str(r.path) for ds in folds for r in ds.records]
    assert len(paths) == 72 and len(set(paths)) == 72


def test_kfold_small_synthetic_and_errors() -> None:
    labels = [0] * 5 + [1] * 5
    folds = stratified_group_kfold(labels, None, num_folds=5, seed=1)
    for _, val in folds:
        assert sorted(labels[i] for i in val) == [0, 1]
    with pytest.raises(ValueError, match=r"num_folds must be in \[2, 10\]"):
        stratified_group_kfold(labels, None, num_folds=11)
    with pytest.raises(ValueError, match=r"labels \(10\) and groups \(3\)"):
        stratified_group_split(labels, ["g"] * 3)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_group_split(labels, None, val_fraction=1.0)
