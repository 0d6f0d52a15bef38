"""Attention-sensitive embedded task: do two digits shown far apart in space and time match?

Source of the digits: ``sklearn.datasets.load_digits`` (real 8×8 handwritten digits bundled in
the scikit-learn wheel, as for ``moving_digits``); nothing is downloaded.

Label rule (``distant_match``): a clip shows digit A during its first ``show_frames`` frames at
one place and digit B during its last ``show_frames`` frames at another place, at least
``min_distance`` pixels away (centre to centre, Euclidean); the label is 1 when A and B are the
same digit class and 0 otherwise (balanced). The digit classes come from ``digit_classes``;
"different" pairs draw B's class uniformly among the others. Optional distractors are
half-intensity digits of any class that stay still for the whole clip.

Why local features cannot read the label: each digit alone, wherever it is, says nothing about
the label (A's class and B's class are each uniform whatever the label, and the places are
drawn independently of it). The label is an XOR-like relation of two far-apart events: after a
global average pool of features that each see only one of the two digits, the sum of "A is
class i early" and "B is class j late" codes is not linearly separable into same/different
(for any weights w: same needs ``w_ei + w_li > b`` for every i while different needs
``w_ei + w_lj < b`` for i != j, and summing over two classes contradicts). So a 3D CNN whose
linear head reads pooled features must have units whose receptive fields cover both digits,
while an attention op can carry one digit's features to the other's place. The difficulty knobs
(``min_distance``, ``show_frames``, ``num_frames``, ``distractors``, the number of classes)
move how far the two events are apart and how much there is to ignore.

Train and validation use different RNG streams of the same seed and disjoint halves of the
digit images (even / odd indices), so validation also measures generalisation to unseen
handwriting. Frames are stored as uint8 and converted to float on access.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from attnas.data.motion import _digit_images
from attnas.data.registry import register_dataset

_MAX_PLACEMENT_TRIES = 1000


class DistantMatch(Dataset):
    """Clips of two digits far apart in space and time; label = whether their classes match.

    Args:
        num_clips: number of clips.
        num_frames: frames per clip T.
        size: canvas height = width (pixels).
        digit_classes: digit classes (0-9) the two digits are drawn from (at least 2).
        min_distance: least centre-to-centre distance of the two digits in pixels.
        show_frames: frames each digit is visible (A: the first ones, B: the last ones).
        distractors: number of half-intensity still digits present in every frame.
        digit_scale: integer upscale of the 8×8 digits.
        seed: RNG seed.
        stream: RNG stream of the seed (the builder uses 0 for train, 1 for val).
        digits: which digit images to draw from: ``"all"``, ``"even"`` or ``"odd"`` indices.

    Attributes:
        classes: ``["different", "same"]`` in label order.
        labels: ``(num_clips,)`` int64 labels (balanced to within one clip).
        frames: ``(num_clips, T, size, size)`` uint8 frames.
        places: ``(num_clips, 2, 2)`` top-left corners ``(y, x)`` of digit A and digit B.
        pair_classes: ``(num_clips, 2)`` digit classes of A and B.
    """

    def __init__(
        self,
        num_clips: int = 1024,
        num_frames: int = 8,
        size: int = 32,
        digit_classes: Sequence[int] = (0, 1, 7),
        min_distance: float = 16.0,
        show_frames: int = 2,
        distractors: int = 0,
        digit_scale: int = 1,
        seed: int = 0,
        stream: int = 0,
        digits: Literal["all", "even", "odd"] = "all",
    ) -> None:
        classes = sorted({int(c) for c in digit_classes})
        if len(classes) < 2 or not all(0 <= c <= 9 for c in classes):
            raise ValueError(
                f"DistantMatch.digit_classes must hold at least 2 digits in 0..9, got "
                f"{list(digit_classes)}"
            )
        if not 1 <= show_frames <= num_frames // 2:
            raise ValueError(
                f"DistantMatch.show_frames must be in [1, num_frames // 2 = {num_frames // 2}], "
                f"got {show_frames}"
            )
        g = 8 * digit_scale
        if g > size:
            raise ValueError(f"digits of {g} px do not fit a {size} px canvas")
        reach = float(np.hypot(size - g, size - g))
        if min_distance > reach:
            raise ValueError(
                f"DistantMatch.min_distance {min_distance} exceeds the largest distance "
                f"{reach:.1f} px two {g} px digits can have on a {size} px canvas"
            )
        self.classes = ["different", "same"]
        self.num_frames, self.size = num_frames, size
        self.train = True

        rng = np.random.default_rng([seed, stream])
        from sklearn.datasets import load_digits

        pool = _digit_images()
        targets = load_digits().target
        if digits == "even":
            pool, targets = pool[0::2], targets[0::2]
        elif digits == "odd":
            pool, targets = pool[1::2], targets[1::2]
        elif digits != "all":
            raise ValueError(f"digits must be 'all', 'even' or 'odd', got {digits!r}")
        by_class = {c: pool[targets == c] for c in range(10)}
        labels = rng.permutation(np.arange(num_clips) % 2)  # (N,)
        k = len(classes)
        cls_a = rng.integers(0, k, num_clips)
        shift = rng.integers(1, k, num_clips)  # B != A for "different"
        cls_b = np.where(labels == 1, cls_a, (cls_a + shift) % k)
        frames = np.zeros((num_clips, num_frames, size, size), dtype=np.uint8)
        span = size - g + 1
        self.places = np.zeros((num_clips, 2, 2), dtype=np.int64)  # (N, A|B, y|x)
        for i in range(num_clips):
            (ya, xa), (yb, xb) = self.places[i] = self._places(rng, span, min_distance)
            a = self._glyph(rng, by_class[classes[cls_a[i]]], digit_scale)
            b = self._glyph(rng, by_class[classes[cls_b[i]]], digit_scale)
            for _ in range(distractors):
                yd, xd = rng.integers(0, span, 2)
                d = self._glyph(rng, pool, digit_scale) // 2
                view = frames[i, :, yd : yd + g, xd : xd + g]
                np.maximum(view, d[None], out=view)
            early = frames[i, :show_frames, ya : ya + g, xa : xa + g]
            np.maximum(early, a[None], out=early)
            late = frames[i, num_frames - show_frames :, yb : yb + g, xb : xb + g]
            np.maximum(late, b[None], out=late)
        self.frames = frames
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.pair_classes = np.stack([np.array(classes)[cls_a], np.array(classes)[cls_b]], 1)

    @staticmethod
    def _places(
        rng: np.random.Generator, span: int, min_distance: float
    ) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(_MAX_PLACEMENT_TRIES):
            pa, pb = rng.integers(0, span, 2), rng.integers(0, span, 2)
            if np.hypot(*(pa - pb)) >= min_distance:
                return pa, pb
        raise RuntimeError(f"could not place two digits {min_distance} px apart")

    @staticmethod
    def _glyph(rng: np.random.Generator, images: np.ndarray, scale: int) -> np.ndarray:
        img = images[rng.integers(0, len(images))]  # (8, 8)
        return img.repeat(scale, axis=0).repeat(scale, axis=1)  # (8s, 8s)

    @property
    def num_classes(self) -> int:
        """Number of classes (2)."""
        return 2

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip ``(3, T, H, W)``."""
        return (3, self.num_frames, self.size, self.size)

    @property
    def num_views(self) -> int:
        """Views per item (always 1)."""
        return 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.frames[index]).float().div_(255.0)  # (T, H, W)
        clip = x.unsqueeze(0).expand(3, -1, -1, -1).contiguous()  # (3, T, H, W)
        return clip, int(self.labels[index])


@register_dataset("distant_match")
def distant_match(
    split: str = "train",
    *,
    num_clips: int | None = None,
    num_frames: int = 8,
    size: int = 32,
    digit_classes: Sequence[int] = (0, 1, 7),
    min_distance: float = 16.0,
    show_frames: int = 2,
    distractors: int = 0,
    digit_scale: int = 1,
    seed: int = 0,
) -> DistantMatch:
    """The attention-sensitive task: train and val from different streams and digit images.

    Args:
        split: ``"train"`` (stream 0, even-index digits) or ``"val"`` (stream 1, odd-index).
        num_clips: clips in the split (None: 1024 for train, 256 for val).
        num_frames: frames per clip.
        size: canvas height = width.
        digit_classes: digit classes the two digits are drawn from.
        min_distance: least centre-to-centre distance of the two digits (pixels).
        show_frames: frames each digit is visible.
        distractors: half-intensity still digits per clip.
        digit_scale: integer upscale of the 8×8 digits.
        seed: master seed.

    Returns:
        The dataset.
    """
    if split not in ("train", "val"):
        raise ValueError(f"distant_match split must be 'train' or 'val', got {split!r}")
    train = split == "train"
    if num_clips is None:
        num_clips = 1024 if train else 256
    ds = DistantMatch(
        num_clips,
        num_frames,
        size,
        digit_classes,
        min_distance,
        show_frames,
        distractors,
        digit_scale,
        seed,
        stream=0 if train else 1,
        digits="even" if train else "odd",
    )
    ds.train = train
    return ds


class DigitGlyphs(Dataset):
    """Clips of one still handwritten digit at a random place; label = its class (0-9).

    The pre-training task of the benchmark protocol (``attnas.benchmark``): it teaches a
    backbone's first stages what digits look like, the way ImageNet inflation does for video
    backbones, without saying anything about relations between digits.

    Args:
        num_clips: number of clips.
        num_frames: frames per clip T.
        size: canvas height = width (pixels).
        digit_scale: integer upscale of the 8×8 digits.
        seed: RNG seed.
        stream: RNG stream of the seed.
        digits: which digit images to draw from: ``"all"``, ``"even"`` or ``"odd"`` indices.
    """

    def __init__(
        self,
        num_clips: int = 2048,
        num_frames: int = 8,
        size: int = 32,
        digit_scale: int = 1,
        seed: int = 0,
        stream: int = 0,
        digits: Literal["all", "even", "odd"] = "all",
    ) -> None:
        from sklearn.datasets import load_digits

        g = 8 * digit_scale
        if g > size:
            raise ValueError(f"digits of {g} px do not fit a {size} px canvas")
        pool, targets = _digit_images(), load_digits().target
        if digits in ("even", "odd"):
            start = 0 if digits == "even" else 1
            pool, targets = pool[start::2], targets[start::2]
        elif digits != "all":
            raise ValueError(f"digits must be 'all', 'even' or 'odd', got {digits!r}")
        rng = np.random.default_rng([seed, stream, 7])
        pick = rng.integers(0, len(pool), num_clips)
        places = rng.integers(0, size - g + 1, (num_clips, 2))
        frames = np.zeros((num_clips, num_frames, size, size), dtype=np.uint8)
        for i, (y, x) in enumerate(places):
            glyph = pool[pick[i]].repeat(digit_scale, axis=0).repeat(digit_scale, axis=1)
            frames[i, :, y : y + g, x : x + g] = glyph[None]
        self.frames, self.num_frames, self.size = frames, num_frames, size
        self.labels = torch.as_tensor(targets[pick], dtype=torch.long)
        self.classes = [str(c) for c in range(10)]
        self.train = True

    num_classes = property(lambda self: 10, doc="Number of classes (10).")
    clip_shape = DistantMatch.clip_shape
    num_views = DistantMatch.num_views
    __len__ = DistantMatch.__len__
    __getitem__ = DistantMatch.__getitem__


@register_dataset("digit_glyphs")
def digit_glyphs(
    split: str = "train",
    *,
    num_clips: int | None = None,
    num_frames: int = 8,
    size: int = 32,
    digit_scale: int = 1,
    seed: int = 0,
) -> DigitGlyphs:
    """Single-digit recognition clips (the benchmark's pre-training task).

    Args:
        split: ``"train"`` (even-index digit images) or ``"val"`` (odd-index).
        num_clips: clips in the split (None: 2048 for train, 512 for val).
        num_frames: frames per clip.
        size: canvas height = width.
        digit_scale: integer upscale of the 8×8 digits.
        seed: master seed.

    Returns:
        The dataset.
    """
    if split not in ("train", "val"):
        raise ValueError(f"digit_glyphs split must be 'train' or 'val', got {split!r}")
    train = split == "train"
    if num_clips is None:
        num_clips = 2048 if train else 512
    ds = DigitGlyphs(
        num_clips,
        num_frames,
        size,
        digit_scale,
        seed,
        stream=0 if train else 1,
        digits="even" if train else "odd",
    )
    ds.train = train
    return ds
