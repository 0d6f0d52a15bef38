"""Video datasets decoded with PyAV: class-folder and CSV (Kinetics-style) layouts.

Design choices (the spec is silent on them):

- ``__getitem__`` never raises for a bad file: a video that cannot be opened or decoded yields a
  ``FailedItem(path, reason)`` instead of ``(clip, label)``. ``collate_skip_failed`` drops those
  and lists them in the batch (``ClipBatch.failed``), so failures travel from DataLoader worker
  processes to the trainer, which feeds every batch to a ``FailureLog`` (one per epoch and
  loader) and logs its report (file names and reasons) when items were skipped. A batch in
  which every item failed has zero-length ``clips``/``labels``; the trainer skips it, and raises
  ``NoReadableVideosError`` (with the report) for an epoch in which no item was read, on every
  rank. ``FailureLog.end_epoch`` does the same for a caller's own loop.
- Up-front validation (``validate=True``, the default) opens every file's header once at
  construction (about a millisecond a file): unreadable files are removed from the dataset,
  listed in ``dataset.invalid`` and warned about; if none is readable the constructor raises
  ``NoReadableVideosError``. Files that open but fail to decode are caught per item as above.
- Items: training returns one clip ``(3, T, S, S)``; validation returns the centre clip, or, with
  ``num_clips * num_crops > 1`` views, all views ``(V, 3, T, S, S)`` ordered clip-major then crop,
  and the trainer averages the softmax scores over V.
- Labels are class indices into ``dataset.classes`` (sorted folder names, or sorted CSV label
  names; CSV labels that are all integers are used as indices directly). Pass ``classes`` to fix
  the mapping across train and validation files; ``attnas.data.build_splits`` does so with the
  training split's classes, so every split shares one map. With ``classes`` given, a class
  folder or CSV label outside it is an error naming it (never a silently renumbered label).
- A training set in which a class has no readable video is an error naming the class.
- Videos shorter than a clip's span are padded (their last frame repeats, ``video.py``); the
  header probe finds them at construction and lists them in ``dataset.padded`` (``{path:
  frames}``), with a warning, so reports can count them.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from attnas.data import video
from attnas.data.cache import DecodedClipCache
from attnas.data.transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    EvalClipTransform,
    TrainClipTransform,
)
from attnas.data.video import DECODE_ERRORS, VIDEO_EXTENSIONS, ClipSampler


class NoReadableVideosError(RuntimeError):
    """Every video of a dataset failed to open or decode."""


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video (or window of a video).

    Attributes:
        path: video file.
        label: class index.
        start_sec: window start in seconds (None: from the start).
        end_sec: window end in seconds, exclusive (None: to the end).
        group: key of related items that splits keep together (None: the item alone).
    """

    path: Path
    label: int
    start_sec: float | None = None
    end_sec: float | None = None
    group: str | None = None


class FailedItem(NamedTuple):
    """What ``__getitem__`` returns for a video that could not be read."""

    path: str
    reason: str


class ClipBatch(NamedTuple):
    """A collated batch.

    Attributes:
        clips: ``(B, 3, T, H, W)``, or ``(B, V, 3, T, H, W)`` for multi-view evaluation;
            ``(0,)`` when every item of the batch failed.
        labels: ``(B,)`` int64.
        failed: ``(path, reason)`` of the items dropped from this batch.
    """

    clips: torch.Tensor
    labels: torch.Tensor
    failed: list[tuple[str, str]]


def collate_skip_failed(items: Sequence[Any]) -> ClipBatch:
    """Collate ``(clip, label)`` items, dropping ``FailedItem``s and recording their paths.

    Args:
        items: dataset items.

    Returns:
        The batch with the failed items listed in ``failed``.
    """
    ok = [it for it in items if not isinstance(it, FailedItem)]
    failed = [(it.path, it.reason) for it in items if isinstance(it, FailedItem)]
    if not ok:
        return ClipBatch(torch.empty(0), torch.empty(0, dtype=torch.long), failed)
    clips = torch.stack([torch.as_tensor(it[0]) for it in ok])  # (B, [V,] 3, T, H, W)
    labels = torch.tensor([int(it[1]) for it in ok], dtype=torch.long)  # (B,)
    return ClipBatch(clips, labels, failed)


class FailureLog:
    """Accumulates failed items over an epoch, across DataLoader workers (via the batches).

    Args:
        root: dataset root or annotation file, named in reports and errors.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        self.failed: dict[str, str] = {}
        self.num_ok = 0
        self.num_failed = 0

    def update(self, batch: ClipBatch) -> None:
        """Record one collated batch."""
        self.num_ok += int(batch.labels.numel())
        self.num_failed += len(batch.failed)
        for path, reason in batch.failed:
            self.failed[path] = reason

    def report(self) -> str:
        """Human-readable summary of the failures so far (names and reasons)."""
        if not self.failed:
            return f"{self.root}: all {self.num_ok} items read"
        lines = [
            f"{self.root}: skipped {self.num_failed} of {self.num_ok + self.num_failed} items "
            f"({len(self.failed)} unreadable files):"
        ]
        lines += [f"  {p}: {r}" for p, r in sorted(self.failed.items())]
        return "\n".join(lines)

    def end_epoch(self) -> str:
        """Return the epoch's report and reset the counters.

        Raises:
            NoReadableVideosError: if items were seen and every one of them failed.
        """
        text = self.report()
        all_failed = self.num_ok == 0 and self.num_failed > 0
        self.failed, self.num_ok, self.num_failed = {}, 0, 0
        if all_failed:
            raise NoReadableVideosError(f"every video failed to decode; {text}")
        return text


@dataclass(frozen=True)
class ClipOptions:
    """How clips are sampled and transformed (shared by every video dataset).

    Attributes:
        num_frames: frames per clip T.
        stride: frame step (``sampling="stride"``).
        sampling: ``"stride"`` or ``"segment"`` (TSN).
        size: output height = width.
        scale: area range of the training random resized crop.
        ratio: aspect range of the training random resized crop.
        short_side_range: training scale jitter range (replaces the random resized crop).
        flip_p: training horizontal-flip probability.
        eval_short_side: validation short side before the crop (None: ``size``).
        num_clips: validation temporal views.
        num_crops: validation spatial views (1 or 3).
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
    """

    num_frames: int = 8
    stride: int = 2
    sampling: Literal["stride", "segment"] = "stride"
    size: int = 64
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    short_side_range: tuple[int, int] | None = None
    flip_p: float = 0.5
    eval_short_side: int | None = None
    num_clips: int = 1
    num_crops: int = 1
    mean: tuple[float, ...] = field(default=KINETICS_MEAN)
    std: tuple[float, ...] = field(default=KINETICS_STD)

    def sampler(self) -> ClipSampler:
        """The temporal sampler."""
        return ClipSampler(self.num_frames, self.stride, self.sampling)

    def transform(self, train: bool) -> TrainClipTransform | EvalClipTransform:
        """The spatial transform for training or validation."""
        if train:
            return TrainClipTransform(
                self.size, self.scale, self.ratio, self.short_side_range, self.flip_p,
                self.mean, self.std,
            )  # fmt: skip
        return EvalClipTransform(
            self.size, self.eval_short_side, self.num_crops, self.mean, self.std
        )


class VideoClipDataset(Dataset):
    """Clips sampled from a list of annotated videos.

    Args:
        records: the videos.
        classes: class names; ``records[i].label`` indexes them.
        root: dataset root or annotation file (named in reports and errors).
        train: random clips and augmentation (True) or deterministic views (False).
        options: sampling and transform options (None: ``ClipOptions()``).
        cache_dir: folder for the decoded-video cache (None: no cache).
        validate: open every file's header now and drop the unreadable ones.

    Attributes:
        classes, num_classes, records, labels, groups, root, train, options.
        invalid: ``{path: reason}`` of files dropped by validation.
        padded: ``{path: frames}`` of videos shorter than a clip's span (found by validation).
        failures: ``{path: reason}`` of items that failed in this process (the main process
            when ``num_workers=0``; use ``ClipBatch.failed`` + ``FailureLog`` across workers).
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        classes: Sequence[str],
        *,
        root: str | Path,
        train: bool = True,
        options: ClipOptions | None = None,
        cache_dir: str | Path | None = None,
        validate: bool = True,
    ) -> None:
        self.root = str(root)
        self.classes = list(classes)
        self.train = train
        self.options = options or ClipOptions()
        self.sampler = self.options.sampler()
        self.transform = self.options.transform(train)
        self.cache = DecodedClipCache(cache_dir) if cache_dir is not None else None
        self.invalid: dict[str, str] = {}
        self.padded: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        records = list(records)
        if not records:
            raise NoReadableVideosError(f"{self.root}: no videos found")
        for r in records:
            if not 0 <= r.label < len(self.classes):
                raise ValueError(f"{r.path}: label {r.label} outside [0, {len(self.classes)})")
        if validate:
            records = self._validate(records)
            if train:
                self._check_every_class(records)
        self.records = records

    def _min_frames(self) -> int:
        """Frames a video needs for one clip without repeating its last frame."""
        if self.options.sampling == "segment":
            return self.options.num_frames
        return self.sampler.span

    def _check_every_class(self, records: list[VideoRecord]) -> None:
        seen = {r.label for r in records}
        empty = [c for i, c in enumerate(self.classes) if i not in seen]
        if empty:
            raise NoReadableVideosError(
                f"{self.root}: class(es) {empty} have no readable training video"
            )

    def _validate(self, records: list[VideoRecord]) -> list[VideoRecord]:
        kept = []
        need = self._min_frames()
        for r in records:
            try:
                info = video.probe_video(r.path)
                kept.append(r)
            except video.VideoDecodeError as err:
                self.invalid[str(r.path)] = str(err)
                continue
            frames = _window_frames(info, r)
            if 0 < frames < need:
                self.padded[str(r.path)] = frames
        if not kept:
            names = ", ".join(sorted(Path(p).name for p in self.invalid)[:10])
            raise NoReadableVideosError(
                f"{self.root}: none of the {len(records)} videos can be opened ({names})"
            )
        if self.invalid:
            warnings.warn(
                f"{self.root}: skipping {len(self.invalid)} unreadable videos: "
                + ", ".join(sorted(self.invalid)),
                stacklevel=3,
            )
        if self.padded:
            warnings.warn(
                f"{self.root}: {len(self.padded)} video(s) shorter than a clip's {need} frames "
                "are padded by repeating their last frame: "
                + ", ".join(f"{p} ({n})" for p, n in sorted(self.padded.items())),
                stacklevel=3,
            )
        return kept

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def labels(self) -> list[int]:
        """Class index of every item."""
        return [r.label for r in self.records]

    @property
    def groups(self) -> list[str | None]:
        """Group key of every item."""
        return [r.group for r in self.records]

    @property
    def num_views(self) -> int:
        """Views per item: 1 in training, ``num_clips * num_crops`` in validation."""
        return 1 if self.train else self.options.num_clips * self.options.num_crops

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip ``(3, T, H, W)`` (the backbone's ``input_shape``)."""
        o = self.options
        return (3, o.num_frames, o.size, o.size)

    def subset(self, indices: Sequence[int], train: bool | None = None) -> VideoClipDataset:
        """A dataset over ``records[indices]`` with the same classes and options.

        Args:
            indices: items to keep.
            train: training mode of the subset (None: same as this one).

        Returns:
            The new dataset (no re-validation).
        """
        cache_dir = None if self.cache is None else self.cache.cache_dir
        sub = VideoClipDataset(
            [self.records[i] for i in indices],
            self.classes,
            root=self.root,
            train=self.train if train is None else train,
            options=self.options,
            cache_dir=cache_dir,
            validate=False,
        )
        return sub

    def __len__(self) -> int:
        return len(self.records)

    def _frames(self, record: VideoRecord, select: Callable[[int], np.ndarray]) -> np.ndarray:
        if self.cache is None:
            return video.decode_frames(record.path, record.start_sec, record.end_sec, select)
        key = self.cache.key(record.path, record.start_sec, record.end_sec)
        frames = self.cache.load(key)
        if frames is None:
            frames = video.decode_frames(record.path, record.start_sec, record.end_sec)
            self.cache.store(key, frames)
        return np.asarray(frames[select(len(frames))])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | FailedItem:
        record = self.records[index]
        try:
            if self.train:
                frames = self._frames(record, self.sampler.train_indices)  # (T, H, W, 3)
                clip = self.transform(frames)  # (3, T, S, S)
            else:
                frames = self._frames(
                    record, lambda n: self.sampler.eval_indices(n, self.options.num_clips)
                )  # (clips, T, H, W, 3)
                views = [self.transform(f) for f in frames]  # each (3, T, S, S) or (crops, ...)
                if self.options.num_crops > 1:
                    clip = torch.cat(views)  # (clips * crops, 3, T, S, S)
                else:
                    clip = torch.stack(views)  # (clips, 3, T, S, S)
                if clip.shape[0] == 1:
                    clip = clip[0]  # (3, T, S, S)
        except DECODE_ERRORS as err:
            reason = f"{type(err).__name__}: {err}"
            self.failures[str(record.path)] = reason
            return FailedItem(str(record.path), reason)
        return clip, record.label


def _window_frames(info: video.VideoInfo, record: VideoRecord) -> int:
    """Frames of a record's window from its header (0 when the header does not say)."""
    n = info.num_frames or round(info.duration_sec * info.fps)
    if record.start_sec is None and record.end_sec is None:
        return int(n)
    end = record.end_sec if record.end_sec is not None else info.duration_sec
    window = round((end - (record.start_sec or 0.0)) * info.fps)
    return int(min(n, window) if n else window)


def _scan_folder(
    root: Path, classes: Sequence[str] | None, extensions: Sequence[str]
) -> tuple[list[VideoRecord], list[str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = folders
    else:
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise ValueError(
                f"video folder {root}: class folder(s) {unknown} are not among the classes "
                f"{list(classes)} (those of the training split, or the given class list)"
            )
    if not classes:
        raise FileNotFoundError(f"video folder {root} has no class subfolders")
    exts = {e.lower() for e in extensions}
    records = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in exts:
                records.append(VideoRecord(f, label))
    if not records:
        raise FileNotFoundError(f"video folder {root}: no {sorted(exts)} files in {list(classes)}")
    return records, list(classes)


class VideoFolderDataset(VideoClipDataset):
    """Videos in class subfolders: ``root/<class>/<video>.{mp4,avi,webm,mkv,...}``.

    Args:
        root: dataset folder.
        train: training (random clips, augmentation) or validation (deterministic views).
        options: sampling and transform options.
        classes: class names to use, in label order (None: sorted subfolder names).
        extensions: video file suffixes to include.
        cache_dir: decoded-video cache folder (None: none).
        validate: open every header at construction, dropping unreadable files.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool = True,
        options: ClipOptions | None = None,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = VIDEO_EXTENSIONS,
        cache_dir: str | Path | None = None,
        validate: bool = True,
    ) -> None:
        records, class_names = _scan_folder(Path(root), classes, extensions)
        super().__init__(
            records, class_names, root=root, train=train, options=options,
            cache_dir=cache_dir, validate=validate,
        )  # fmt: skip


_START_NAMES = ("start_sec", "start", "time_start")
_END_NAMES = ("end_sec", "end", "time_end")


def _read_csv_rows(
    csv_path: Path, delimiter: str, group_columns: Sequence[str]
) -> list[tuple[str, str, float | None, float | None, str | None]]:
    with open(csv_path, newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{csv_path}: empty annotation file")
    header = [c.strip().lower() for c in rows[0]]
    has_header = header[0] in ("path", "video", "filename", "file") or (
        "label" in header and "path" in header
    )
    if has_header:
        col = {name: i for i, name in enumerate(header)}
        p_i = col.get("path", col.get("video", col.get("filename", col.get("file", 0))))
        l_i = col.get("label", 1)
        s_i = next((col[n] for n in _START_NAMES if n in col), None)
        e_i = next((col[n] for n in _END_NAMES if n in col), None)
        missing = [g for g in group_columns if g not in col]
        if missing:
            raise ValueError(f"{csv_path}: group columns {missing} not in header {header}")
        g_idx = [col[g] for g in group_columns]
        body = rows[1:]
    else:
        if group_columns:
            raise ValueError(f"{csv_path}: group_columns need a header row")
        p_i, l_i, s_i, e_i, g_idx = 0, 1, 2, 3, []
        body = rows
    out = []
    for line, r in enumerate(body, start=2 if has_header else 1):
        r = [c.strip() for c in r]
        if len(r) <= max(p_i, l_i):
            raise ValueError(f"{csv_path}:{line}: expected path,label[,start_sec,end_sec], got {r}")

        def _num(i: int | None, row: list[str] = r, line: int = line) -> float | None:
            if i is None or i >= len(row) or row[i] == "":
                return None
            try:
                return float(row[i])
            except ValueError as err:
                raise ValueError(f"{csv_path}:{line}: non-numeric time {row[i]!r}") from err

        group = "/".join(r[i] for i in g_idx) if g_idx else None
        out.append((r[p_i], r[l_i], _num(s_i), _num(e_i), group))
    return out


class CsvVideoDataset(VideoClipDataset):
    """Videos listed in a CSV of ``path,label[,start_sec,end_sec]`` rows (Kinetics-style).

    The header row is optional; with one, columns are found by name (``path``, ``label``,
    ``start_sec``/``start``/``time_start``, ``end_sec``/``end``/``time_end``) and extra columns
    may serve as the group key. Relative paths resolve against ``root`` (default: the CSV's
    folder).

    Args:
        csv_path: annotation file.
        train: training (random clips, augmentation) or validation (deterministic views).
        options: sampling and transform options.
        classes: class names in label order (None: sorted label names, or ``0..max`` when every
            label is an integer).
        root: base folder for relative paths (None: the CSV's folder).
        group_columns: header columns whose values joined by ``/`` form each row's group.
        delimiter: CSV field separator.
        cache_dir: decoded-video cache folder (None: none).
        validate: open every header at construction, dropping unreadable files.
    """

    def __init__(
        self,
        csv_path: str | Path,
        *,
        train: bool = True,
        options: ClipOptions | None = None,
        classes: Sequence[str] | None = None,
        root: str | Path | None = None,
        group_columns: Sequence[str] = (),
        delimiter: str = ",",
        cache_dir: str | Path | None = None,
        validate: bool = True,
    ) -> None:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"annotation file {csv_path} does not exist")
        base = csv_path.parent if root is None else Path(root)
        rows = _read_csv_rows(csv_path, delimiter, group_columns)
        names = [r[1] for r in rows]
        if classes is None:
            if all(n.lstrip("-").isdigit() for n in names):
                classes = [str(i) for i in range(max(int(n) for n in names) + 1)]
            else:
                classes = sorted(set(names))
        index = {c: i for i, c in enumerate(classes)}
        records = []
        for path, name, start, end, group in rows:
            if name not in index:
                raise ValueError(
                    f"{csv_path}: label {name!r} of {path} is not among the classes "
                    f"{list(classes)} (those of the training split, or the given class list)"
                )
            p = Path(path)
            records.append(
                VideoRecord(p if p.is_absolute() else base / p, index[name], start, end, group)
            )
        super().__init__(
            records, classes, root=csv_path, train=train, options=options,
            cache_dir=cache_dir, validate=validate,
        )  # fmt: skip
