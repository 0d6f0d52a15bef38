"""Dataset registry: lookup, duplicates, unknown names, option errors."""

from __future__ import annotations

import pytest

from attnas.data import build_dataloaders, build_dataset, list_datasets, register_dataset
from attnas.data.registry import _DATASETS


def test_builtin_names() -> None:
    assert {"moving_digits", "video_folder", "video_csv", "weizmann4"} <= set(list_datasets())
    assert list_datasets("video_*") == ["video_csv", "video_folder"]


def test_duplicate_and_unknown() -> None:
    with pytest.raises(ValueError, match="'moving_digits' is already registered"):
        register_dataset("moving_digits")(lambda **kw: None)
    with pytest.raises(KeyError, match=r"unknown dataset 'nope'.*moving_digits"):
        build_dataset("nope")


def test_register_and_build_custom() -> None:
    @register_dataset("_test_tiny")
    def tiny(split: str = "train", n: int = 3) -> list[int]:
        return list(range(n))

    try:
        assert build_dataset("_test_tiny", n=2) == [0, 1]
    finally:
        _DATASETS.remove("_test_tiny")


def test_unknown_clip_option_is_named(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"unknown dataset options \['framez'\]"):
        build_dataset("video_folder", root=tmp_path, framez=8)


def test_build_dataloaders_on_moving_digits() -> None:
    train, val = build_dataloaders(
        "moving_digits", batch_size=16, num_clips=32, train_kwargs={}, val_kwargs={"num_clips": 8}
    )
    batch = next(iter(train))
    assert batch.clips.shape == (16, 3, 8, 32, 32) and batch.failed == []
    assert len(val.dataset) == 8
