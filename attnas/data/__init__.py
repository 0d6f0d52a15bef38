"""Video data: PyAV datasets (class folders, CSV), clip sampling and transforms, splits, a
decoded-video cache, and the embedded moving-digits task, all looked up by name.

Typical use::

    from attnas.data import build_dataset, collate_skip_failed, FailureLog
    train = build_dataset("weizmann4", split="train", num_frames=8, stride=2, size=64)
    loader = DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate_skip_failed)
    log = FailureLog(train.root)
    for batch in loader:  # ClipBatch(clips (B, 3, T, H, W), labels (B,), failed [(path, why)])
        log.update(batch)
        ...  # skip the batch when batch.labels.numel() == 0 (every item failed)
    print(log.end_epoch())  # names skipped files; raises if every video failed
"""

from __future__ import annotations

from attnas.data.builders import DEFAULT_WEIZMANN4_ROOT, build_dataloaders
from attnas.data.cache import DecodedClipCache
from attnas.data.datasets import (
    ClipBatch,
    ClipOptions,
    CsvVideoDataset,
    FailedItem,
    FailureLog,
    NoReadableVideosError,
    VideoClipDataset,
    VideoFolderDataset,
    VideoRecord,
    collate_skip_failed,
)
from attnas.data.motion import MovingDigits
from attnas.data.registry import build_dataset, list_datasets, register_dataset
from attnas.data.relations import DistantMatch
from attnas.data.splits import stratified_group_kfold, stratified_group_split
from attnas.data.transforms import EvalClipTransform, TrainClipTransform
from attnas.data.video import ClipSampler, VideoDecodeError, decode_frames, probe_video

__all__ = [
    "DEFAULT_WEIZMANN4_ROOT",
    "ClipBatch",
    "ClipOptions",
    "ClipSampler",
    "CsvVideoDataset",
    "DecodedClipCache",
    "DistantMatch",
    "EvalClipTransform",
    "FailedItem",
    "FailureLog",
    "MovingDigits",
    "NoReadableVideosError",
    "TrainClipTransform",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoFolderDataset",
    "VideoRecord",
    "build_dataloaders",
    "build_dataset",
    "collate_skip_failed",
    "decode_frames",
    "list_datasets",
    "probe_video",
    "register_dataset",
    "stratified_group_kfold",
    "stratified_group_split",
]
